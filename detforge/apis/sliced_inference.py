"""Sliced inference: small objects on large images (as SAHI's "sliced prediction").

A detector resizes every image to its test scale (e.g. 1333x800), so an object of 20 pixels
in a 4000-pixel photo shrinks to a few pixels and is missed. Sliced inference instead cuts
the image into overlapping tiles, detects in each tile (each tile resized by the test
pipeline, so objects get *bigger*), shifts the boxes back to image coordinates and merges
what several tiles found::

    >>> result = sliced_inference(model, 'large.jpg', slice_size=512, overlap=0.2)
    >>> # same format as inference_detector: a list over classes of (n, 5) arrays

The steps, one function each:

1. :func:`slice_windows`: tiles ``slice_size`` square, neighbours overlapping by
   ``round(overlap * slice_size)`` pixels; the last tile of a row/column is aligned to the
   image border (it overlaps its neighbour more), so every tile is full size and every pixel
   is covered. An image side smaller than a tile gets one tile of that side's length.
2. Per-tile detection, ``batch_size`` tiles per forward pass (optionally plus one pass on the
   whole image, SAHI's "standard + sliced" prediction, which keeps large objects whole).
3. :func:`merge_detections`: ``'nms'`` is class-wise NMS (``torchvision.ops.batched_nms``) at
   ``iou_thr``; ``'merge'`` is greedy non-maximum *merging* (SAHI's GREEDYNMM): boxes of a
   class are visited by score and each kept box absorbs the later boxes that overlap it by
   intersection-over-smaller-area >= ``iou_thr``, becoming their enclosing box (score: the
   highest). NMS keeps both halves of an object cut by a tile border when neither tile sees
   it whole (the halves hardly overlap by IoU); merging joins them into one box.

Divergences from SAHI: tiles are square and aligned to the border as described (SAHI also
aligns the last tile); no post-processing filter of boxes touching a tile's inner edge
(SAHI has none either); no per-image cap on the number of merged boxes (``max_per_img`` of
the model's test_cfg applies per tile). Box detectors only: a mask detector's masks are not
sliced (a clear error).
"""
from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np
import torch
from torchvision.ops import batched_nms, box_area

from detforge.registry import DetforgeError

__all__ = ['slice_windows', 'merge_detections', 'sliced_inference', 'SlicedDetector',
           'sliced_dataset_test', 'MERGE_MODES']

MERGE_MODES = ('nms', 'merge')

# detect(list of BGR uint8 (h, w, 3) tiles) -> per tile, a list over classes of (n, 5) arrays
DetectFn = Callable[[list], list]


def _axis_starts(length: int, size: int, stride: int) -> list[int]:
    """Start offsets along one side: every ``stride`` pixels, the last one flush with the
    border (so no tile sticks out of the image and the border is covered)."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size, stride))
    starts.append(length - size)
    return starts


def slice_windows(height: int, width: int, slice_size: int, overlap: float) -> np.ndarray:
    """Tiles covering a ``height x width`` image.

    Args:
        slice_size: tile side in pixels (a side shorter than this gets one tile its length).
        overlap: fraction of ``slice_size`` that neighbouring tiles share, in ``[0, 1)``.

    Returns:
        ``(N, 4)`` int64 ``[x1, y1, x2, y2]`` (pixels, x2/y2 exclusive), row by row.
    """
    if slice_size < 1:
        raise DetforgeError(f'the slice size must be a positive number of pixels, got '
                            f'{slice_size}')
    if not 0 <= overlap < 1:
        raise DetforgeError(f'the slice overlap is a fraction of the slice in [0, 1), got '
                            f'{overlap}')
    stride = slice_size - int(round(overlap * slice_size))
    stride = max(stride, 1)
    xs = _axis_starts(width, slice_size, stride)
    ys = _axis_starts(height, slice_size, stride)
    return np.array([[x, y, min(x + slice_size, width), min(y + slice_size, height)]
                     for y in ys for x in xs], dtype=np.int64).reshape(-1, 4)


def _greedy_merge(boxes: torch.Tensor, scores: torch.Tensor, ios_thr: float):
    """One class: ``(boxes (n, 4), scores (n,))`` -> merged ``(boxes (m, 4), scores (m,))``,
    highest score first. A box absorbs later (lower-scoring) boxes whose intersection over
    the smaller box's area is >= ``ios_thr``; absorbed boxes absorb nothing themselves."""
    order = torch.argsort(scores, descending=True, stable=True)
    boxes, scores = boxes[order], scores[order]
    area = box_area(boxes)
    absorbed = torch.zeros(len(boxes), dtype=torch.bool)
    out_boxes, out_scores = [], []
    for i in range(len(boxes)):
        if absorbed[i]:
            continue
        # one row of the overlap matrix at a time: O(n) memory for thousands of tile boxes
        lt = torch.maximum(boxes[i, :2], boxes[:, :2])
        rb = torch.minimum(boxes[i, 2:], boxes[:, 2:])
        inter = (rb - lt).clamp(min=0).prod(dim=1)
        ios = inter / torch.minimum(area[i], area).clamp(min=1e-6)
        members = (ios >= ios_thr) & ~absorbed
        members[:i] = False
        members[i] = True
        absorbed |= members
        group = boxes[members]
        out_boxes.append(torch.cat([group[:, :2].min(dim=0).values,
                                    group[:, 2:].max(dim=0).values]))
        out_scores.append(scores[i])
    if not out_boxes:
        return boxes.new_zeros((0, 4)), scores.new_zeros((0,))
    return torch.stack(out_boxes), torch.stack(out_scores)


def merge_detections(dets: np.ndarray, labels: np.ndarray, num_classes: int,
                     mode: str = 'nms', iou_thr: float = 0.5) -> list[np.ndarray]:
    """Merge detections pooled from several tiles.

    Args:
        dets: ``(n, 5)`` ``[x1, y1, x2, y2, score]`` in image pixels.
        labels: ``(n,)`` 0-based class indices.
        mode: ``'nms'`` (class-wise NMS at IoU ``iou_thr``) or ``'merge'`` (greedy merging
            of boxes overlapping by intersection-over-smaller >= ``iou_thr``).

    Returns:
        A list over ``num_classes`` classes of ``(m, 5)`` float32 arrays, by score.
    """
    if mode not in MERGE_MODES:
        raise DetforgeError(f'unknown merge mode {mode!r} for sliced inference; expected one '
                            f'of {MERGE_MODES}')
    boxes = torch.as_tensor(np.asarray(dets, np.float32).reshape(-1, 5))
    labels = torch.as_tensor(np.asarray(labels, np.int64).reshape(-1))
    out = []
    if mode == 'nms':
        keep = batched_nms(boxes[:, :4], boxes[:, 4], labels, iou_thr)  # by score
        boxes, labels = boxes[keep], labels[keep]
        for c in range(num_classes):
            out.append(boxes[labels == c].numpy())
        return out
    for c in range(num_classes):
        mine = boxes[labels == c]
        merged, scores = _greedy_merge(mine[:, :4], mine[:, 4], iou_thr)
        out.append(torch.cat([merged, scores[:, None]], dim=1).numpy().astype(np.float32))
    return out


def _flat(result, where: str) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(result, tuple):
        raise DetforgeError(f'sliced inference is for box detectors; {where} returned masks '
                            '(a mask detector): run it without --slice')
    per_class = [np.asarray(r, np.float32).reshape(-1, 5) for r in result]
    dets = np.concatenate(per_class) if per_class else np.zeros((0, 5), np.float32)
    labels = np.repeat(np.arange(len(per_class)), [len(r) for r in per_class])
    return dets, labels


def sliced_inference(model, img, slice_size: int = 512, overlap: float = 0.2,
                     batch_size: int = 4, merge: str = 'nms', iou_thr: float = 0.5,
                     full_image: bool = False, detect: DetectFn | None = None,
                     num_classes: int | None = None) -> list[np.ndarray]:
    """Detect objects in one image tile by tile.

    Args:
        model: from :func:`~detforge.apis.inference.init_detector` (unused when ``detect``
            is given).
        img: an image path or a BGR uint8 ``(H, W, 3)`` array.
        slice_size, overlap: see :func:`slice_windows`.
        batch_size: tiles per forward pass.
        merge, iou_thr: see :func:`merge_detections`.
        full_image: also detect on the whole image (resized by the test pipeline as usual)
            and merge those boxes with the tiles' ("standard + sliced" prediction).
        detect: ``detect(tiles) -> per tile a list over classes of (n, 5) arrays``; default
            :func:`~detforge.apis.inference.inference_detector` on ``model``.
        num_classes: classes in the output (default: from the first tile's result).

    Returns:
        As ``inference_detector`` for one image: a list over classes of ``(n, 5)`` float32
        ``[x1, y1, x2, y2, score]`` arrays in the image's pixels.
    """
    if batch_size < 1:
        raise DetforgeError(f'the tile batch size must be at least 1, got {batch_size}')
    if detect is None:
        from detforge.apis.inference import inference_detector

        def detect(tiles):
            return inference_detector(model, tiles)
    if not isinstance(img, np.ndarray):
        from detforge.visualization.draw import read_image
        img = read_image(os.fspath(img))
    height, width = img.shape[:2]
    windows = slice_windows(height, width, slice_size, overlap)
    pooled_dets, pooled_labels = [], []
    for start in range(0, len(windows), batch_size):
        chunk = windows[start:start + batch_size]
        # contiguous copies: the test pipeline may write into its input
        tiles = [np.ascontiguousarray(img[y1:y2, x1:x2]) for x1, y1, x2, y2 in chunk.tolist()]
        for (x1, y1, _, _), result in zip(chunk.tolist(), detect(tiles)):
            if num_classes is None:
                num_classes = len(result) if not isinstance(result, tuple) else 0
            dets, labels = _flat(result, 'the model')
            dets[:, [0, 2]] += x1  # tile pixels -> image pixels
            dets[:, [1, 3]] += y1
            pooled_dets.append(dets)
            pooled_labels.append(labels)
    if full_image and len(windows) > 1:  # one tile *is* the full image
        result = detect([img])[0]
        dets, labels = _flat(result, 'the model')
        pooled_dets.append(dets)
        pooled_labels.append(labels)
    dets = np.concatenate(pooled_dets)
    labels = np.concatenate(pooled_labels)
    return merge_detections(dets, labels, num_classes or 0, merge, iou_thr)


class SlicedDetector:
    """``inference_detector``-like callable for the commands: ``self(imgs) -> results``.

    Holds the slicing settings so that ``infer`` and ``test`` run images (paths or arrays)
    through :func:`sliced_inference` one at a time.
    """

    def __init__(self, model, slice_size: int, overlap: float = 0.2, batch_size: int = 4,
                 merge: str = 'nms', iou_thr: float = 0.5, full_image: bool = False):
        slice_windows(1, 1, slice_size, overlap)  # argument errors now, before any image
        if batch_size < 1:
            raise DetforgeError(f'the tile batch size must be at least 1, got {batch_size}')
        if merge not in MERGE_MODES:
            raise DetforgeError(f'unknown merge mode {merge!r}; expected one of {MERGE_MODES}')
        self.model = model
        self.kwargs = dict(slice_size=slice_size, overlap=overlap, batch_size=batch_size,
                           merge=merge, iou_thr=iou_thr, full_image=full_image)

    def __call__(self, imgs: Sequence) -> list:
        num_classes = len(getattr(self.model, 'CLASSES', None) or ()) or None
        return [sliced_inference(self.model, img, num_classes=num_classes, **self.kwargs)
                for img in imgs]

    def __repr__(self) -> str:
        args = ', '.join(f'{k}={v!r}' for k, v in self.kwargs.items())
        return f'{type(self).__name__}({args})'


def sliced_dataset_test(detector: SlicedDetector, dataset, out_dir: str | None = None,
                        show_score_thr: float = 0.3) -> list:
    """``single_gpu_test`` with sliced inference: per image of ``dataset`` (dataset order,
    its original file, not the test pipeline's resized copy), a list over classes of
    ``(n, 5)`` arrays. ``out_dir`` gets each image drawn with its detections."""
    import logging

    import cv2

    from detforge.apis.test import _progress
    from detforge.visualization.draw import display_path, draw_det_result, read_image
    results = []
    with _progress(len(dataset), 'test (sliced)') as bar:
        for index, info in enumerate(dataset.data_infos):
            prefix = getattr(dataset, 'img_prefix', None) or ''
            path = os.path.join(prefix, info['filename']) if prefix else info['filename']
            img = read_image(path)
            result = detector([img])[0]
            if out_dir:
                out_file = os.path.join(out_dir, info['filename'])
                try:
                    draw_det_result(img, result, class_names=getattr(dataset, 'CLASSES', None),
                                    score_thr=show_score_thr, out_file=out_file)
                except (OSError, DetforgeError, cv2.error) as e:  # never costs the results
                    logging.getLogger('detforge').warning('could not draw %s: %s',
                                                          display_path(out_file),
                                                          display_path(str(e)))
            results.append(result)
            bar.update(1)
    return results
