"""``YOLODataset``: YOLO txt labels (Ultralytics / darknet layout).

Layout (one split)::

    images/train/NAME.jpg   labels/train/NAME.txt   data.yaml (names: [a, b, ...])

Each label line is ``CLASS cx cy w h`` with the centre and size normalised to ``[0, 1]`` by
the image width and height; a line with more numbers is a segment ``CLASS x1 y1 x2 y2 ...``
(normalised polygon) whose bounding box is taken. An image without a label file (or with an
empty one) has no objects. Image sizes come from the image headers (EXIF rotation applied, as
the loader applies it). Boxes become 0-based pixel xyxy ``[(cx - w/2) W, (cy - h/2) H,
(cx + w/2) W, (cy + h/2) H]``.
"""
from __future__ import annotations

import os.path as osp

import numpy as np

from detforge.registry import DATASETS
from .box_files import BoxFileDataset, read_image_size
from .custom import sanitize_boxes
from .errors import AnnotationError, DatasetError

__all__ = ['YOLODataset', 'parse_yolo_label']


def parse_yolo_label(path: str, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Read one label file: ``(boxes (n, 4) float32 0-based pixel xyxy, classes (n,) int64)``.

    A missing file is an image without objects. A line that is not ``CLASS`` followed by 4
    (box) or an even number >= 6 (segment) of numbers, or with a coordinate outside 0..1
    (beyond a 0.01 overshoot: pixels instead of normalised values), is an
    :class:`AnnotationError` naming the file and line.
    """
    if not osp.isfile(path):
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    boxes, classes = [], []
    with open(path, encoding='utf-8') as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            try:
                cls = float(fields[0])
                values = [float(v) for v in fields[1:]]
                if cls != int(cls) or (len(values) != 4 and (len(values) < 6 or len(values) % 2)):
                    raise ValueError
            except ValueError:
                raise AnnotationError(
                    f'{path}, line {number}: expected "CLASS cx cy w h" (class number, then the '
                    f'box centre and size normalised to 0..1) or "CLASS x1 y1 x2 y2 ..." '
                    f'(a polygon), got {line.strip()!r}') from None
            if any(v < -0.01 or v > 1.01 for v in values):  # a little overshoot is common
                raise AnnotationError(
                    f'{path}, line {number}: YOLO coordinates are normalised to 0..1 by the '
                    f'image width and height, got {line.strip()!r} (pixel coordinates?)')
            if len(values) == 4:
                cx, cy, w, h = values
                box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
            else:
                xs, ys = values[0::2], values[1::2]
                box = [min(xs), min(ys), max(xs), max(ys)]
            boxes.append(box)
            classes.append(int(cls))
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4) * [width, height, width, height]
    return boxes.astype(np.float32), np.asarray(classes, np.int64)


@DATASETS.register_module()
class YOLODataset(BoxFileDataset):
    """A YOLO split: the images in ``img_prefix`` and their labels in ``ann_file``.

    Args:
        ann_file: folder of the ``.txt`` label files; ``None``: Ultralytics' rule, the
            image folder with its last ``images`` component replaced by ``labels``.
        img_prefix: folder of the images (every image in it is part of the split).
        classes: class names in class-number order, or the path of a ``data.yaml`` whose
            ``names`` to read. A label number with no name is skipped (counted, or an
            error with ``skip_invalid=False``).
        (others: see :class:`~detforge.data.CustomDataset`)
    """

    @classmethod
    def get_classes(cls, classes=None):
        if isinstance(classes, str) and classes.endswith(('.yaml', '.yml')):
            import yaml

            from .formats import read_yolo_names
            if not osp.isfile(classes):
                raise DatasetError(f'classes={classes!r}: no such file')
            with open(classes, encoding='utf-8') as f:
                meta = yaml.safe_load(f)
            if not isinstance(meta, dict) or 'names' not in meta:
                raise DatasetError(f'classes={classes!r}: the file has no "names" list')
            return read_yolo_names(meta['names'], f'{classes}: names')
        return super().get_classes(classes)

    def load_annotations(self, ann_file):
        from .formats import _labels_dir, list_images
        self._require_classes()
        img_dir = self.img_prefix
        if not img_dir or not osp.isdir(img_dir):
            raise DatasetError(f'YOLODataset: img_prefix={img_dir!r} is not a folder of images')
        label_dir = ann_file or _labels_dir(img_dir)
        if not osp.isdir(label_dir):
            raise DatasetError(f'YOLODataset: label folder not found: {label_dir} (ann_file= '
                               f'should be the folder of the .txt label files)')
        index = {name: i for i, name in enumerate(self.ann_classes)}
        # label number n is the n-th name of classes= (data.yaml's names, in their order)
        names = tuple(self.ann_classes)
        infos = []
        for name in list_images(img_dir):
            stem = osp.splitext(name)[0]
            width, height = read_image_size(osp.join(img_dir, name))
            label_path = osp.join(label_dir, f'{stem}.txt')
            boxes, numbers = parse_yolo_label(label_path, width, height)
            keep, labels, ids = [], [], []
            for k, n in enumerate(numbers.tolist()):
                if not 0 <= n < len(names) or names[n] not in index:
                    if not self.skip_invalid:
                        raise AnnotationError(f'{label_path}: line {k + 1} has class number {n}, '
                                              f'which is not in 0..{len(names) - 1} '
                                              f'(classes {names})')
                    self.skipped.add('unknown_class', osp.basename(label_path), f'line {k + 1}')
                    continue
                keep.append(k)
                labels.append(index[names[n]])
                ids.append(f'line {k + 1}')
            ann = sanitize_boxes(boxes[keep], labels, np.zeros(len(keep), bool), width, height,
                                 file=label_path, ann_ids=ids, counter=self.skipped,
                                 skip_invalid=self.skip_invalid, min_size=self.min_size)
            infos.append(dict(id=stem, filename=name, width=width, height=height, ann=ann))
        if not infos:
            raise DatasetError(f'YOLODataset: no images in {img_dir}')
        return infos
