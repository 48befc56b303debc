"""Errors and the bookkeeping of skipped annotations.

Bad input on the data side is either a :class:`DatasetError` naming the file (and the
annotation id), or, where the dataset is configured to skip it (``skip_invalid=True``), a
skip that is counted and reported once, in one summary line per kind::

    VOCDataset(data/bccd/ImageSets/Main/trainval.txt): 2 degenerate boxes dropped in 2 images
    (x2 <= x1 or y2 <= y1, or a side < 1 px: BloodImage_00338.xml object 12, BloodImage_00343.xml object 3)
"""
from __future__ import annotations

import logging
from collections import defaultdict

from detforge.registry import DetforgeError

__all__ = ['DatasetError', 'ImageLoadError', 'AnnotationError', 'SkipCounter']

logger = logging.getLogger('detforge.data')


class DatasetError(DetforgeError):
    """A data set (its annotation file, an image) is not what detforge expected."""


class ImageLoadError(DatasetError):
    """An image file is missing, empty or cannot be decoded."""


class AnnotationError(DatasetError):
    """An annotation is invalid: a degenerate box, an unknown class, a box outside the image."""


# what each kind of skip is called in the summary line: (what, done, why)
_KINDS = {
    'degenerate': ('degenerate boxes', 'dropped', 'x2 <= x1 or y2 <= y1, or a side < 1 px'),
    'outside': ('boxes outside their image', 'dropped', 'no overlap with the image'),
    'unknown_class': ('boxes of unknown classes', 'skipped', 'class not in CLASSES'),
    'small': ('small boxes', 'marked as ignore', 'a side < min_size'),
    'no_area_shape': ('shapes without an area', 'skipped', 'points and lines are no boxes'),
    'string_coords': ('boxes given as strings', 'converted to numbers',
                      'JSON strings instead of numbers in "bbox"'),
}


class SkipCounter:
    """Counts skipped annotations per kind and image, and reports them in one line each."""

    def __init__(self, name: str = 'dataset'):
        self.name = name
        self.items: dict[str, list[tuple[str, str]]] = defaultdict(list)

    def add(self, kind: str, file: str, where: str = '') -> None:
        self.items[kind].append((file, where))

    def count(self, kind: str) -> int:
        return len(self.items.get(kind, ()))

    def summary_lines(self) -> list[str]:
        lines = []
        for kind, items in self.items.items():
            files = sorted({f for f, _ in items})
            examples = ', '.join(f'{f} {w}'.strip() for f, w in items[:3])
            more = ', ...' if len(items) > 3 else ''
            what, done, why = _KINDS.get(kind, (kind, 'skipped', ''))
            lines.append(f'{self.name}: {len(items)} {what} {done} in {len(files)} '
                         f'image{"s" if len(files) != 1 else ""} ({why}: {examples}{more})')
        return lines

    def report(self) -> None:
        """Log one warning per kind on the ``detforge.data`` logger."""
        for line in self.summary_lines():
            logger.warning(line)
