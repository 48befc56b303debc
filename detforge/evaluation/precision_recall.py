"""COCO precision-recall curves per class, from ``COCOeval``'s accumulated ``precision`` array.

``COCOeval.accumulate()`` interpolates precision at 101 recall points (0, 0.01, ..., 1) for
every IoU threshold, class, area range and ``maxDets``: ``precision[T, R, K, A, M]``, with
-1 where a class has no ground truth. AP is the mean of that array over recall (and IoU),
so these curves are exactly what the AP numbers summarise::

    >>> pr = coco_precision_recall(dataset, results)
    >>> pr.precision.shape          # (T IoU thresholds, 101 recall points, K classes)
    (10, 101, 3)
    >>> pr.per_class_ap             # (K, 3): AP, AP50, AP75 (nan: no ground truth)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detforge.evaluation.coco_metric import (_backend, _coco_from_dict, _dataset_ids,
                                             _dt_coco, _result_records, _run_cocoeval,
                                             build_coco_gt, per_class_ap)

__all__ = ['CocoPrecisionRecall', 'coco_precision_recall']

# the COCO summary order of COCOeval.stats[:6]
_SUMMARY_KEYS = ('mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l')


@dataclass
class CocoPrecisionRecall:
    """What the curves and tables of a report need from one COCO box evaluation.

    ``precision (T, R, K)`` at area 'all' and the largest ``maxDets`` (-1: class without
    ground truth); ``recall_points (R,)``; ``iou_thrs (T,)``; ``per_class_ap (K, 3)`` AP,
    AP50, AP75; ``num_gts (K,)``; ``stats``: ``{'mAP': ..., 'mAP_50': ..., ...}``."""
    class_names: tuple
    precision: np.ndarray
    recall_points: np.ndarray
    iou_thrs: np.ndarray
    per_class_ap: np.ndarray
    num_gts: np.ndarray
    stats: dict

    def curve(self, k: int, iou: float | None = None) -> np.ndarray:
        """``(R,)`` precision of class ``k`` at the IoU threshold ``iou`` or, for ``None``,
        averaged over all thresholds (the curve whose mean is AP); nan without ground
        truth."""
        if iou is None:
            p = self.precision[:, :, k]
            valid = p > -1
            return np.where(valid.any(0), np.where(valid, p, 0).sum(0) /
                            np.maximum(valid.sum(0), 1), np.nan)
        t = int(np.argmin(np.abs(self.iou_thrs - iou)))
        p = self.precision[t, :, k]
        return np.where(p > -1, p, np.nan)


def coco_precision_recall(dataset, results, backend: str | None = None) -> CocoPrecisionRecall:
    """COCO box evaluation of ``results`` (per image, per class ``(n, 5)`` arrays) on
    ``dataset`` (a COCO dataset, or any with ``get_ann_info``), kept as curves."""
    img_ids, cat_ids = _dataset_ids(dataset)
    coco_cls, eval_cls = _backend(backend)
    gt_data = build_coco_gt(dataset)
    gt = _coco_from_dict(coco_cls, gt_data)
    records = _result_records(dataset, results, proposals=False)
    iou_thrs = np.linspace(.5, 0.95, 10)
    recall_points = np.linspace(0, 1, 101)
    names = tuple(dataset.CLASSES)
    counted = set(img_ids)
    gt_cats = [a['category_id'] for a in gt_data['annotations']
               if not a.get('iscrowd', 0) and a['image_id'] in counted]
    num_gts = np.array([gt_cats.count(c) for c in cat_ids], dtype=np.int64)
    if len(records[0]) == 0:  # nothing detected: every curve is 0 where there is ground truth
        precision = np.where(num_gts[None, None, :] > 0, 0.0, -1.0) * np.ones(
            (len(iou_thrs), len(recall_points), len(cat_ids)))
        ap = np.where(num_gts[:, None] > 0, 0.0, np.nan) * np.ones((len(cat_ids), 3))
        return CocoPrecisionRecall(names, precision, recall_points, iou_thrs, ap, num_gts,
                                   {k: 0.0 for k in _SUMMARY_KEYS})
    dt = _dt_coco(coco_cls, gt_data, *records)
    coco_eval = _run_cocoeval(eval_cls, gt, dt, img_ids=img_ids, cat_ids=cat_ids,
                              max_dets=(100, 300, 1000), iou_thrs=iou_thrs, use_cats=True)
    precision = np.asarray(coco_eval.eval['precision'])[:, :, :, 0, -1]
    stats = dict(zip(_SUMMARY_KEYS, np.asarray(coco_eval.stats, np.float64)[:6].tolist()))
    return CocoPrecisionRecall(names, precision, recall_points, iou_thrs,
                               per_class_ap(coco_eval, cat_ids), num_gts, stats)
