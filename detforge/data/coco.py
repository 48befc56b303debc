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

import numpy as np

from detforge.registry import DATASETS
from .coco_api import COCO
from .custom import CustomDataset, sanitize_boxes
from .errors import AnnotationError, DatasetError

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

    def load_annotations(self, ann_file: str) -> list[dict]:
        self.coco = COCO(ann_file)
        cats = {c['id']: c['name'] for c in self.coco.dataset['categories']}
        by_name = {name: cid for cid, name in cats.items()}
        missing = [name for name in self.ann_classes if name not in by_name]
        if missing:
            raise DatasetError(f'{ann_file}: classes {missing} are not among its categories '
                               f'{sorted(by_name)}; check classes= in the dataset config')
        self.cat_ids = [by_name[name] for name in self.ann_classes]
        self.cat2label = {cid: i for i, cid in enumerate(self.cat_ids)}
        self.img_ids = self.coco.get_img_ids()
        infos = []
        for img_id in self.img_ids:
            img = self.coco.load_imgs([img_id])[0]
            info = dict(img)
            info['filename'] = img['file_name']
            info['ann'] = self._parse_ann_info(info, self.coco.imgToAnns.get(img_id, []), cats)
            infos.append(info)
        self.img_ids = [info['id'] for info in infos]
        return infos

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

    def _filter_imgs(self, min_size: int = 32):
        # MMDet: with filter_empty_gt keep images holding an annotation of the selected
        # classes (crowd counts), and images of at least min_size pixels a side.
        valid = []
        for i, info in enumerate(self.data_infos):
            if min(info['width'], info['height']) < min_size:
                continue
            ann = info['ann']
            if self.filter_empty_gt and len(ann['bboxes']) + len(ann['bboxes_ignore']) == 0:
                continue
            valid.append(i)
        return valid

    def _set_group_flag(self):
        super()._set_group_flag()
        self.img_ids = [info['id'] for info in self.data_infos]

    def get_cat_ids(self, idx: int) -> list[int]:
        """COCO category ids of the annotations of image ``idx`` (as MMDet's CocoDataset)."""
        return [self.cat_ids[label] for label in self.get_ann_info(idx)['labels'].tolist()]

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
