"""Instance-mask results for COCO evaluation (``metric='segm'``).

A mask detector's result for one image is ``(bbox_result, segm_result)``: per class a
``(k, 5)`` box array and a list of ``k`` masks (bool ``(h, w)`` arrays or compressed RLE
dicts, as ``single_gpu_test`` keeps them), or ``(segms, mask_scores)`` per class as
MMDetection 2.x's mask-scoring heads give. Each mask is scored with its box's score unless
mask scores are given, and encoded as COCO RLE with a string ``counts`` (JSON-ready).
"""
from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_util

from detforge.registry import DetforgeError

__all__ = ['has_masks', 'segm2json']


def has_masks(results) -> bool:
    """Whether per-image ``results`` carry masks (``(bbox_result, segm_result)`` tuples)."""
    first = next((r for r in results if r is not None), None)
    return isinstance(first, tuple) and len(first) == 2


def _as_rle(mask) -> dict:
    if isinstance(mask, dict):
        counts = mask['counts']
        if isinstance(counts, list):  # uncompressed
            h, w = mask['size']
            mask = mask_util.frPyObjects(mask, h, w)
        return dict(size=list(mask['size']), counts=mask['counts'].decode('ascii')
                    if isinstance(mask['counts'], bytes) else mask['counts'])
    rle = mask_util.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return dict(size=list(rle['size']), counts=rle['counts'].decode('ascii'))


def segm2json(img_ids, cat_ids, results) -> list[dict]:
    """COCO result records ``image_id, category_id, segmentation (RLE), score, bbox, area``
    of every mask, in dataset order (MMDetection 2.x's ``_segm2json`` records)."""
    records = []
    for i, per_image in enumerate(results):
        if not (isinstance(per_image, tuple) and len(per_image) == 2):
            raise DetforgeError(f"metric 'segm' needs (bbox_result, segm_result) per image; "
                                f'results[{i}] is a {type(per_image).__name__}')
        bbox_result, segm_result = per_image
        if len(segm_result) == 2 and isinstance(segm_result, tuple):
            segms, mask_scores = segm_result
        else:
            segms, mask_scores = segm_result, None
        if len(segms) != len(cat_ids) or len(bbox_result) != len(cat_ids):
            raise DetforgeError(f'results[{i}] has {len(bbox_result)} box and {len(segms)} mask '
                                f'lists but the dataset has {len(cat_ids)} classes')
        image_id = img_ids[i]
        image_id = int(image_id) if isinstance(image_id, np.integer) else image_id
        for label, (boxes, masks) in enumerate(zip(bbox_result, segms)):
            boxes = np.asarray(boxes).reshape(-1, 5)
            if len(masks) != len(boxes):
                raise DetforgeError(f'results[{i}] class {label}: {len(masks)} masks for '
                                    f'{len(boxes)} boxes')
            scores = boxes[:, 4] if mask_scores is None else \
                np.asarray(mask_scores[label], dtype=np.float64).reshape(-1)
            for mask, score in zip(masks, scores.tolist()):
                rle = _as_rle(mask)
                coded = dict(rle, counts=rle['counts'].encode('ascii'))
                records.append(dict(
                    image_id=image_id, category_id=int(cat_ids[label]), segmentation=rle,
                    score=float(score), area=float(mask_util.area(coded)),
                    bbox=[float(v) for v in mask_util.toBbox(coded)]))
    return records
