"""Small helpers shared across detforge (MMCV's names, where users know them)."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterable

__all__ = ['mkdir_or_exist', 'is_seq_of', 'is_list_of', 'is_tuple_of', 'timestamp',
           'to_2tuple']


def mkdir_or_exist(path: str | os.PathLike, mode: int = 0o777) -> Path:
    """Create ``path`` (and its parents) unless it exists; return it as a Path."""
    path = Path(path).expanduser()
    path.mkdir(mode=mode, parents=True, exist_ok=True)
    return path


def is_seq_of(seq: Any, expected_type: type | tuple[type, ...],
              seq_type: type | tuple[type, ...] = (list, tuple)) -> bool:
    """Whether ``seq`` is a ``seq_type`` whose items are all ``expected_type``."""
    return isinstance(seq, seq_type) and all(isinstance(item, expected_type) for item in seq)


def is_list_of(seq: Any, expected_type: type | tuple[type, ...]) -> bool:
    return is_seq_of(seq, expected_type, list)


def is_tuple_of(seq: Any, expected_type: type | tuple[type, ...]) -> bool:
    return is_seq_of(seq, expected_type, tuple)


def timestamp() -> str:
    """Local time as ``YYYYmmdd_HHMMSS``, the name of a run's log files."""
    return time.strftime('%Y%m%d_%H%M%S', time.localtime())


def to_2tuple(value: Any) -> tuple:
    """``3`` -> ``(3, 3)``; a pair (list or tuple of two) -> a tuple."""
    if isinstance(value, Iterable) and not isinstance(value, str):
        value = tuple(value)
        if len(value) != 2:
            raise ValueError(f'expected a number or a pair, got {value!r}')
        return value
    return (value, value)
