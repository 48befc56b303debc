"""The COCO API (pycocotools) with MMDetection's snake_case aliases and clear load errors."""
from __future__ import annotations

import contextlib
import io
import json

from pycocotools.coco import COCO as _COCO

from .errors import DatasetError

__all__ = ['COCO', 'load_coco_json']


def load_coco_json(path: str, object_hook=None) -> dict:
    """Read a COCO JSON file; a missing or malformed file is a :class:`DatasetError`.

    ``object_hook`` (as :func:`json.load`'s) sees each JSON object as it is parsed, inner
    objects first, and returns what to keep in its place."""
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f, object_hook=object_hook)
    except FileNotFoundError:
        raise DatasetError(f'annotation file not found: {path}') from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f'{path} is not a valid JSON file: {e}') from None
    if not isinstance(data, dict) or not isinstance(data.get('images'), list):
        raise DatasetError(f'{path} is not a COCO annotation file: expected an object with '
                           f'"images", "annotations" and "categories" lists')
    for key in ('annotations', 'categories'):
        if not isinstance(data.setdefault(key, []), list):
            raise DatasetError(f'{path}: "{key}" must be a list')
    return data


class COCO(_COCO):
    """``pycocotools.coco.COCO`` built from a file or a dict, quietly, with snake_case names
    (``get_ann_ids``, ``get_cat_ids``, ``get_img_ids``, ``load_anns``, ``load_cats``,
    ``load_imgs``) as MMDetection 2.x's wrapper."""

    def __init__(self, annotation_file: str | dict | None = None):
        super().__init__()
        if annotation_file is None:
            return
        data = load_coco_json(annotation_file) if isinstance(annotation_file, str) else annotation_file
        self.dataset = data
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                self.createIndex()
        except (KeyError, TypeError) as e:
            where = annotation_file if isinstance(annotation_file, str) else 'COCO dict'
            raise DatasetError(f'{where}: malformed COCO record (missing key {e})') from None
        self.img_ann_map = self.imgToAnns
        self.cat_img_map = self.catToImgs

    def get_ann_ids(self, img_ids=(), cat_ids=(), area_rng=(), iscrowd=None):
        return self.getAnnIds(list(img_ids) if not isinstance(img_ids, int) else img_ids,
                              cat_ids, area_rng, iscrowd)

    def get_cat_ids(self, cat_names=(), sup_names=(), cat_ids=()):
        return self.getCatIds(list(cat_names), list(sup_names), list(cat_ids))

    def get_img_ids(self, img_ids=(), cat_ids=()):
        return self.getImgIds(list(img_ids), list(cat_ids))

    def load_anns(self, ids):
        return self.loadAnns(ids)

    def load_cats(self, ids):
        return self.loadCats(ids)

    def load_imgs(self, ids):
        return self.loadImgs(ids)

    def loadRes(self, resFile):  # noqa: N802 - pycocotools' name
        with contextlib.redirect_stdout(io.StringIO()):
            return super().loadRes(resFile)
