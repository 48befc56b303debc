"""The COCO API (pycocotools) with MMDetection's snake_case aliases and clear load errors."""
from __future__ import annotations

import contextlib
import io
import json
import re

from pycocotools.coco import COCO as _COCO

from .errors import DatasetError

__all__ = ['COCO', 'load_coco_json', 'SEGMENTATION_TEXT_MARK']

# A polygon list kept as its JSON text starts with this character (DEL): a string from the
# file can only start with it if the file holds it (raw or as \u007f), checked before use.
SEGMENTATION_TEXT_MARK = '\x7f'
_JSON_SPACE = '[ \t\n\r]*+'
_NUMBERS = r'\[[-+.0-9eE, \t\n\r]*+\]'  # one polygon: [x1, y1, x2, y2, ...]
# a "segmentation" key (the character before its quote can only be one that precedes a key:
# inside a string a quote is escaped) whose value is a list of polygons
_POLYGONS = re.compile(
    r'"segmentation"(?<=[{{, \t\n\r]"segmentation")({s}:{s})'
    r'(\[{s}(?:{n}(?:{s},{s}{n})*+)?{s}\])'.format(s=_JSON_SPACE, n=_NUMBERS))
_SPACES_TO_BLANKS = str.maketrans('\t\n\r', '   ')


def load_coco_json(path: str, polygons_as_text: bool = False) -> dict:
    """Read a COCO JSON file; a missing or malformed file is a :class:`DatasetError`.

    With ``polygons_as_text``, each annotation's ``segmentation`` that is a list of polygons
    is not parsed: it is kept as its JSON text, a string starting with
    :data:`SEGMENTATION_TEXT_MARK` (``json.loads(s[1:])`` gives the lists). The polygons'
    numbers are most of a COCO file: parsing them into Python floats is most of the time
    and the memory of reading the file, and a data set needs them only when a mask
    pipeline reads a record. Other values are parsed as usual. (The numbers' syntax is
    then checked when the text is decoded, not here.)"""
    try:
        text, num_texts = _read_text(path, polygons_as_text)
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            if not num_texts:
                raise
            # the error's line and column as in the file: parse the file as it is
            del text
            text, num_texts = _read_text(path, False)
            data = json.loads(text)
        del text
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
    if polygons_as_text and num_texts:
        _decode_stray_texts(data, num_texts)
    return data


def _read_text(path: str, polygons_as_text: bool) -> tuple[str, int]:
    """The text of ``path``; with ``polygons_as_text``, each ``"segmentation": [[...], ...]``
    value (a list of lists of numbers) written as a JSON string of that text behind
    :data:`SEGMENTATION_TEXT_MARK`. Also how many values were (0 when the file itself holds
    the mark: then nothing is changed)."""
    with open(path, encoding='utf-8') as f:
        text = f.read()
    if (not polygons_as_text or SEGMENTATION_TEXT_MARK in text or '\\u007f' in text
            or '\\u007F' in text):
        return text, 0
    indented = '\n' in text or '\t' in text or '\r' in text
    # split, not sub: no Python call per match (pieces: before, spaces and colon, value, ...)
    pieces = _POLYGONS.split(text)
    num = len(pieces) // 3
    if not num:
        return text, 0
    del text  # the pieces are copies: one copy of the file held while joining, not two
    pieces[1::3] = ['"segmentation":"' + SEGMENTATION_TEXT_MARK] * num
    values = pieces[2::3]
    if indented:  # tabs and line breaks may not stand raw in a JSON string
        values = [v.translate(_SPACES_TO_BLANKS) if '\n' in v or '\t' in v or '\r' in v
                  else v for v in values]
    pieces[2::3] = [v + '"' for v in values]
    del values
    return ''.join(pieces), num


def _decode_stray_texts(data: dict, num_texts: int) -> None:
    """Decode the polygon texts found anywhere but at an annotation's ``segmentation`` (a
    ``"segmentation"`` key in an image record, or nested in an annotation)."""
    anns = data['annotations']
    at_annotations = 0
    for ann in anns:  # (a plain loop: a million annotations)
        if type(ann) is dict:
            segm = ann.get('segmentation')
            if type(segm) is str and segm[:1] == SEGMENTATION_TEXT_MARK:
                at_annotations += 1
    if at_annotations == num_texts:
        return
    for key, value in data.items():
        if key != 'annotations':
            data[key] = decode_segmentation_texts(value)
    for k, ann in enumerate(anns):
        if type(ann) is dict:
            for key, value in ann.items():
                if key != 'segmentation':
                    ann[key] = decode_segmentation_texts(value)
        else:
            anns[k] = decode_segmentation_texts(ann)


def _is_text(value) -> bool:
    return type(value) is str and value[:1] == SEGMENTATION_TEXT_MARK


def decode_segmentation_texts(value):
    """``value`` with every polygon text (see :func:`load_coco_json`) in it parsed."""
    if _is_text(value):
        return json.loads(value[1:])
    if type(value) is dict:
        return {k: decode_segmentation_texts(v) for k, v in value.items()}
    if type(value) is list:
        return [decode_segmentation_texts(v) for v in value]
    return value


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
