"""Common ground of the data sets read from one label file per image (YOLO txt, LabelMe
JSON): image sizes read from the image headers, classes, and evaluation by either metric."""
from __future__ import annotations

import os.path as osp

from .custom import CustomDataset
from .errors import DatasetError

__all__ = ['BoxFileDataset', 'read_image_size']


def read_image_size(path: str) -> tuple[int, int]:
    """``(width, height)`` of an image as the loader will see it (EXIF rotation applied).

    Only the header is read (Pillow opens lazily); a file Pillow cannot open is decoded with
    :func:`~detforge.data.pipelines.loading.decode_tolerant` as the loader would. A file no
    decoder reads is a :class:`DatasetError` naming it.
    """
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            width, height = im.size
            try:
                orientation = im.getexif().get(0x0112, 1)
            except Exception:  # noqa: BLE001 - a broken EXIF block: the loader ignores it too
                orientation = 1
        # orientations 5..8 turn the image by 90 degrees (LoadImageFromFile applies them)
        return (height, width) if orientation in (5, 6, 7, 8) else (width, height)
    except FileNotFoundError:
        raise DatasetError(f'image file not found: {path}') from None
    except (UnidentifiedImageError, OSError):
        pass  # Pillow cannot read the header: decode the whole file below, as the loader does
    from .pipelines.loading import decode_tolerant
    with open(path, 'rb') as f:
        img, _ = decode_tolerant(f.read())
    if img is None:
        raise DatasetError(f'cannot read image {path}: no decoder reads it (run `detforge '
                           f'check-data` on the data set to list every such file)')
    return img.shape[1], img.shape[0]


class BoxFileDataset(CustomDataset):
    """A :class:`CustomDataset` whose ``evaluate`` computes COCO box AP (``metric='bbox'``,
    the default) or VOC mAP (``metric='mAP'``), so these folders slot into COCO-style and
    VOC-style configs alike."""

    def _image_path(self, filename: str) -> str:
        return osp.join(self.img_prefix, filename) if self.img_prefix else filename

    def _require_classes(self):
        if not self.CLASSES:
            raise DatasetError(f'{type(self).__name__}({self.ann_file}): no classes given; '
                               f'pass classes=(...)')

    def _set_classes(self, names) -> None:
        """Classes inferred from the files (when ``classes=`` was not given)."""
        self.CLASSES = self.ann_classes = tuple(names)

    def evaluate(self, results, metric='bbox', logger=None, **kwargs):
        metrics = [metric] if isinstance(metric, str) else list(metric)
        if all(m in ('mAP', 'recall') for m in metrics):
            from detforge.evaluation.voc_metric import evaluate_voc
            return evaluate_voc(self, results, metric=metric, logger=logger, **kwargs)
        from detforge.evaluation.coco_metric import evaluate_coco
        return evaluate_coco(self, results, metric=metric, logger=logger, **kwargs)
