"""``build_dataloader`` and ``collate``: batches of uint8 images padded to a common size.

Reproducibility: with ``seed`` set, the sampler's order depends only on ``(seed, epoch)``
and the augmentation RNGs (``numpy``, ``random``, ``torch``) of each sample are seeded from
``(seed, epoch, position in the epoch)`` just before the sample is made, so the batches do
not depend on the number of workers, and a run resumed with ``sampler.set_epoch(e)`` and
``sampler.set_start(k)`` continues with exactly the batches it would have had.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from .errors import DatasetError
from .seeding import SeededIndex, apply_sample_seed, seed_all, seed_for_sample
from .samplers.dist import get_dist_info, sync_random_seed
from .samplers.group_sampler import DistributedGroupSampler, DistributedSampler

__all__ = ['build_dataloader', 'collate', 'worker_init_fn', 'SeededSampler', 'SeededDataset']

DEFAULT_SIZE_DIVISOR = 32
_NUMPY_DTYPE = {torch.uint8: np.uint8, torch.float32: np.float32, torch.float16: np.float16,
                torch.float64: np.float64, torch.int64: np.int64, torch.int32: np.int32}


# ---------------------------------------------------------------------------- collate
def _pad_stack(imgs: Sequence[torch.Tensor], metas: Sequence[dict]) -> torch.Tensor:
    """Pad ``(C, H, W)`` images to the batch max (and any recorded fixed size), rounded up to
    the size divisor, zeros, each at the top-left; update the metas' ``pad_shape`` and
    ``batch_input_shape``."""
    for img, meta in zip(imgs, metas):
        if not isinstance(img, torch.Tensor) or img.dim() != 3:
            raise DatasetError(
                f'collate: expected each image as a (C, H, W) tensor (end the pipeline with '
                f'DefaultFormatBundle or ImageToTensor + Collect); got '
                f'{type(img).__name__} {tuple(getattr(img, "shape", ()))} for {meta.get("filename")}')
    chans = {img.shape[0] for img in imgs}
    dtypes = {img.dtype for img in imgs}
    if len(chans) > 1 or len(dtypes) > 1 or imgs[0].dtype not in _NUMPY_DTYPE:
        raise DatasetError(f'collate: images of one batch differ in channels {sorted(chans)} or '
                           f'dtype {sorted(map(str, dtypes))}: '
                           f'{[m.get("filename") for m in metas]}')
    divisor = max([m.get('pad_size_divisor') or 0 for m in metas]) or DEFAULT_SIZE_DIVISOR
    h = max(max(img.shape[1] for img in imgs), max(m.get('pad_shape', (0, 0))[0] for m in metas))
    w = max(max(img.shape[2] for img in imgs), max(m.get('pad_shape', (0, 0))[1] for m in metas))
    hp, wp = -(-h // divisor) * divisor, -(-w // divisor) * divisor
    shape = (len(imgs), imgs[0].shape[0], hp, wp)
    if get_worker_info() is not None:
        # in a worker, write the batch straight into shared memory (as torch's default
        # collate does), saving the copy the worker queue would otherwise make
        storage = imgs[0]._typed_storage()._new_shared(int(np.prod(shape)), device='cpu')
        batch = imgs[0].new(storage).view(shape)
    else:
        batch = torch.from_numpy(np.empty(shape, dtype=_NUMPY_DTYPE[imgs[0].dtype]))
    # numpy does the copies: torch's copy_ into a strided slice is several times slower, and
    # much slower still when its intra-op threads compete for busy cores
    out = batch.numpy()
    for i, img in enumerate(imgs):
        h, w = img.shape[1:]
        out[i, :, :h, :w] = img.numpy()
        out[i, :, h:, :] = 0
        out[i, :, :h, w:] = 0
    for meta in metas:
        meta['pad_shape'] = (hp, wp, imgs[0].shape[0])
        meta['batch_input_shape'] = (hp, wp)
    return batch


def collate(samples: Sequence[dict], samples_per_gpu: int | None = None) -> dict[str, Any]:
    """Samples (outputs of ``Collect``) -> a batch dict.

    Training: ``img`` uint8 ``(B, 3, Hp, Wp)``, ``img_metas`` list of B dicts, and lists for
    the per-image tensors (``gt_bboxes``, ``gt_labels``, ...). Testing (values are lists, one
    per augmentation): ``img`` list of ``(B, 3, Hp, Wp)``, ``img_metas`` list of lists.
    """
    if not samples:
        raise DatasetError('collate: empty batch')
    if not all(isinstance(s, dict) for s in samples):
        raise DatasetError(f'collate: expected dict samples (the output of Collect), got '
                           f'{type(samples[0]).__name__}')
    test_time = isinstance(samples[0].get('img_metas'), list)  # one entry per augmentation
    metas = [s['img_metas'] if 'img_metas' in s else ([{}] * len(s['img']) if test_time else {})
             for s in samples]
    batch: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if key == 'img' and test_time:
            batch['img'] = [_pad_stack([v[a] for v in values], [m[a] for m in metas])
                            for a in range(len(values[0]))]
        elif key == 'img':
            batch['img'] = _pad_stack(values, metas)
        elif test_time and isinstance(values[0], list):
            batch[key] = [[v[a] for v in values] for a in range(len(values[0]))]
        else:
            batch[key] = values
    return batch


# ---------------------------------------------------------------------------- seeding
def worker_init_fn(worker_id: int, num_workers: int, rank: int, seed: int | None) -> None:
    """Seed each worker differently (numpy would otherwise repeat the parent's state in every
    worker): ``seed + num_workers * rank + worker_id``, or torch's per-worker seed.

    OpenCV's thread count is not touched here: changing it in a forked child whose parent
    already used OpenCV's thread pool deadlocks (the pool's threads were not forked).
    :func:`build_dataloader` turns OpenCV threading off in the parent instead.
    """
    if seed is None:
        s = torch.initial_seed() % 2 ** 32
    else:
        s = (seed + num_workers * rank + worker_id) % 2 ** 32
    seed_all(s)


class SeededSampler(Sampler):
    """Wrap one of our samplers: yield its indices tagged with per-sample seeds.

    Forwards ``set_epoch``, ``set_start``, ``epoch`` and ``len``.
    """

    def __init__(self, sampler, seed: int):
        self.sampler = sampler
        self.seed = int(seed)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def set_start(self, num_batches_to_skip: int) -> None:
        self.sampler.set_start(num_batches_to_skip)

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def __iter__(self):
        epoch = self.sampler.epoch
        for pos, idx in self.sampler.iter_with_positions():
            yield SeededIndex(idx, seed_for_sample(self.seed, epoch, pos))

    def __len__(self) -> int:
        return len(self.sampler)


class SeededDataset(Dataset):
    """Seed the augmentation RNGs from the index's ``rng_seed`` before making the sample.

    Only for data sets that do not do it themselves (ours call ``apply_sample_seed``)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx):
        return self.dataset[apply_sample_seed(idx)]

    def __getattr__(self, name):  # CLASSES, flag, evaluate ... of the wrapped data set
        if name == 'dataset':
            raise AttributeError(name)
        return getattr(self.dataset, name)


# ---------------------------------------------------------------------------- the loader
def build_dataloader(dataset, samples_per_gpu: int, workers_per_gpu: int, num_gpus: int = 1,
                     dist: bool = False, shuffle: bool = True, seed: int | None = None,
                     persistent_workers: bool = False, pin_memory: bool = False,
                     **kwargs) -> DataLoader:
    """A ``DataLoader`` as MMDetection 2.x builds it, with seeded, resumable samplers.

    Args:
        dataset: a detforge data set (with ``flag`` for aspect-ratio grouping).
        samples_per_gpu: batch size per GPU (per process when ``dist``).
        workers_per_gpu: loader worker processes per GPU.
        num_gpus: GPUs of one non-distributed process (batch = num_gpus * samples_per_gpu).
        dist: use :class:`DistributedGroupSampler` / :class:`DistributedSampler` with rank and
            world size from ``torch.distributed``.
        shuffle: group-sampled random batches (training) or the data set in order (testing).
        seed: makes the order and the augmentations reproducible (see the module docstring).
        kwargs: passed on to ``DataLoader`` (``drop_last``, ``prefetch_factor``...).

    ``loader.sampler`` has ``set_epoch`` and ``set_start``.
    """
    rank, world_size = get_dist_info()
    if dist:
        batch_size, num_workers = samples_per_gpu, workers_per_gpu
    else:
        batch_size, num_workers = num_gpus * samples_per_gpu, num_gpus * workers_per_gpu
        rank, world_size = 0, 1
    sampler_seed = sync_random_seed(seed)
    if shuffle:
        sampler = DistributedGroupSampler(dataset, batch_size, world_size, rank, seed=sampler_seed)
    else:
        sampler = DistributedSampler(dataset, world_size, rank, shuffle=False, seed=sampler_seed,
                                     samples_per_gpu=batch_size)
    if seed is not None:
        sampler = SeededSampler(sampler, seed)
        if not getattr(dataset, 'applies_sample_seeds', False):
            dataset = SeededDataset(dataset)
    init_fn = partial(worker_init_fn, num_workers=num_workers, rank=rank, seed=seed)
    if num_workers == 0:
        persistent_workers = False
    else:
        # Forked workers that touch OpenCV's thread pool deadlock if the parent used it;
        # with threading off in the parent there is no pool to inherit (MMDetection does
        # the same). Workers decode one image each anyway.
        import cv2
        cv2.setNumThreads(0)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      collate_fn=partial(collate, samples_per_gpu=samples_per_gpu),
                      pin_memory=pin_memory, worker_init_fn=init_fn,
                      persistent_workers=persistent_workers, **kwargs)
