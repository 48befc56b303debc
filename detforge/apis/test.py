"""Run a detector over a data loader: one process, or all ranks with ordered gathering."""
from __future__ import annotations

import logging
import os
import os.path as osp
import pickle
import shutil
import sys
import tempfile

import numpy as np
import torch
import torch.distributed as dist

from detforge.registry import DetforgeError

__all__ = ['single_gpu_test', 'multi_gpu_test', 'collect_results_cpu', 'collect_results_gpu']


def _progress(total: int, desc: str, enabled: bool = True):
    """A tqdm bar on stderr, drawn only when stderr is a terminal (not into log files or
    captured CI output) and ``TQDM_DISABLE`` is not set."""
    from tqdm import tqdm
    from detforge.engine.hooks.progress_bar import progress_enabled
    return tqdm(total=total, desc=desc, unit='img', file=sys.stderr,
                disable=not (enabled and progress_enabled()), dynamic_ncols=True, leave=True)


def _inference(model, data):
    from detforge.engine.dist_utils import unwrap_model
    with torch.no_grad():
        return unwrap_model(model)(return_loss=False, rescale=True, **data)


def _encode_masks(result: list) -> list:
    """Mask results ``(bbox_result, per class bool masks)`` -> ``(bbox_result, per class RLE
    dicts)`` (MMDetection 2.x keeps them encoded: a few bytes instead of ``h x w`` each)."""
    from detforge.structures.masks import encode_mask_results
    return [(r[0], encode_mask_results(r[1])) if isinstance(r, tuple) else r for r in result]


def _save_visualisations(data, result, dataset, out_dir, show, score_thr) -> None:
    import cv2
    from detforge.visualization.draw import draw_det_result
    imgs = data['img'][0] if isinstance(data['img'], (list, tuple)) else data['img']
    metas = data['img_metas'][0] if isinstance(data['img'], (list, tuple)) else data['img_metas']
    for img, meta, res in zip(imgs, metas, result):
        h, w = meta['img_shape'][:2]
        picture = img[:, :h, :w].permute(1, 2, 0).cpu().numpy().astype(np.uint8)
        picture = np.ascontiguousarray(picture)
        ori_h, ori_w = meta['ori_shape'][:2]
        picture = cv2.resize(picture, (ori_w, ori_h))
        out_file = osp.join(out_dir, meta['ori_filename']) if out_dir else None
        try:
            draw_det_result(picture, res, class_names=getattr(dataset, 'CLASSES', None),
                            score_thr=score_thr, out_file=out_file)
        except (OSError, DetforgeError, cv2.error) as e:  # a drawing never costs the results
            from detforge.visualization.draw import display_path
            logging.getLogger('detforge').warning('could not draw %s: %s',
                                                  display_path(out_file or ''),
                                                  display_path(str(e)))


def single_gpu_test(model, data_loader, show: bool = False, out_dir: str | None = None,
                    show_score_thr: float = 0.3) -> list:
    """Detections for every image of ``data_loader.dataset``, in dataset order: per image
    a list (per class) of ``(n, 5)`` arrays ``[x1, y1, x2, y2, score]`` in original-image
    pixels; for a mask detector ``(that list, per class lists of RLE dicts)``. A progress bar shows on stderr; ``out_dir`` saves drawn results."""
    model.eval()
    dataset = data_loader.dataset
    results = []
    # closed on an exception too, so that an error message starts on a line of its own
    with _progress(len(dataset), 'test') as bar:
        for data in data_loader:
            result = _inference(model, data)
            if show or out_dir:
                _save_visualisations(data, result, dataset, out_dir, show, show_score_thr)
            results.extend(_encode_masks(result))
            bar.update(len(result))
    return results


def multi_gpu_test(model, data_loader, tmpdir: str | None = None,
                   gpu_collect: bool = False) -> list | None:
    """Each rank tests its share (a non-shuffled ``DistributedSampler``: rank ``r`` gets
    images ``r, r + W, r + 2W ...``, padded to equal length); rank 0 returns all results in
    dataset order without the padding duplicates, the other ranks ``None``.

    ``gpu_collect`` gathers through the process group (``all_gather_object``);
    otherwise each rank writes its part to ``tmpdir`` (a disk every rank sees).
    """
    from detforge.engine.dist_utils import get_dist_info
    model.eval()
    dataset = data_loader.dataset
    rank, world_size = get_dist_info()
    results = []
    with _progress(len(dataset), 'test', enabled=rank == 0) as bar:
        for data in data_loader:
            result = _inference(model, data)
            results.extend(_encode_masks(result))
            bar.update(min(len(result) * world_size, len(dataset) - bar.n))
    if gpu_collect:
        return collect_results_gpu(results, len(dataset))
    return collect_results_cpu(results, len(dataset), tmpdir)


def _interleave(parts: list[list], size: int) -> list:
    ordered = []
    for items in zip(*parts):
        ordered.extend(items)
    # parts of unequal length (no padding) leave a tail on the first ranks
    longest = max(len(p) for p in parts)
    for i in range(min(len(p) for p in parts), longest):
        ordered.extend(p[i] for p in parts if i < len(p))
    return ordered[:size]


def collect_results_gpu(result_part: list, size: int) -> list | None:
    """All ranks' results on rank 0, in dataset order, through the process group; ``None``
    on the other ranks.

    A gather to rank 0 only (``gather_object``), not an all-gather: the other ranks never
    hold the results of the whole data set (MMDetection 2.x all-gathers padded byte
    tensors, so every rank holds every part for a moment). With NCCL, each rank's current
    CUDA device must be set, as for training.
    """
    from detforge.engine.dist_utils import get_dist_info
    rank, world_size = get_dist_info()
    if world_size == 1:
        return result_part[:size]
    parts = [None] * world_size if rank == 0 else None
    dist.gather_object(result_part, parts, dst=0)
    return _interleave(parts, size) if rank == 0 else None


def collect_results_cpu(result_part: list, size: int, tmpdir: str | None = None) -> list | None:
    """All ranks' results on rank 0, in dataset order, through files in ``tmpdir`` (a
    folder every rank sees; a new temporary one by default); ``None`` on the other ranks.
    Each rank writes its part; only rank 0 reads them (MMDetection's
    ``collect_results_cpu``), and it removes the folder."""
    from detforge.engine.dist_utils import broadcast_object, get_dist_info
    rank, world_size = get_dist_info()
    if world_size == 1:
        return result_part[:size]
    if rank == 0:
        if tmpdir is None:
            tmpdir = tempfile.mkdtemp(prefix='detforge_test_')
        else:
            os.makedirs(tmpdir, exist_ok=True)
    tmpdir = broadcast_object(tmpdir if rank == 0 else None)
    # our own temporary files, written and read by this job only
    with open(osp.join(tmpdir, f'part_{rank}.pkl'), 'wb') as f:
        pickle.dump(result_part, f, protocol=pickle.HIGHEST_PROTOCOL)
    dist.barrier()
    if rank != 0:
        dist.barrier()
        return None
    parts = [result_part]  # rank 0's own part is in memory already
    for i in range(1, world_size):
        with open(osp.join(tmpdir, f'part_{i}.pkl'), 'rb') as f:
            parts.append(pickle.load(f))
    ordered = _interleave(parts, size)
    shutil.rmtree(tmpdir, ignore_errors=True)
    dist.barrier()
    return ordered
