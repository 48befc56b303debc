"""Plain-text tables for evaluation logs (what ``terminaltables.AsciiTable`` printed in MMDet).

Example::

    >>> print(format_table([['RBC', '0.712'], ['WBC', '0.950']], headers=['class', 'AP']))
    +-------+-------+
    | class | AP    |
    +-------+-------+
    | RBC   | 0.712 |
    | WBC   | 0.950 |
    +-------+-------+
"""
from __future__ import annotations

from typing import Any, Sequence

__all__ = ['format_table']


def format_table(rows: Sequence[Sequence[Any]], headers: Sequence[Any] | None = None) -> str:
    """Format rows of cells (anything ``str()`` can print; ``None`` prints empty) as a table."""
    cells = [['' if c is None else str(c) for c in row] for row in rows]
    head = None if headers is None else [str(h) for h in headers]
    num_cols = max([len(r) for r in cells] + ([len(head)] if head else []) + [0])
    for row in cells:
        row.extend([''] * (num_cols - len(row)))
    widths = [max([len(r[i]) for r in cells] + ([len(head[i])] if head and i < len(head) else [0]))
              for i in range(num_cols)]
    rule = '+' + '+'.join('-' * (w + 2) for w in widths) + '+'

    def line(row):
        return '| ' + ' | '.join(c.ljust(w) for c, w in zip(row, widths)) + ' |'

    out = [rule]
    if head:
        out += [line(head + [''] * (num_cols - len(head))), rule]
    out += [line(r) for r in cells]
    out.append(rule)
    return '\n'.join(out)
