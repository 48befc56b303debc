"""PASCAL VOC mean average precision (MMDetection 2.x's ``eval_map`` / ``VOCDataset.evaluate``).

Per class, detections of all images are ranked by score. A detection is a true positive when
its best-overlapping GT box of the same class (IoU >= ``iou_thr``) was not already taken by a
higher-scored detection; if that GT box is ignored (VOC "difficult", or outside the area
range) the detection counts as neither TP nor FP. AP is the area under the interpolated
precision-recall curve (``'area'``, VOC2010+) or the mean of the best precision at recall
0, 0.1, ..., 1 (``'11points'``, VOC2007).

The matching is vectorised: with each detection's best GT fixed, "not already taken" means
"the first detection, in score order, whose best GT is this one", i.e. a first-occurrence
query (``np.unique(return_index=True)``) instead of MMDetection's loop over detections.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import numpy as np

from detforge.evaluation._log import print_log
from detforge.evaluation.recalls import box_iou_np, eval_recalls
from detforge.evaluation.table import format_table
from detforge.registry import METRICS, DetforgeError

__all__ = ['eval_map', 'average_precision', 'tpfp_default', 'evaluate_voc', 'VOCMetric']


def average_precision(recalls: np.ndarray, precisions: np.ndarray, mode: str = 'area'):
    """AP from a precision-recall curve.

    Args:
        recalls, precisions: ``(num_dets,)`` or ``(num_scales, num_dets)``, in rank order.
        mode: ``'area'`` (area under the monotone envelope) or ``'11points'``.

    Returns:
        float or ``(num_scales,)`` array.
    """
    squeeze = recalls.ndim == 1
    recalls = np.atleast_2d(recalls).astype(np.float64)
    precisions = np.atleast_2d(precisions).astype(np.float64)
    num_scales = recalls.shape[0]
    ap = np.zeros(num_scales, dtype=np.float64)
    if mode == 'area':
        zeros = np.zeros((num_scales, 1))
        ones = np.ones((num_scales, 1))
        mrec = np.hstack([zeros, recalls, ones])
        mpre = np.hstack([zeros, precisions, zeros])
        # precision envelope: best precision at this recall or any higher one
        mpre = np.flip(np.maximum.accumulate(np.flip(mpre, axis=1), axis=1), axis=1)
        for i in range(num_scales):
            steps = np.flatnonzero(mrec[i, 1:] != mrec[i, :-1])
            ap[i] = np.sum((mrec[i, steps + 1] - mrec[i, steps]) * mpre[i, steps + 1])
    elif mode == '11points':
        for thr in np.arange(0, 1 + 1e-3, 0.1):
            reached = recalls >= thr
            best = np.where(reached, precisions, -np.inf).max(axis=1, initial=-np.inf)
            ap += np.where(np.isfinite(best), best, 0.0)
        ap /= 11
    else:
        raise DetforgeError(f"unknown AP mode {mode!r}; expected 'area' or '11points'")
    return float(ap[0]) if squeeze else ap


def _areas(boxes: np.ndarray, legacy: bool) -> np.ndarray:
    extra = 1.0 if legacy else 0.0
    return (boxes[:, 2] - boxes[:, 0] + extra) * (boxes[:, 3] - boxes[:, 1] + extra)


def tpfp_default(det_bboxes: np.ndarray, gt_bboxes: np.ndarray, gt_bboxes_ignore=None,
                 iou_thr: float = 0.5, area_ranges=None, use_legacy_coordinate: bool = False):
    """True/false positives of one image and one class.

    Args:
        det_bboxes: ``(m, 5)`` ``[x1, y1, x2, y2, score]``.
        gt_bboxes: ``(n, 4)``; gt_bboxes_ignore: ``(k, 4)`` ignored GT (difficult).
        area_ranges: ``[(min_area, max_area), ...]``; ``None`` = one range, everything.

    Returns:
        ``(tp, fp)``, each ``(num_scales, m)`` float32 in the order of ``det_bboxes``.
    """
    det_bboxes = np.asarray(det_bboxes, dtype=np.float64).reshape(-1, 5)
    gt_bboxes = np.asarray(gt_bboxes, dtype=np.float64).reshape(-1, 4)
    ignore = (np.zeros((0, 4)) if gt_bboxes_ignore is None
              else np.asarray(gt_bboxes_ignore, dtype=np.float64).reshape(-1, 4))
    area_ranges = area_ranges or [(None, None)]
    num_dets = len(det_bboxes)
    tp = np.zeros((len(area_ranges), num_dets), dtype=np.float32)
    fp = np.zeros((len(area_ranges), num_dets), dtype=np.float32)
    all_gt = np.concatenate([gt_bboxes, ignore])
    gt_is_ignored = np.r_[np.zeros(len(gt_bboxes), bool), np.ones(len(ignore), bool)]
    det_areas = _areas(det_bboxes, use_legacy_coordinate)
    gt_areas = _areas(all_gt, use_legacy_coordinate)
    if len(all_gt):
        ious = box_iou_np(det_bboxes, all_gt, legacy=use_legacy_coordinate)
        best_iou, best_gt = ious.max(axis=1), ious.argmax(axis=1)
    else:
        best_iou, best_gt = np.zeros(num_dets), np.zeros(num_dets, dtype=np.int64)
    order = np.argsort(-det_bboxes[:, 4], kind='stable')
    hit = best_iou[order] >= iou_thr
    # the first detection (in score order) that reaches each GT box takes it
    first = np.zeros(num_dets, dtype=bool)
    hit_positions = np.flatnonzero(hit)
    _, first_idx = np.unique(best_gt[order][hit_positions], return_index=True)
    first[hit_positions[first_idx]] = True
    for k, (min_area, max_area) in enumerate(area_ranges):
        if min_area is None:
            gt_out_of_range = np.zeros(len(all_gt), dtype=bool)
            det_in_range = np.ones(num_dets, dtype=bool)
        else:
            gt_out_of_range = (gt_areas < min_area) | (gt_areas >= max_area)
            det_in_range = (det_areas >= min_area) & (det_areas < max_area)
        gt_skip = (gt_is_ignored | gt_out_of_range)[best_gt[order]] if len(all_gt) else \
            np.zeros(num_dets, dtype=bool)
        tp_sorted = hit & ~gt_skip & first
        fp_sorted = (hit & ~gt_skip & ~first) | (~hit & det_in_range[order])
        tp[k, order] = tp_sorted
        fp[k, order] = fp_sorted
    return tp, fp


def _split_by_class(det_results, annotations, class_id):
    dets = [np.asarray(img_res[class_id]).reshape(-1, 5) for img_res in det_results]
    gts, gts_ignore = [], []
    for ann in annotations:
        labels = np.asarray(ann['labels']).reshape(-1)
        gts.append(np.asarray(ann['bboxes']).reshape(-1, 4)[labels == class_id])
        ignore = np.asarray(ann.get('bboxes_ignore', np.zeros((0, 4)))).reshape(-1, 4)
        ignore_labels = np.asarray(ann.get('labels_ignore', np.zeros(0))).reshape(-1)
        gts_ignore.append(ignore[ignore_labels == class_id] if len(ignore_labels) == len(ignore)
                          else ignore)
    return dets, gts, gts_ignore


def eval_map(det_results: Sequence[Sequence[np.ndarray]], annotations: Sequence[dict],
             scale_ranges=None, iou_thr: float = 0.5, dataset=None, logger=None,
             eval_mode: str = 'area', use_legacy_coordinate: bool = False):
    """Mean AP over classes (MMDetection's ``eval_map``).

    Args:
        det_results: per image, a list over classes of ``(n, 5)`` arrays.
        annotations: per image, ``dict(bboxes (n, 4), labels (n,), bboxes_ignore (k, 4),
            labels_ignore (k,))``.
        scale_ranges: ``[(min_side, max_side), ...]`` in pixels (areas are their squares).
        dataset: class names (for the table).
        eval_mode: ``'area'`` or ``'11points'``.

    Returns:
        ``(mean_ap, per_class)`` where ``per_class`` is a list of dicts with ``num_gts,
        num_dets, recall, precision, ap``; classes without GT are left out of the mean.
    """
    if len(det_results) != len(annotations):
        raise DetforgeError(f'{len(det_results)} images of results but {len(annotations)} '
                            f'annotations; are the results from another dataset?')
    num_classes = len(det_results[0]) if len(det_results) else 0
    area_ranges = ([(lo ** 2, hi ** 2) for lo, hi in scale_ranges] if scale_ranges is not None
                   else None)
    num_scales = len(scale_ranges) if scale_ranges is not None else 1
    eps = np.finfo(np.float32).eps
    per_class = []
    for c in range(num_classes):
        dets, gts, gts_ignore = _split_by_class(det_results, annotations, c)
        tpfp = [tpfp_default(d, g, gi, iou_thr, area_ranges, use_legacy_coordinate)
                for d, g, gi in zip(dets, gts, gts_ignore)]
        num_gts = np.zeros(num_scales, dtype=int)
        for g in gts:
            if area_ranges is None:
                num_gts[0] += len(g)
            else:
                areas = _areas(np.asarray(g, dtype=np.float64).reshape(-1, 4),
                               use_legacy_coordinate)
                for k, (lo, hi) in enumerate(area_ranges):
                    num_gts[k] += np.sum((areas >= lo) & (areas < hi))
        all_dets = np.concatenate(dets) if dets else np.zeros((0, 5))
        order = np.argsort(-all_dets[:, 4], kind='stable')
        tp = np.hstack([t for t, _ in tpfp])[:, order] if tpfp else np.zeros((num_scales, 0))
        fp = np.hstack([f for _, f in tpfp])[:, order] if tpfp else np.zeros((num_scales, 0))
        tp, fp = np.cumsum(tp, axis=1), np.cumsum(fp, axis=1)
        recalls = tp / np.maximum(num_gts[:, None], eps)
        precisions = tp / np.maximum(tp + fp, eps)
        if scale_ranges is None:
            recalls, precisions = recalls[0], precisions[0]
            num_gts_out = int(num_gts[0])
        else:
            num_gts_out = num_gts
        per_class.append(dict(num_gts=num_gts_out, num_dets=len(all_dets), recall=recalls,
                              precision=precisions,
                              ap=average_precision(recalls, precisions, eval_mode)))
    if scale_ranges is not None:
        all_ap = np.vstack([r['ap'] for r in per_class]) if per_class else np.zeros((0, num_scales))
        all_gts = np.vstack([r['num_gts'] for r in per_class]) if per_class else all_ap
        mean_ap = np.array([all_ap[all_gts[:, k] > 0, k].mean() if (all_gts[:, k] > 0).any()
                            else 0.0 for k in range(num_scales)])
    else:
        aps = [r['ap'] for r in per_class if r['num_gts'] > 0]
        mean_ap = float(np.mean(aps)) if aps else 0.0
    print_map_summary(mean_ap, per_class, dataset, area_ranges, logger=logger)
    return mean_ap, per_class


def print_map_summary(mean_ap, results, dataset=None, scale_ranges=None, logger=None):
    """Per-class table: class, gts, dets, recall, ap (one table per scale range)."""
    if logger == 'silent':
        return
    names = list(dataset) if dataset is not None else [str(i) for i in range(len(results))]
    num_scales = len(scale_ranges) if scale_ranges is not None else 1
    for k in range(num_scales):
        rows = []
        for name, r in zip(names, results):
            gts = np.atleast_1d(r['num_gts'])[k]
            recall = np.atleast_2d(r['recall'])[k] if np.size(r['recall']) else np.zeros(0)
            ap = np.atleast_1d(r['ap'])[k]
            rows.append([name, int(gts), r['num_dets'],
                         f'{recall[-1]:.3f}' if recall.size else '0.000', f'{ap:.3f}'])
        rows.append(['mAP', '', '', '', f'{np.atleast_1d(mean_ap)[k]:.3f}'])
        title = '' if scale_ranges is None else f'Scale range {scale_ranges[k]}\n'
        table = format_table(rows, headers=['class', 'gts', 'dets', 'recall', 'ap'])
        print_log('\n' + title + table,
                  logger=logger)


def evaluate_voc(dataset, results, metric='mAP', iou_thr=0.5, scale_ranges=None,
                 eval_mode='area', logger=None, proposal_nums=(100, 300, 1000),
                 use_legacy_coordinate: bool = True) -> 'OrderedDict[str, float]':
    """VOC evaluation (MMDetection 2.x ``VOCDataset.evaluate``).

    Args:
        dataset: has ``CLASSES`` and ``get_ann_info(i)``.
        results: per image, a list over classes of ``(n, 5)`` arrays (proposals, one array
            per image, for ``metric='recall'``).
        metric: ``'mAP'`` or ``'recall'``.
        iou_thr: a float or a list (then ``mAP`` is the mean over them).
        eval_mode: ``'area'`` or ``'11points'``.
        use_legacy_coordinate: widths are ``x2 - x1 + 1`` as in the VOC devkit (MMDetection
            2.x evaluates VOC this way; its XML loader keeps the 1-based pixel indices).

    Returns:
        ``OrderedDict(mAP=..., AP50=...)`` (or ``recall@N@IoU`` and ``AR@N`` for 'recall').
    """
    if isinstance(metric, (list, tuple)):
        if len(metric) != 1:
            raise DetforgeError(f'VOC evaluation takes one metric, got {metric}')
        metric = metric[0]
    if metric not in ('mAP', 'recall'):
        raise DetforgeError(f"metric {metric!r} is not supported by the VOC evaluation; "
                            f"expected 'mAP' or 'recall'")
    num_images = len(dataset.data_infos) if hasattr(dataset, 'data_infos') else len(dataset)
    if not isinstance(results, (list, tuple)) or len(results) != num_images:
        raise DetforgeError(f'the results hold {len(results)} images but the dataset has '
                            f'{num_images}; are these results from another dataset?')
    annotations = [dataset.get_ann_info(i) for i in range(num_images)]
    iou_thrs = [iou_thr] if isinstance(iou_thr, (int, float)) else list(iou_thr)
    eval_results: 'OrderedDict[str, float]' = OrderedDict()
    if metric == 'mAP':
        for r in results:
            if isinstance(r, np.ndarray) or len(r) != len(dataset.CLASSES):
                raise DetforgeError(
                    f'each image needs a list of {len(dataset.CLASSES)} per-class arrays '
                    f'({", ".join(dataset.CLASSES)}); are these results from another dataset?')
        mean_aps = []
        for thr in iou_thrs:
            print_log(f'\n{"-" * 15}iou_thr: {thr}{"-" * 15}', logger=logger)
            mean_ap, _ = eval_map(results, annotations, scale_ranges=scale_ranges, iou_thr=thr,
                                  dataset=dataset.CLASSES, logger=logger, eval_mode=eval_mode,
                                  use_legacy_coordinate=use_legacy_coordinate)
            mean_aps.append(mean_ap)
            eval_results[f'AP{int(round(thr * 100)):02d}'] = float(np.mean(mean_ap))
        eval_results['mAP'] = float(np.mean([np.mean(m) for m in mean_aps]))
        eval_results.move_to_end('mAP', last=False)
    else:
        gt_bboxes = [np.asarray(a['bboxes']).reshape(-1, 4) for a in annotations]
        props = [r if isinstance(r, np.ndarray) else np.concatenate(
            [np.asarray(c).reshape(-1, 5) for c in r]) for r in results]
        recalls = eval_recalls(gt_bboxes, props, list(proposal_nums), iou_thrs, logger=logger,
                               use_legacy_coordinate=use_legacy_coordinate)
        for i, num in enumerate(proposal_nums):
            for j, thr in enumerate(iou_thrs):
                eval_results[f'recall@{num}@{thr}'] = float(recalls[i, j])
        if recalls.shape[1] > 1:
            for i, num in enumerate(proposal_nums):
                eval_results[f'AR@{num}'] = float(recalls[i].mean())
    return eval_results


@METRICS.register_module()
class VOCMetric:
    """VOC evaluation as a config entry: ``dict(type='VOCMetric', eval_mode='11points')``."""

    def __init__(self, metric='mAP', iou_thr=0.5, scale_ranges=None, eval_mode='area',
                 proposal_nums=(100, 300, 1000), use_legacy_coordinate=True):
        if eval_mode not in ('area', '11points'):
            raise DetforgeError(f"VOCMetric eval_mode must be 'area' or '11points', "
                                f"got {eval_mode!r}")
        self.kwargs = dict(metric=metric, iou_thr=iou_thr, scale_ranges=scale_ranges,
                           eval_mode=eval_mode, proposal_nums=proposal_nums,
                           use_legacy_coordinate=use_legacy_coordinate)

    def __call__(self, dataset, results, logger=None):
        return evaluate_voc(dataset, results, logger=logger, **self.kwargs)

    evaluate = __call__

    def __repr__(self):
        args = ', '.join(f'{k}={v!r}' for k, v in self.kwargs.items())
        return f'{type(self).__name__}({args})'
