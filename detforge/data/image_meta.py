"""The per-image record that travels with an image from the pipeline to the heads.

``Collect`` makes one :class:`ImageMeta` per image; collate fills in the batch's padded
shape; heads read it. Its fields are the ones MMDetection 2.x keeps in ``img_metas``, typed
and documented, and it still reads and writes by key (``meta['img_shape']``,
``meta.get('flip')``), so MMDetection 2.x code that treats ``img_metas`` as dicts keeps
working. Keys that are not fields (a custom ``Collect(meta_keys=...)``) are kept too.

Transforms that change the image's geometry set it through :func:`set_image`, one place,
so that ``img_shape`` and ``pad_shape`` cannot disagree with the pixels.
"""
from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field, fields
from typing import Any, Iterator

import numpy as np

__all__ = ['ImageMeta', 'set_image']

class _Unset:
    """A field never set (``None`` can be a value). One instance, kept by pickle and copy."""

    def __repr__(self) -> str:
        return '<unset>'

    def __reduce__(self):
        return '_UNSET'


_UNSET: Any = _Unset()


@dataclass(eq=False)
class ImageMeta(MutableMapping):
    """Metadata of one image of a batch.

    Attributes (all optional; a field that was never set reads as absent, ``KeyError`` by
    key, as the dicts it replaces):
        filename, ori_filename: the image file, its path relative to the image prefix.
        ori_shape: ``(h, w, c)`` of the decoded image.
        img_shape: ``(h, w, c)`` after resizing / cropping (the valid pixels).
        pad_shape: ``(h, w, c)`` after padding; collate sets the batch's padded shape.
        scale_factor: float32 ``[w, h, w, h]``: input px per original px.
        flip, flip_direction: whether and how the image was flipped.
        batch_input_shape: ``(H, W)`` of the padded batch tensor (set by collate).
        img_norm_cfg: ``dict(mean, std, to_rgb)`` when the pipeline normalised.
        pad_size_divisor: the divisor ``Pad`` used (collate pads the batch to it).
        extra: other keys, by name.
    """

    filename: Any = _UNSET
    ori_filename: Any = _UNSET
    ori_shape: Any = _UNSET
    img_shape: Any = _UNSET
    pad_shape: Any = _UNSET
    scale_factor: Any = _UNSET
    flip: Any = _UNSET
    flip_direction: Any = _UNSET
    batch_input_shape: Any = _UNSET
    img_norm_cfg: Any = _UNSET
    pad_size_divisor: Any = _UNSET
    extra: dict = field(default_factory=dict)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if f.name != 'extra')

    @classmethod
    def from_dict(cls, values: dict) -> 'ImageMeta':
        """A record from a dict of meta keys (unknown keys go to ``extra``)."""
        meta = cls()
        for key, value in values.items():
            meta[key] = value
        return meta

    # ---------------------------------------------------------------- mapping protocol
    def __getitem__(self, key: str):
        if key in self.field_names():
            value = getattr(self, key)
            if value is _UNSET:
                raise KeyError(key)
            return value
        return self.extra[key]

    def __setitem__(self, key: str, value) -> None:
        if key in self.field_names():
            setattr(self, key, value)
        else:
            self.extra[key] = value

    def __delitem__(self, key: str) -> None:
        if key in self.field_names():
            if getattr(self, key) is _UNSET:
                raise KeyError(key)
            setattr(self, key, _UNSET)
        else:
            del self.extra[key]

    def __iter__(self) -> Iterator[str]:
        for name in self.field_names():
            if getattr(self, name) is not _UNSET:
                yield name
        yield from self.extra

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __eq__(self, other) -> bool:
        if not isinstance(other, MutableMapping) and not isinstance(other, dict):
            return NotImplemented
        return _same(dict(self.items()), dict(other.items()))

    def __repr__(self) -> str:
        return f'ImageMeta({", ".join(f"{k}={v!r}" for k, v in self.items())})'

    def to_dict(self) -> dict:
        """A plain dict of the keys that are set."""
        return dict(self.items())


def _same(a, b) -> bool:
    """Equality that also compares numpy arrays (scale_factor) and dicts of them."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b))
    return bool(a == b)


def set_image(results: dict, img: np.ndarray) -> None:
    """Put a geometrically changed image into a pipeline's results: ``img``, and its
    ``img_shape`` and ``pad_shape`` (the new shape, until a ``Pad`` records a larger one).
    Every transform that resizes or crops goes through here, so that no stale shape (e.g.
    the ``pad_shape`` of the image before a crop) reaches collate."""
    results['img'] = img
    results['img_shape'] = img.shape
    results['pad_shape'] = img.shape
