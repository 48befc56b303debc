"""``LabelMeDataset``: LabelMe JSON files, one per image.

Each file holds ``imagePath`` (relative to the JSON file), ``imageWidth``/``imageHeight`` and
``shapes``, each a ``label`` with ``points`` in pixels and a ``shape_type``:

- ``rectangle``: two opposite corners (any order) -> the box;
- ``polygon`` (also when ``shape_type`` is missing, LabelMe's default): the bounding box of
  its points;
- ``circle``: centre and a point on the circle -> the bounding box of the circle;
- ``point``, ``line``, ``linestrip``, ``points``, ``mask``: no box; skipped and counted.

Points are taken as continuous pixel coordinates (0-based), as COCO's. A shape with
``"difficult": true`` becomes an ignore box. Each gt box also carries its shape's outline as
a COCO polygon in ``ann['masks']``, so ``LoadAnnotations(with_mask=True)`` gives instance
masks (rectangles and circles as polygons). Without ``classes=``, the classes are the sorted
labels of all files.
"""
from __future__ import annotations

import json
import os
import os.path as osp

import numpy as np

from detforge.registry import DATASETS
from .box_files import BoxFileDataset, read_image_size
from .custom import sanitize_boxes
from .errors import AnnotationError, DatasetError

__all__ = ['LabelMeDataset', 'read_labelme_json', 'read_labelme_names', 'labelme_json_files',
           'shape_box', 'shape_polygon']


def labelme_json_files(folder: str) -> list[str]:
    """The ``.json`` files of ``folder`` (sorted names)."""
    if not osp.isdir(folder):
        raise DatasetError(f'LabelMe folder not found: {folder}')
    return sorted(f for f in os.listdir(folder) if f.endswith('.json'))


def read_labelme_json(path: str) -> dict:
    """One LabelMe file as a dict; a broken file or one without ``shapes`` is a
    :class:`DatasetError` naming it."""
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f'{path} is not a valid JSON file: {e}') from None
    if not isinstance(data, dict) or not isinstance(data.get('shapes'), list):
        raise DatasetError(f'{path} is not a LabelMe file: expected an object with a '
                           f'"shapes" list')
    return data


def read_labelme_names(folder: str) -> set[str]:
    """Every shape label used in the LabelMe files of ``folder``."""
    names = set()
    for f in labelme_json_files(folder):
        data = read_labelme_json(osp.join(folder, f))
        names.update(str(s.get('label', '')).strip() for s in data['shapes'])
    names.discard('')
    return names


def shape_polygon(shape: dict) -> list[list[float]]:
    """The outline of an area shape as a COCO polygon ``[[x1, y1, x2, y2, ...]]`` (a
    rectangle's 4 corners, a circle as a 32-gon, a polygon as drawn), for instance masks."""
    kind = shape.get('shape_type') or 'polygon'
    pts = np.asarray(shape['points'], dtype=np.float64).reshape(-1, 2)
    if kind == 'rectangle':
        (x1, y1), (x2, y2) = pts.min(0), pts.max(0)
        pts = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]])
    elif kind == 'circle':
        r = float(np.hypot(*(pts[1] - pts[0])))
        t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        pts = np.stack([pts[0, 0] + r * np.cos(t), pts[0, 1] + r * np.sin(t)], 1)
    return [pts.reshape(-1).round(3).tolist()]


def shape_box(shape: dict, where: str) -> list[float] | None:
    """The xyxy box of one LabelMe shape, ``None`` for shapes without an area (points,
    lines)."""
    kind = shape.get('shape_type') or 'polygon'
    try:
        pts = np.asarray(shape.get('points'), dtype=np.float64).reshape(-1, 2)
    except (TypeError, ValueError):
        raise AnnotationError(f'{where}: "points" must be a list of [x, y] numbers, got '
                              f'{shape.get("points")!r}') from None
    if kind == 'rectangle' and len(pts) == 2 or kind == 'polygon' and len(pts) >= 3:
        return [pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()]
    if kind == 'circle' and len(pts) == 2:
        r = float(np.hypot(*(pts[1] - pts[0])))
        return [pts[0, 0] - r, pts[0, 1] - r, pts[0, 0] + r, pts[0, 1] + r]
    if kind in ('rectangle', 'polygon', 'circle'):
        raise AnnotationError(f'{where}: a {kind} with {len(pts)} points')
    return None


@DATASETS.register_module()
class LabelMeDataset(BoxFileDataset):
    """LabelMe JSON files of one split.

    Args:
        ann_file: the folder of the ``.json`` files.
        img_prefix: the folder ``filename``s are relative to (default: ``ann_file``); images
            are found from each file's ``imagePath`` (relative to the JSON file), or as the
            image with the JSON file's name beside it when ``imagePath`` does not exist.
        classes: class names (label order); default the sorted labels found.
        (others: see :class:`~detforge.data.CustomDataset`)
    """

    def load_annotations(self, ann_file):
        from .formats import IMAGE_EXTENSIONS
        if not ann_file:
            raise DatasetError('LabelMeDataset: ann_file must be the folder of the .json files')
        if not self.CLASSES:
            self._set_classes(sorted(read_labelme_names(ann_file)))
        if not self.img_prefix:
            self.img_prefix = ann_file
        index = {name: i for i, name in enumerate(self.ann_classes)}
        infos = []
        for json_name in labelme_json_files(ann_file):
            path = osp.join(ann_file, json_name)
            data = read_labelme_json(path)
            img_path = self._find_image(path, data, IMAGE_EXTENSIONS)
            width, height = data.get('imageWidth'), data.get('imageHeight')
            if not (isinstance(width, int) and isinstance(height, int) and width > 0
                    and height > 0):
                width, height = read_image_size(img_path)
            boxes, labels, ignore, ids, polygons = [], [], [], [], []
            for k, shape in enumerate(data['shapes']):
                where = f'{path}: shape {k}'
                name = str(shape.get('label', '')).strip()
                box = shape_box(shape, where)
                if box is None:
                    self.skipped.add('no_area_shape', json_name,
                                     f'shape {k} ({shape.get("shape_type")})')
                    continue
                if name not in index:
                    if not self.skip_invalid:
                        raise AnnotationError(f'{where} has label {name!r}, which is not in '
                                              f'classes {tuple(self.ann_classes)}')
                    self.skipped.add('unknown_class', json_name, f'shape {k} ({name!r})')
                    continue
                boxes.append(box)
                labels.append(index[name])
                ignore.append(bool(shape.get('difficult', False)))
                ids.append(f'shape {k}')
                polygons.append(shape_polygon(shape))
            ann = sanitize_boxes(boxes, labels, ignore, width, height, file=path, ann_ids=ids,
                                 counter=self.skipped, skip_invalid=self.skip_invalid,
                                 min_size=self.min_size, return_inds=True)
            ann['masks'] = [polygons[i] for i in ann.pop('inds')]  # one per gt box
            ann.pop('inds_ignore')
            infos.append(dict(id=osp.splitext(json_name)[0],
                              filename=osp.relpath(img_path, self.img_prefix),
                              width=width, height=height, ann=ann))
        if not infos:
            raise DatasetError(f'LabelMeDataset: no .json files in {ann_file}')
        return infos

    @staticmethod
    def _find_image(json_path: str, data: dict, extensions) -> str:
        folder = osp.dirname(json_path)
        image_path = str(data.get('imagePath') or '').replace('\\', '/')
        if image_path:
            candidate = osp.normpath(osp.join(folder, image_path))
            if osp.isfile(candidate):
                return candidate
        stem = osp.splitext(json_path)[0]
        for ext in extensions:
            for e in (ext, ext.upper()):
                if osp.isfile(stem + e):
                    return stem + e
        raise DatasetError(f'{json_path}: its image {image_path!r} is not found (looked '
                           f'beside the JSON file too)')
