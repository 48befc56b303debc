"""``CocoDataset``: COCO JSON annotations (MMDetection 2.x semantics).

Boxes are read as ``[x, y, w, h]`` and turned into xyxy ``[x, y, x + w, y + h]``; crowd
annotations (``iscrowd=1``) become ignore boxes; annotations marked ``ignore`` are left out
(as MMDetection); boxes with ``w < 1``, ``h < 1`` or ``area <= 0`` (degenerate) and boxes
that do not overlap their image are dropped and counted (or raise with
``skip_invalid=False``). ``classes=`` selects categories by name, in the given order (a dict
``{category name: new name}`` also renames them); annotations of other categories are left
out. ``masks`` holds the ``segmentation`` of each kept gt box (polygons or RLE, as in the
file), for ``LoadAnnotations(with_mask=True)``.
"""
from __future__ import annotations

import contextlib
import gc
import json
import operator
from typing import Any

import numpy as np

from detforge.registry import DATASETS
from .coco_api import COCO, SEGMENTATION_TEXT_MARK, load_coco_json
from .custom import CustomDataset, sanitize_boxes
from .errors import AnnotationError, DatasetError
from .record_store import (JsonText, RecordStore, RecordStoreBuilder, parse_json_text,
                           release_free_memory)

__all__ = ['CocoDataset']


@DATASETS.register_module()
class CocoDataset(CustomDataset):
    """COCO-format detection data set; see :class:`CustomDataset` for the arguments."""

    CLASSES = ('person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck',
               'boat', 'traffic light', 'fire hydrant', 'stop sign', 'parking meter', 'bench',
               'bird', 'cat', 'dog', 'horse', 'sheep', 'cow', 'elephant', 'bear', 'zebra',
               'giraffe', 'backpack', 'umbrella', 'handbag', 'tie', 'suitcase', 'frisbee', 'skis',
               'snowboard', 'sports ball', 'kite', 'baseball bat', 'baseball glove', 'skateboard',
               'surfboard', 'tennis racket', 'bottle', 'wine glass', 'cup', 'fork', 'knife',
               'spoon', 'bowl', 'banana', 'apple', 'sandwich', 'orange', 'broccoli', 'carrot',
               'hot dog', 'pizza', 'donut', 'cake', 'chair', 'couch', 'potted plant', 'bed',
               'dining table', 'toilet', 'tv', 'laptop', 'mouse', 'remote', 'keyboard',
               'cell phone', 'microwave', 'oven', 'toaster', 'sink', 'refrigerator', 'book',
               'clock', 'vase', 'scissors', 'teddy bear', 'hair drier', 'toothbrush')

    def __init__(self, *args, **kwargs):
        self._coco = None
        self._columns = None
        super().__init__(*args, **kwargs)

    # ------------------------------------------------------------------ the COCO API object
    @property
    def coco(self) -> COCO:
        """The COCO API object of ``ann_file`` (its ``dataset`` is the ground truth the COCO
        evaluation uses). Built on first use, not while loading: a training set never
        evaluated does not keep the parsed JSON and its index next to the records."""
        if self._coco is None:
            self._coco = COCO(self.ann_file)
        return self._coco

    @coco.setter
    def coco(self, value) -> None:
        self._coco = value

    # ------------------------------------------------------------------ loading
    def load_annotations(self, ann_file: str) -> RecordStore:
        """The records of ``ann_file``, built straight from the file's lists.

        The annotations' polygons are not parsed: they are kept as their JSON text
        (:func:`~detforge.data.coco_api.load_coco_json`), so that the millions of Python
        floats of the polygons never exist (they are most of a COCO file's memory and
        parse time); each record holds the ``masks`` of its boxes as one JSON text
        (:class:`~detforge.data.record_store.JsonText`), parsed when the record is read.
        Boxes, categories and flags of all annotations are read into numpy arrays at once;
        each image's record is then cut from them and pickled into a
        :class:`~detforge.data.record_store.RecordStore` (so the list of dicts never exists),
        and the parsed JSON is freed before the store is joined. An image with any unusual
        annotation (unknown category, a box that is degenerate, outside the image, given as
        strings or malformed, ``area <= 0``, smaller than ``min_size``) goes through
        :meth:`_parse_ann_info`, which counts, converts or raises as documented there.
        """
        # the parsed file and the records hold no reference cycles: the cyclic garbage
        # collector, run again and again over the growing millions of objects, would only
        # spend time (a third of the loading)
        with _garbage_collection_paused():
            data = load_coco_json(ann_file, polygons_as_text=True)
            try:
                return self._build_records(ann_file, data)
            except (KeyError, TypeError) as e:
                raise DatasetError(f'{ann_file}: malformed COCO record ({type(e).__name__}: '
                                   f'{e}); expected images with "id", "file_name", '
                                   f'"width", "height" and annotations with "id", "image_id", '
                                   f'"category_id", "bbox"') from None

    def _build_records(self, ann_file: str, data: dict) -> RecordStore:
        """The store of records of the parsed file ``data`` (emptied on the way)."""
        cats = {c['id']: c['name'] for c in data['categories']}
        by_name = {name: cid for cid, name in cats.items()}
        missing = [name for name in self.ann_classes if name not in by_name]
        if missing:
            raise DatasetError(f'{ann_file}: classes {missing} are not among its categories '
                               f'{sorted(by_name)}; check classes= in the dataset config')
        self.cat_ids = [by_name[name] for name in self.ann_classes]
        self.cat2label = {cid: i for i, cid in enumerate(self.cat_ids)}

        # images by id (a repeated id keeps its first place and its last record, as the
        # COCO API's index does)
        imgs = {img['id']: img for img in data['images']}
        img_ids = list(imgs)
        images = list(imgs.values())
        del imgs
        position = {img_id: i for i, img_id in enumerate(img_ids)}
        sizes = np.array([(np.nan if img.get('width') is None else img['width'],
                           np.nan if img.get('height') is None else img['height'])
                          for img in images], dtype=np.float64).reshape(-1, 2)
        anns = data['annotations']
        cols = self._annotation_columns(anns, position, cats, sizes)
        image, segm = cols['image'], cols['segm']
        # annotations of each image, in file order (for the per-image parse)
        order = np.argsort(image, kind='stable')
        order = order[image[order] >= 0]
        bounds = np.searchsorted(image[order], np.arange(len(images) + 1)).tolist()
        unusual_image = np.zeros(len(images), dtype=bool)
        unusual_image[image[cols['unusual']]] = True
        # the kept annotations of the other images, by image, gt boxes before crowd boxes,
        # each in file order: a record's arrays are slices of these (lexsort is stable)
        kept = np.flatnonzero(cols['keep'])  # (of an image)
        kept = kept[~unusual_image[image[kept]]]
        crowd = cols['crowd'][kept]
        kept = kept[np.lexsort((crowd, image[kept]))]
        boxes, labels = cols['xyxy'][kept], cols['label'][kept]
        # group starts: [2i] gt of image i, [2i + 1] its crowd boxes, [2i + 2] the next image
        edges = np.searchsorted(image[kept] * 2 + cols['crowd'][kept],
                                np.arange(2 * len(images) + 1)).tolist()
        masks = [segm[k] for k in kept.tolist()]
        del cols, crowd, kept, image

        builder = RecordStoreBuilder()
        num_boxes = np.zeros(len(images), dtype=np.int64)
        gt_labels = []  # of each record: get_cat_ids without reading the records
        for i, (img, unusual) in enumerate(zip(images, unusual_image.tolist())):
            info = dict(img)
            info['filename'] = img['file_name']
            if unusual:
                ann = self._parse_ann_info(
                    info, [_with_segmentation(anns[k], segm[k])
                           for k in order[bounds[i]:bounds[i + 1]].tolist()], cats)
            else:
                gt, ign, end = edges[2 * i], edges[2 * i + 1], edges[2 * i + 2]
                ann = dict(bboxes=boxes[gt:ign], labels=labels[gt:ign],
                           bboxes_ignore=boxes[ign:end], labels_ignore=labels[ign:end],
                           masks=JsonText('[' + ','.join(masks[gt:ign]) + ']'))
            info['ann'] = ann
            num_boxes[i] = len(ann['bboxes']) + len(ann['bboxes_ignore'])
            gt_labels.append(ann['labels'])
            builder.append(info)
        # free the parsed JSON (ours: load_annotations parsed it) before the store's one
        # buffer is allocated, and give its pages back to the system
        data.clear()
        del anns, images, segm, masks
        release_free_memory()
        self._columns = dict(ids=img_ids, sizes=sizes, num_boxes=num_boxes,
                             **_label_columns(gt_labels))
        self.img_ids = img_ids
        return builder.finish()

    def _annotation_columns(self, anns: list, position: dict, cats: dict,
                            sizes: np.ndarray) -> dict[str, Any]:
        """Per annotation: ``image`` (position of its image, -1 if none), ``label`` (-1 if
        not selected), ``crowd``, ``keep`` (a box of a selected class, not ``ignore``),
        ``xyxy`` float32, ``segm``, and ``unusual`` (to be parsed one by one)."""
        n = len(anns)
        image = np.fromiter((position.get(a['image_id'], -1) for a in anns), np.int64, n)
        cid = [a['category_id'] for a in anns]
        for a in anns:  # the COCO API's index needs these; so does an error message
            a['id']
        known = np.fromiter((c in cats for c in cid), bool, n)
        label = np.fromiter((self.cat2label.get(c, -1) for c in cid), np.int64, n)
        ignored = np.fromiter((bool(a.get('ignore', False)) for a in anns), bool, n)
        crowd = np.fromiter((bool(a.get('iscrowd', False)) for a in anns), bool, n)
        boxes = [a.get('bbox') for a in anns]
        xywh, box_ok = _numeric_boxes(boxes)
        area_ok = np.fromiter((_positive_number_or_none(a.get('area')) for a in anns), bool, n)
        # xyxy as the per-annotation parse makes it: float64 sums, then float32
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1).astype(np.float32)
        w, h = xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]
        degenerate = (w < 1) | (h < 1)
        img_w, img_h = sizes[np.maximum(image, 0), 0], sizes[np.maximum(image, 0), 1]
        unknown_size = np.isnan(img_w) | np.isnan(img_h)
        outside = ((xyxy[:, 2] <= 0) | (xyxy[:, 3] <= 0) | (xyxy[:, 0] >= img_w)
                   | (xyxy[:, 1] >= img_h)) & ~unknown_size
        selected = label >= 0
        odd = ~box_ok | ~area_ok | degenerate | outside
        if self.min_size:
            odd |= ((w < self.min_size) | (h < self.min_size)) & ~crowd
        relevant = (image >= 0) & ~ignored
        unusual = relevant & (~known | (selected & odd))
        segm = _segmentation_texts(anns)
        return dict(image=image, label=label, crowd=crowd, keep=relevant & selected,
                    xyxy=xyxy, segm=segm, unusual=unusual)

    def _parse_ann_info(self, img_info: dict, anns: list[dict], cats: dict) -> dict:
        where = f'{self.ann_file} (image id {img_info["id"]}, {img_info["file_name"]})'
        boxes, labels, ignore, ids, degenerate, segms = [], [], [], [], [], []
        for ann in anns:
            if ann.get('ignore', False):  # MMDetection leaves these out entirely
                continue
            cid = ann.get('category_id')
            if cid not in cats:
                if not self.skip_invalid:
                    raise AnnotationError(f'{where}: annotation id {ann.get("id")} has category_id '
                                          f'{cid!r}, which is not among the categories')
                self.skipped.add('unknown_class', img_info['file_name'],
                                 f'annotation id {ann.get("id")} (category_id {cid!r})')
                continue
            if cid not in self.cat2label:  # a category left out by classes=
                continue
            x, y, w, h = self._read_bbox(ann, where, img_info['file_name'])
            boxes.append([x, y, x + w, y + h])
            labels.append(self.cat2label[cid])
            ignore.append(bool(ann.get('iscrowd', False)))
            ids.append(f'annotation id {ann.get("id")}')
            degenerate.append(ann.get('area', w * h) <= 0)
            segms.append(ann.get('segmentation'))
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        # MMDet also drops boxes whose recorded area is <= 0: make them degenerate here
        boxes[np.asarray(degenerate, bool), 2:] = boxes[np.asarray(degenerate, bool), :2]
        out = sanitize_boxes(boxes, labels, ignore, img_info.get('width'), img_info.get('height'),
                             file=where, ann_ids=ids, counter=self.skipped,
                             skip_invalid=self.skip_invalid, min_size=self.min_size,
                             return_inds=True)
        # the segmentation of each kept gt box, in the same order (MMDet's ``masks``:
        # polygons or RLE as in the file; LoadAnnotations(with_mask=True) decodes them)
        out['masks'] = [segms[i] for i in out.pop('inds')]
        out.pop('inds_ignore')
        return out

    def _read_bbox(self, ann: dict, where: str, file_name: str) -> tuple[float, ...]:
        """``[x, y, w, h]`` of one annotation as floats. Strings of numbers (written by some
        export tools) are converted and counted in a warning naming the annotation id, or
        raise with ``skip_invalid=False``; anything else raises."""
        bbox = ann.get('bbox')
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or any(
                isinstance(v, bool) for v in bbox):
            raise AnnotationError(f'{where}: annotation id {ann.get("id")} has no valid "bbox" '
                                  f'[x, y, w, h] (got {bbox!r})')
        if any(isinstance(v, str) for v in bbox):
            if not self.skip_invalid:
                raise AnnotationError(f'{where}: annotation id {ann.get("id")} gives its "bbox" '
                                      f'as strings {bbox!r}; expected numbers')
            self.skipped.add('string_coords', file_name, f'annotation id {ann.get("id")}')
        try:
            return tuple(float(v) for v in bbox)
        except (TypeError, ValueError):
            raise AnnotationError(f'{where}: annotation id {ann.get("id")} has no valid "bbox" '
                                  f'[x, y, w, h] of numbers (got {bbox!r})') from None

    def _columns_of_records(self) -> dict[str, Any]:
        """``ids``, ``sizes`` ``(N, 2)``, ``num_boxes``, and ``labels`` / ``label_ends``
        (the gt labels of all records back to back, and where each record's end) of the
        records: kept from loading, or read from ``data_infos`` (a subclass that loads its
        own records)."""
        if self._columns is None or len(self._columns['ids']) != len(self.data_infos):
            infos = list(self.data_infos)
            self._columns = dict(
                ids=[info['id'] for info in infos],
                sizes=np.array([(info['width'], info['height']) for info in infos],
                               dtype=np.float64).reshape(-1, 2),
                num_boxes=np.array([len(info['ann']['bboxes']) + len(info['ann']['bboxes_ignore'])
                                    for info in infos], dtype=np.int64),
                **_label_columns([info['ann']['labels'] for info in infos]))
        return self._columns

    def _filter_imgs(self, min_size: int = 32):
        # MMDet: with filter_empty_gt keep images holding an annotation of the selected
        # classes (crowd counts), and images of at least min_size pixels a side.
        cols = self._columns_of_records()
        with np.errstate(invalid='ignore'):  # NaN: size not recorded, not small
            keep = ~(cols['sizes'].min(axis=1) < min_size)
        if self.filter_empty_gt:
            keep &= cols['num_boxes'] > 0
        return np.flatnonzero(keep)

    def _image_sizes(self) -> np.ndarray:
        return self._columns_of_records()['sizes']

    def _keep(self, indices) -> None:
        cols = self._columns_of_records()
        super()._keep(indices)
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        ends = cols['label_ends'][indices]
        counts = ends - (cols['label_ends'] - np.diff(cols['label_ends'], prepend=0))[indices]
        new_ends = np.cumsum(counts)
        # positions of the kept records' labels: each record's run, back to back
        at = np.repeat(ends - new_ends, counts) + np.arange(new_ends[-1] if len(new_ends) else 0)
        self._columns = dict(ids=[cols['ids'][i] for i in indices.tolist()],
                             sizes=cols['sizes'][indices], num_boxes=cols['num_boxes'][indices],
                             labels=cols['labels'][at], label_ends=new_ends)

    def _set_group_flag(self):
        super()._set_group_flag()
        self.img_ids = list(self._columns_of_records()['ids'])

    def get_cat_ids(self, idx: int) -> list[int]:
        """COCO category ids of the gt boxes of image ``idx``, from the label columns kept
        at loading (``ClassBalancedDataset`` asks for every image: no record is read)."""
        if type(self).get_ann_info is not CustomDataset.get_ann_info:  # a subclass's own
            return [self.cat_ids[label] for label in self.get_ann_info(idx)['labels'].tolist()]
        cols = self._columns_of_records()
        n = len(cols['label_ends'])
        i = operator.index(idx)
        if not -n <= i < n:
            raise IndexError(f'record index {idx} out of range for {n} records')
        i %= n
        start = int(cols['label_ends'][i - 1]) if i else 0
        return [self.cat_ids[label] for label in
                cols['labels'][start:int(cols['label_ends'][i])].tolist()]

    def format_results(self, results, jsonfile_prefix: str | None = None, **kwargs):
        """Write ``results`` (per image, a list over classes of (n, 5) arrays; or (n, 5)
        proposal arrays) as COCO result JSON, as MMDetection 2.x: ``PREFIX.bbox.json`` (or
        ``PREFIX.proposal.json``), COCO ``image_id``/``category_id`` and ``[x, y, w, h]``
        boxes.

        Returns ``(result_files, tmp_dir)``: ``{'bbox': path, ...}`` and, when no prefix
        was given, the ``tempfile.TemporaryDirectory`` holding the files (else None).
        """
        import os.path as osp
        import tempfile

        from detforge.evaluation.coco_metric import results2json
        if not isinstance(results, (list, tuple)) or len(results) != len(self):
            raise DatasetError(f'format_results: {len(results) if isinstance(results, (list, tuple)) else type(results).__name__} '
                               f'results for a data set of {len(self)} images ({self.ann_file})')
        tmp_dir = None
        if jsonfile_prefix is None:
            tmp_dir = tempfile.TemporaryDirectory()
            jsonfile_prefix = osp.join(tmp_dir.name, 'results')
        return results2json(self, results, str(jsonfile_prefix)), tmp_dir

    def evaluate(self, results, metric='bbox', logger=None, jsonfile_prefix=None, classwise=None,
                 proposal_nums=(100, 300, 1000), iou_thrs=None, metric_items=None, **kwargs):
        from detforge.evaluation.coco_metric import evaluate_coco
        return evaluate_coco(self, results, metric=metric, logger=logger,
                             jsonfile_prefix=jsonfile_prefix, classwise=classwise,
                             proposal_nums=proposal_nums, iou_thrs=iou_thrs,
                             metric_items=metric_items, **kwargs)


@contextlib.contextmanager
def _garbage_collection_paused():
    """Pause Python's cyclic garbage collector (reference counting still frees memory)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _label_columns(labels: list[np.ndarray]) -> dict[str, np.ndarray]:
    """``labels``: each record's gt labels back to back (int64); ``label_ends``: where
    each record's end."""
    ends = np.cumsum([len(x) for x in labels], dtype=np.int64)
    flat = np.concatenate(labels).astype(np.int64) if labels else np.zeros(0, np.int64)
    return dict(labels=flat, label_ends=ends)


def _segmentation_texts(anns: list[dict]) -> list[str]:
    """Each annotation's ``segmentation`` as JSON text, taken out of the annotation (a
    polygon list is text already, behind the mark: one copy of it is held at a time)."""
    texts = [a.pop('segmentation', None) for a in anns]
    mark = SEGMENTATION_TEXT_MARK
    for k, value in enumerate(texts):
        if type(value) is str and value[:1] == mark:
            texts[k] = value[1:]
        else:  # RLE, a polygon list with NaN, ... as it was parsed
            texts[k] = 'null' if value is None else json.dumps(value)
    return texts


def _with_segmentation(ann: dict, text: str) -> dict:
    """The annotation as in the file: its ``segmentation`` (taken out as JSON ``text``)
    parsed back."""
    return dict(ann, segmentation=parse_json_text(text))


def _numeric_boxes(boxes: list) -> tuple[np.ndarray, np.ndarray]:
    """``(N, 4)`` float64 ``[x, y, w, h]`` and ``(N,)`` bool: the box is a list of 4 numbers
    (not strings, not booleans). Rows that are not are zeros (parsed one by one later)."""
    n = len(boxes)
    try:
        xywh = np.array(boxes, dtype=np.float64).reshape(n, 4)
        lists = {type(b) for b in boxes} <= {list}
        if lists and {type(v) for b in boxes for v in b} <= {int, float}:
            return xywh, np.ones(n, dtype=bool)
    except (TypeError, ValueError):
        pass  # some box is not 4 numbers: check them one by one below
    ok = np.fromiter((isinstance(b, (list, tuple)) and len(b) == 4
                      and all(type(v) in (int, float) for v in b) for b in boxes), bool, n)
    xywh = np.zeros((n, 4), dtype=np.float64)
    if ok.any():
        xywh[ok] = np.array([b for b, good in zip(boxes, ok) if good], dtype=np.float64)
    return xywh, ok


def _positive_number_or_none(area) -> bool:
    """``area`` is missing or a positive number (else the annotation is parsed alone)."""
    return area is None or (type(area) in (int, float) and area > 0)
