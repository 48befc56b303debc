"""COCO box AP, mask AP and proposal AR, with MMDetection 2.x's interface and key names.

``evaluate_coco(dataset, results)`` takes the detector's output for a whole dataset — per
image (dataset order), a list over classes of ``(n, 5)`` float arrays ``[x1, y1, x2, y2,
score]`` in original-image pixels — and returns::

    OrderedDict(bbox_mAP=0.532, bbox_mAP_50=0.871, bbox_mAP_75=0.601, bbox_mAP_s=...,
                bbox_mAP_m=..., bbox_mAP_l=..., bbox_mAP_copypaste='0.532 0.871 ...')

The numbers are those of the official COCO evaluation (``COCOeval``): by default computed by
faster-coco-eval, a C++ implementation of the same algorithm that gives the same numbers as
pycocotools many times faster (``benchmarks/bench_eval.py``); ``backend='pycocotools'``
selects the reference implementation. As in MMDetection 2.x, ``params.maxDets`` is
``proposal_nums`` (so AP is over up to 1000 detections per image) and the values are
returned unrounded.

Mask detectors' results (per image ``(bbox_result, segm_result)``, see
:mod:`detforge.evaluation.coco_segm`) also give ``segm_mAP, segm_mAP_50, ...`` with
``metric='segm'``, in the same table.

Detections are handed to the evaluator as numpy-built annotation lists, without the JSON
round trip MMDetection made (``jsonfile_prefix`` still writes ``PREFIX.bbox.json``).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from collections import OrderedDict
from typing import Any, Sequence

import numpy as np

from detforge.evaluation._log import print_log
from detforge.evaluation.table import format_table
from detforge.registry import METRICS, DetforgeError

__all__ = ['evaluate_coco', 'results2json', 'det2json', 'proposal2json', 'xyxy2xywh',
           'build_coco_gt', 'flatten_det_results', 'per_class_ap', 'CocoMetric',
           'COCO_BACKENDS']

COCO_BACKENDS = ('faster_coco_eval', 'pycocotools')
DEFAULT_BACKEND = 'faster_coco_eval'

# index of each item in COCOeval.stats (pycocotools' summarize order)
_STATS_INDEX = {
    'mAP': 0, 'mAP_50': 1, 'mAP_75': 2, 'mAP_s': 3, 'mAP_m': 4, 'mAP_l': 5,
    'AR@100': 6, 'AR@300': 7, 'AR@1000': 8, 'AR_s@1000': 9, 'AR_m@1000': 10, 'AR_l@1000': 11,
}
_BBOX_ITEMS = ['mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l']
_PROPOSAL_ITEMS = ['AR@100', 'AR@300', 'AR@1000', 'AR_s@1000', 'AR_m@1000', 'AR_l@1000']


# ----------------------------------------------------------------------------- backends
def _backend(name: str | None):
    """``(COCO, COCOeval)`` classes of a backend."""
    name = name or DEFAULT_BACKEND
    if name == 'faster_coco_eval':
        from faster_coco_eval import COCO, COCOeval_faster
        return COCO, COCOeval_faster
    if name == 'pycocotools':
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
        return COCO, COCOeval
    raise DetforgeError(f'unknown COCO evaluation backend {name!r}; expected one of '
                        f'{COCO_BACKENDS}')


def _coco_from_dict(coco_cls, data: dict):
    """A COCO API object indexing ``data`` (a COCO-format dict), built without a file."""
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints "creating index..."
        coco = coco_cls()
        coco.dataset = data
        coco.createIndex()
    return coco


# ----------------------------------------------------------------------------- conversion
def xyxy2xywh(bboxes: np.ndarray) -> np.ndarray:
    """``(n, >=4)`` boxes ``[x1, y1, x2, y2, ...]`` -> ``(n, 4)`` ``[x, y, w, h]`` (no +1)."""
    bboxes = np.asarray(bboxes, dtype=np.float64)
    return np.concatenate([bboxes[:, :2], bboxes[:, 2:4] - bboxes[:, :2]], axis=1)


def _as_boxes(arr, where: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.size == 0:
        return np.zeros((0, 5), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 5:
        raise DetforgeError(f'{where}: expected an (n, 5) array [x1, y1, x2, y2, score], '
                            f'got shape {arr.shape}')
    return arr[:, :5].astype(np.float64, copy=False)


def flatten_det_results(results: Sequence, num_classes: int | None = None):
    """Stack per-image results into flat arrays.

    Args:
        results: per image, either a list over classes of ``(n, 5)`` arrays (detections) or
            one ``(n, 5)`` array (proposals).
        num_classes: when given, each image's list must have this many entries.

    Returns:
        ``(img_index (N,) int64, labels (N,) int64 (-1 for proposals), dets (N, 5) float64)``.
    """
    img_chunks, label_chunks, det_chunks = [], [], []
    for i, per_image in enumerate(results):
        if isinstance(per_image, tuple):  # (bbox, segm) results: boxes only
            per_image = per_image[0]
        if isinstance(per_image, np.ndarray):
            dets = _as_boxes(per_image, f'results[{i}]')
            labels = np.full(len(dets), -1, dtype=np.int64)
        else:
            if num_classes is not None and len(per_image) != num_classes:
                raise DetforgeError(
                    f'results[{i}] has {len(per_image)} per-class arrays but the dataset has '
                    f'{num_classes} classes; are these results from another dataset or model?')
            per_class = [_as_boxes(d, f'results[{i}][{c}]') for c, d in enumerate(per_image)]
            dets = (np.concatenate(per_class, axis=0) if per_class
                    else np.zeros((0, 5), dtype=np.float64))
            labels = np.repeat(np.arange(len(per_class), dtype=np.int64),
                               [len(d) for d in per_class])
        det_chunks.append(dets)
        label_chunks.append(labels)
        img_chunks.append(np.full(len(dets), i, dtype=np.int64))
    if not det_chunks:
        return (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 5), np.float64))
    return np.concatenate(img_chunks), np.concatenate(label_chunks), np.concatenate(det_chunks)


def _dataset_ids(dataset):
    """``(img_ids, cat_ids)``: the COCO ids of a COCO dataset; positions (images) and
    1..K (classes) for any other dataset, whose own ids may be file names."""
    num_images = len(dataset.data_infos) if hasattr(dataset, 'data_infos') else len(dataset)
    has_coco = getattr(dataset, 'coco', None) is not None
    img_ids = getattr(dataset, 'img_ids', None) if has_coco else None
    cat_ids = getattr(dataset, 'cat_ids', None) if has_coco else None
    img_ids = list(img_ids) if img_ids is not None else list(range(num_images))
    cat_ids = list(cat_ids) if cat_ids is not None else list(range(1, len(dataset.CLASSES) + 1))
    return img_ids, cat_ids


def _check_results(dataset, results) -> None:
    img_ids, _ = _dataset_ids(dataset)
    if not isinstance(results, (list, tuple)):
        raise DetforgeError(f'results must be a list (one entry per image), got '
                            f'{type(results).__name__}')
    if len(results) != len(img_ids):
        raise DetforgeError(
            f'the results hold {len(results)} images but the dataset has {len(img_ids)}; '
            f'are these results from another dataset (or another split)?')


def _result_records(dataset, results, proposals: bool):
    """Flat arrays of every detection: image ids, category ids, xywh boxes, scores."""
    img_ids, cat_ids = _dataset_ids(dataset)
    img_index, labels, dets = flatten_det_results(
        results, None if proposals else len(cat_ids))
    if not proposals and (labels < 0).any():
        raise DetforgeError('box results must be, per image, a list over classes of (n, 5) '
                            'arrays; got a single array per image (proposals?). Use '
                            "metric='proposal' for proposals.")
    image_id = np.asarray(img_ids, dtype=object)[img_index] if len(img_index) else np.zeros(0)
    if proposals:
        category_id = np.ones(len(dets), dtype=np.int64)
    else:
        category_id = np.asarray(cat_ids, dtype=np.int64)[labels]
    return image_id, category_id, xyxy2xywh(dets), dets[:, 4]


def _records_to_json(image_id, category_id, xywh, scores) -> list[dict]:
    return [dict(image_id=i, bbox=b, score=s, category_id=c) for i, b, s, c in
            zip(_plain(image_id), xywh.tolist(), scores.tolist(), category_id.tolist())]


def _plain(ids):
    return [int(i) if isinstance(i, (np.integer,)) else i for i in
            (ids.tolist() if isinstance(ids, np.ndarray) else ids)]


def det2json(dataset, results) -> list[dict]:
    """Detections as COCO result dicts: ``image_id, bbox [x, y, w, h], score, category_id``."""
    return _records_to_json(*_result_records(dataset, results, proposals=False))


def proposal2json(dataset, results) -> list[dict]:
    """Proposals (one ``(n, 5)`` array per image) as COCO result dicts with category 1."""
    return _records_to_json(*_result_records(dataset, results, proposals=True))


def results2json(dataset, results, outfile_prefix: str) -> dict[str, str]:
    """Write results as COCO JSON: ``PREFIX.bbox.json`` for detections, ``PREFIX.proposal.json``
    for proposals, and ``PREFIX.segm.json`` (RLE masks) for mask results. Returns
    ``{'bbox': path, 'proposal': path[, 'segm': path]}`` as MMDetection does."""
    _check_results(dataset, results)
    from detforge.evaluation.coco_segm import has_masks, segm2json
    if has_masks(results):
        files = {'bbox': f'{outfile_prefix}.bbox.json', 'proposal': f'{outfile_prefix}.bbox.json',
                 'segm': f'{outfile_prefix}.segm.json'}
        os.makedirs(os.path.dirname(os.path.abspath(outfile_prefix)), exist_ok=True)
        with open(files['bbox'], 'w') as f:
            json.dump(det2json(dataset, results), f)
        with open(files['segm'], 'w') as f:
            json.dump(segm2json(*_dataset_ids(dataset), results), f)
        return files
    first = next((r for r in results if r is not None), None)
    proposals = isinstance(first, np.ndarray)
    records = proposal2json(dataset, results) if proposals else det2json(dataset, results)
    os.makedirs(os.path.dirname(os.path.abspath(outfile_prefix)), exist_ok=True)
    if proposals:
        files = {'proposal': f'{outfile_prefix}.proposal.json'}
    else:
        files = {'bbox': f'{outfile_prefix}.bbox.json', 'proposal': f'{outfile_prefix}.bbox.json'}
    with open(next(iter(files.values())), 'w') as f:
        json.dump(records, f)
    return files


# ----------------------------------------------------------------------------- ground truth
def build_coco_gt(dataset) -> dict:
    """The COCO-format dict of a dataset's ground truth.

    A ``CocoDataset`` already has one (``dataset.coco.dataset``). For other datasets (VOC)
    it is made from ``get_ann_info``: ignored boxes (``bboxes_ignore``, VOC's difficult) become
    ``iscrowd=1`` annotations, which COCOeval neither counts as misses nor as matches.
    """
    coco = getattr(dataset, 'coco', None)
    if coco is not None and isinstance(getattr(coco, 'dataset', None), dict) \
            and 'annotations' in coco.dataset:
        return coco.dataset
    img_ids, cat_ids = _dataset_ids(dataset)
    images, annotations = [], []
    for i, img_id in enumerate(img_ids):
        info = dataset.data_infos[i] if hasattr(dataset, 'data_infos') else {}
        images.append(dict(id=img_id, width=info.get('width'), height=info.get('height'),
                           file_name=info.get('filename', '')))
        ann = dataset.get_ann_info(i)
        boxes = np.asarray(ann.get('bboxes', np.zeros((0, 4))), dtype=np.float64).reshape(-1, 4)
        labels = np.asarray(ann.get('labels', np.zeros(0)), dtype=np.int64).reshape(-1)
        ignore = np.asarray(ann.get('bboxes_ignore', np.zeros((0, 4))),
                            dtype=np.float64).reshape(-1, 4)
        ignore_labels = np.asarray(ann.get('labels_ignore', np.full(len(ignore), -1)),
                                   dtype=np.int64).reshape(-1)
        all_boxes = xyxy2xywh(np.concatenate([boxes, ignore]))
        all_labels = np.concatenate([labels, ignore_labels])
        crowd = np.r_[np.zeros(len(boxes), int), np.ones(len(ignore), int)]
        for box, label, is_crowd in zip(all_boxes.tolist(), all_labels.tolist(), crowd.tolist()):
            if label < 0:  # ignored box of unknown class: ignore it for every class
                targets = cat_ids
            else:
                targets = [cat_ids[label]]
            for cat in targets:
                annotations.append(dict(id=len(annotations) + 1, image_id=img_id, category_id=cat,
                                        bbox=box, area=box[2] * box[3], iscrowd=is_crowd))
    categories = [dict(id=c, name=n) for c, n in zip(cat_ids, dataset.CLASSES)]
    return dict(images=images, annotations=annotations, categories=categories)


def _dt_segm_coco(coco_cls, gt_data: dict, records: list[dict]):
    """A COCO object of mask detections (``segm2json`` records)."""
    anns = [dict(r, id=k + 1, iscrowd=0) for k, r in enumerate(records)]
    data = dict(images=gt_data['images'], categories=gt_data['categories'], annotations=anns)
    return _coco_from_dict(coco_cls, data)


def _dt_coco(coco_cls, gt_data: dict, image_id, category_id, xywh, scores):
    """A COCO object of detections, as ``COCO.loadRes`` would build it, but from arrays."""
    area = (xywh[:, 2] * xywh[:, 3]).tolist()
    anns = [dict(id=k + 1, image_id=i, category_id=c, bbox=b, score=s, area=a, iscrowd=0)
            for k, (i, c, b, s, a) in enumerate(zip(_plain(image_id), category_id.tolist(),
                                                    xywh.tolist(), scores.tolist(), area))]
    data = dict(images=gt_data['images'], categories=gt_data['categories'], annotations=anns)
    return _coco_from_dict(coco_cls, data)


# ----------------------------------------------------------------------------- evaluation
def _run_cocoeval(eval_cls, gt, dt, *, img_ids, cat_ids, max_dets, iou_thrs, use_cats,
                  iou_type='bbox'):
    with contextlib.redirect_stdout(io.StringIO()):  # both backends print progress
        coco_eval = eval_cls(gt, dt, iou_type)
        coco_eval.params.catIds = list(cat_ids)
        coco_eval.params.imgIds = list(img_ids)
        coco_eval.params.maxDets = list(max_dets)
        coco_eval.params.iouThrs = np.asarray(iou_thrs, dtype=np.float64)
        coco_eval.params.useCats = int(use_cats)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


def _summary(stats: np.ndarray, max_dets: Sequence[int], iou_thrs) -> str:
    """The 12 lines of pycocotools' ``summarize()`` (the same for every backend)."""
    iou_range = f'{iou_thrs[0]:0.2f}:{iou_thrs[-1]:0.2f}'
    m0, m1, m2 = list(max_dets)[:3] if len(max_dets) >= 3 else [max_dets[-1]] * 3
    rows = [('Precision', 'AP', iou_range, 'all', m2), ('Precision', 'AP', '0.50', 'all', m2),
            ('Precision', 'AP', '0.75', 'all', m2), ('Precision', 'AP', iou_range, 'small', m2),
            ('Precision', 'AP', iou_range, 'medium', m2),
            ('Precision', 'AP', iou_range, 'large', m2),
            ('Recall', 'AR', iou_range, 'all', m0), ('Recall', 'AR', iou_range, 'all', m1),
            ('Recall', 'AR', iou_range, 'all', m2), ('Recall', 'AR', iou_range, 'small', m2),
            ('Recall', 'AR', iou_range, 'medium', m2), ('Recall', 'AR', iou_range, 'large', m2)]
    return '\n'.join(f' Average {kind:<9} ({short}) @[ IoU={iou:<9} | area={area:>6s} | '
                     f'maxDets={md:>3d} ] = {value:0.3f}'
                     for (kind, short, iou, area, md), value in zip(rows, stats))


def per_class_ap(coco_eval, cat_ids: Sequence[int]) -> np.ndarray:
    """``(K, 3)`` AP, AP50, AP75 per category (area 'all', largest maxDets); nan if no GT."""
    precision = np.asarray(coco_eval.eval['precision'])  # (T iou, R recall, K, A area, M maxdet)
    iou_thrs = np.asarray(coco_eval.params.iouThrs)
    out = np.full((len(cat_ids), 3), np.nan)
    for col, sel in enumerate([slice(None), np.isclose(iou_thrs, 0.5),
                               np.isclose(iou_thrs, 0.75)]):
        p = precision[sel, :, :, 0, -1].reshape(-1, precision.shape[1], precision.shape[2])
        p = p.transpose(2, 0, 1).reshape(precision.shape[2], -1)
        valid = p > -1
        counts = valid.sum(1)
        sums = np.where(valid, p, 0).sum(1)
        out[:, col] = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return out


# the per-class table is printed by default up to this many classes (classwise=None)
CLASSWISE_AUTO_MAX_CLASSES = 20


def _class_table(names, aps: np.ndarray) -> str:
    rows = [[n] + ['nan' if np.isnan(v) else f'{v:.3f}' for v in row] for n, row in zip(names, aps)]
    return format_table(rows, headers=['category', 'AP', 'AP50', 'AP75'])


def evaluate_coco(dataset, results, metric='bbox', logger=None, jsonfile_prefix=None,
                  classwise=None, proposal_nums=(100, 300, 1000), iou_thrs=None,
                  metric_items=None, backend: str | None = None) -> 'OrderedDict[str, Any]':
    """COCO evaluation of ``results`` on ``dataset`` (MMDetection 2.x ``CocoDataset.evaluate``).

    Args:
        dataset: has ``CLASSES``, ``img_ids``/``cat_ids`` and ``coco`` (a COCO dataset) or
            ``data_infos`` + ``get_ann_info`` (any other dataset, e.g. VOC).
        results: per image (dataset order), a list over classes of ``(n, 5)`` arrays
            ``[x1, y1, x2, y2, score]`` (pixels); for ``'proposal'`` also one ``(n, 5)`` array.
        metric: ``'bbox'``, ``'segm'``, ``'proposal'``, ``'proposal_fast'`` or a list of them
            (``'segm'`` needs mask results and ground-truth segmentations).
        jsonfile_prefix: also write the results as ``PREFIX.bbox.json`` (and
            ``PREFIX.segm.json``) (COCO format).
        classwise: print a per-class AP table (AP, AP50, AP75 per category). ``None``
            (the default): print it when the data set has at most
            ``CLASSWISE_AUTO_MAX_CLASSES`` (20) classes, where it fits on a screen and is
            where a bad class shows first; MMDetection 2.x prints it only with ``True``.
            It changes what is printed, never the returned metrics.
        proposal_nums: ``params.maxDets`` (AP uses the largest, as in MMDetection 2.x).
        iou_thrs: IoU thresholds; default 0.50:0.05:0.95.
        metric_items: which of ``mAP, mAP_50, mAP_75, mAP_s, mAP_m, mAP_l`` (bbox) or
            ``AR@100, AR@300, AR@1000, AR_s@1000, AR_m@1000, AR_l@1000`` (proposal) to return.
        backend: ``'faster_coco_eval'`` (default) or ``'pycocotools'``.

    Returns:
        ``OrderedDict`` with ``bbox_mAP, bbox_mAP_50, ..., bbox_mAP_copypaste`` and/or
        ``AR@100, ...`` (floats, unrounded).
    """
    metrics = list(metric) if isinstance(metric, (list, tuple)) else [metric]
    allowed = ('bbox', 'segm', 'proposal', 'proposal_fast')
    for m in metrics:
        if m not in allowed:
            raise DetforgeError(f'metric {m!r} is not supported by the COCO evaluation; '
                                f'expected one of {allowed}')
    if iou_thrs is None:
        iou_thrs = np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1, endpoint=True)
    if metric_items is not None and not isinstance(metric_items, (list, tuple)):
        metric_items = [metric_items]
    for item in metric_items or []:
        if item not in _STATS_INDEX:
            raise DetforgeError(f'metric item {item!r} is not supported; expected one of '
                                f'{list(_STATS_INDEX)}')
    _check_results(dataset, results)
    if jsonfile_prefix is not None:
        results2json(dataset, results, jsonfile_prefix)

    img_ids, cat_ids = _dataset_ids(dataset)
    coco_cls, eval_cls = _backend(backend)
    gt_data = build_coco_gt(dataset)
    gt = _coco_from_dict(coco_cls, gt_data)
    proposals_given = isinstance(next((r for r in results if r is not None), None), np.ndarray)

    eval_results: 'OrderedDict[str, Any]' = OrderedDict()
    for m in metrics:
        print_log(f'Evaluating {m}...', logger=logger)
        if m == 'proposal_fast':
            from detforge.evaluation.recalls import eval_recalls
            gt_boxes = _gt_boxes_per_image(gt_data, img_ids)
            props = [r if isinstance(r, np.ndarray) else
                     flatten_det_results([r])[2] for r in results]
            recalls = eval_recalls(gt_boxes, props, proposal_nums, iou_thrs, logger='silent')
            ar = recalls.mean(axis=1)
            for num, value in zip(proposal_nums, ar):
                eval_results[f'AR@{num}'] = float(value)
            print_log('\n'.join(f'AR@{n}\t{v:.4f}' for n, v in zip(proposal_nums, ar)),
                      logger=logger)
            continue
        is_proposal = m == 'proposal'
        if not is_proposal and proposals_given:
            raise DetforgeError("metric 'bbox' needs per-class detections, got one array per "
                                "image (proposals); use metric='proposal'")
        if m == 'segm':
            dt = _segm_dt(coco_cls, dataset, gt_data, results)
            if dt is None:
                print_log('The testing results of the whole dataset is empty.', logger=logger)
                break
        else:
            records = _result_records(dataset, results, proposals=proposals_given)
            if len(records[0]) == 0:
                print_log('The testing results of the whole dataset is empty.', logger=logger)
                break
            dt = _dt_coco(coco_cls, gt_data, *records)
        coco_eval = _run_cocoeval(
            eval_cls, gt, dt, img_ids=img_ids, cat_ids=cat_ids, max_dets=proposal_nums,
            iou_thrs=iou_thrs, use_cats=not is_proposal, iou_type=m if m == 'segm' else 'bbox')
        stats = np.asarray(coco_eval.stats, dtype=np.float64)
        print_log('\n' + _summary(stats, sorted(proposal_nums), list(iou_thrs)), logger=logger)
        if is_proposal:
            for item in metric_items or _PROPOSAL_ITEMS:
                eval_results[item] = float(stats[_STATS_INDEX[item]])
            continue
        if classwise or (classwise is None and len(cat_ids) <= CLASSWISE_AUTO_MAX_CLASSES):
            name_of = {c['id']: c.get('name', str(c['id'])) for c in gt_data['categories']}
            names = [name_of.get(c, str(c)) for c in cat_ids]
            print_log('\n' + _class_table(names, per_class_ap(coco_eval, cat_ids)),
                      logger=logger)
        for item in metric_items or _BBOX_ITEMS:
            eval_results[f'{m}_{item}'] = float(stats[_STATS_INDEX[item]])
        ap = stats[:6]
        eval_results[f'{m}_mAP_copypaste'] = ' '.join(f'{v:.3f}' for v in ap)
    return eval_results


def _segm_dt(coco_cls, dataset, gt_data: dict, results):
    """The COCO object of the mask results, or None when there is no mask at all."""
    from detforge.evaluation.coco_segm import has_masks, segm2json
    if not has_masks(results):
        raise DetforgeError("metric 'segm' needs mask results, per image (bbox_result, "
                            'segm_result); these are box-only results (not a mask detector?)')
    if not any('segmentation' in a for a in gt_data['annotations']):
        raise DetforgeError("metric 'segm' needs ground-truth masks: the dataset's annotations "
                            "have no 'segmentation' (a COCO JSON with masks is needed)")
    records = segm2json(*_dataset_ids(dataset), results)
    return _dt_segm_coco(coco_cls, gt_data, records) if records else None


def _gt_boxes_per_image(gt_data: dict, img_ids) -> list[np.ndarray]:
    """Non-crowd, non-ignored GT boxes (xyxy) per image, in ``img_ids`` order."""
    position = {img_id: k for k, img_id in enumerate(img_ids)}
    per_image = [[] for _ in img_ids]
    for ann in gt_data['annotations']:
        if ann.get('iscrowd', 0) or ann.get('ignore', False):
            continue
        k = position.get(ann['image_id'])
        if k is not None:
            x, y, w, h = ann['bbox']
            per_image[k].append([x, y, x + w, y + h])
    return [np.asarray(b, dtype=np.float32).reshape(-1, 4) for b in per_image]


# ----------------------------------------------------------------------------- config class
@METRICS.register_module()
class CocoMetric:
    """COCO evaluation as a config entry: ``dict(type='CocoMetric', metric='bbox')``.

    Calling it with ``(dataset, results)`` returns :func:`evaluate_coco`'s dict.
    """

    def __init__(self, metric='bbox', classwise=None, proposal_nums=(100, 300, 1000),
                 iou_thrs=None, metric_items=None, jsonfile_prefix=None, backend=None):
        self.kwargs = dict(metric=metric, classwise=classwise, proposal_nums=proposal_nums,
                           iou_thrs=iou_thrs, metric_items=metric_items,
                           jsonfile_prefix=jsonfile_prefix, backend=backend)
        _backend(backend)  # fail at build time on an unknown backend

    def __call__(self, dataset, results, logger=None):
        return evaluate_coco(dataset, results, logger=logger, **self.kwargs)

    evaluate = __call__

    def __repr__(self):
        args = ', '.join(f'{k}={v!r}' for k, v in self.kwargs.items())
        return f'{type(self).__name__}({args})'
