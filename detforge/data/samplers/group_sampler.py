"""Samplers whose order depends only on ``(seed, epoch)``, and that can resume mid-epoch.

All samplers here have ``set_epoch(epoch)`` and ``set_start(num_batches_to_skip)``; the start
applies to the next iteration only, so a run resumed at batch ``k`` of epoch ``e`` calls
``set_epoch(e); set_start(k)`` and gets exactly the batches it would have had. An epoch
that is iterated to the end advances ``epoch`` by one (so a loop that never calls
``set_epoch`` still sees a new order each epoch); an explicit ``set_epoch`` always wins.
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from detforge.registry import SAMPLERS

__all__ = ['GroupSampler', 'DistributedGroupSampler', 'DistributedSampler', 'EpochSampler']


class EpochSampler(Sampler):
    """Base: ``indices()`` gives this replica's full epoch; iteration skips ``start`` batches.

    ``iter_with_positions()`` yields ``(position in the epoch, index)``; the position counts
    the skipped samples too, so per-sample random seeds survive a resume.
    """

    def __init__(self, dataset, samples_per_gpu: int = 1, seed: int | None = 0):
        self.dataset = dataset
        self.samples_per_gpu = samples_per_gpu
        self.seed = 0 if seed is None else int(seed)
        self.epoch = 0
        self._start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_start(self, num_batches_to_skip: int) -> None:
        """Skip this many batches (of ``samples_per_gpu``) in the next iteration only."""
        self._start = int(num_batches_to_skip)

    def _generator(self) -> torch.Generator:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        return g

    def indices(self) -> list[int]:
        raise NotImplementedError

    def iter_with_positions(self) -> Iterator[tuple[int, int]]:
        first = self._start * self.samples_per_gpu
        self._start = 0
        epoch_indices = self.indices()
        for pos in range(first, len(epoch_indices)):
            yield pos, epoch_indices[pos]
        self.epoch += 1

    def __iter__(self) -> Iterator[int]:
        for _, idx in self.iter_with_positions():
            yield idx

    def __len__(self) -> int:
        return self.num_samples


@SAMPLERS.register_module()
class DistributedGroupSampler(EpochSampler):
    """Batches of ``samples_per_gpu`` images of one aspect-ratio group (``dataset.flag``),
    in random order, split over replicas (MMDetection 2.x's algorithm).

    Each group is shuffled and padded by repeating its own images to a multiple of
    ``samples_per_gpu * num_replicas``; the batches of all groups are then shuffled, and
    replica ``rank`` takes the ``rank``-th contiguous slice.
    """

    def __init__(self, dataset, samples_per_gpu: int = 1, num_replicas: int | None = None,
                 rank: int | None = None, seed: int | None = 0):
        super().__init__(dataset, samples_per_gpu, seed)
        if num_replicas is None or rank is None:
            from .dist import get_dist_info
            _rank, _world = get_dist_info()
            num_replicas = _world if num_replicas is None else num_replicas
            rank = _rank if rank is None else rank
        self.num_replicas = num_replicas
        self.rank = rank
        flag = getattr(dataset, 'flag', None)
        self.flag = (np.zeros(len(dataset), dtype=np.int64) if flag is None
                     else np.asarray(flag).astype(np.int64))
        self.group_sizes = np.bincount(self.flag) if len(self.flag) else np.zeros(0, np.int64)
        per = samples_per_gpu * num_replicas
        self.num_samples = sum(math.ceil(size / per) for size in self.group_sizes) * samples_per_gpu
        self.total_size = self.num_samples * num_replicas

    def indices(self) -> list[int]:
        g = self._generator()
        per = self.samples_per_gpu * self.num_replicas
        indices: list[int] = []
        for group, size in enumerate(self.group_sizes):
            if size == 0:
                continue
            members = np.flatnonzero(self.flag == group)
            members = members[torch.randperm(int(size), generator=g).numpy()].tolist()
            extra = math.ceil(size / per) * per - size
            members = members * (1 + extra // size) + members[:extra % size]
            indices.extend(members)
        spg = self.samples_per_gpu
        order = torch.randperm(len(indices) // spg, generator=g).tolist()
        indices = [indices[j] for b in order for j in range(b * spg, (b + 1) * spg)]
        offset = self.num_samples * self.rank
        return indices[offset:offset + self.num_samples]


@SAMPLERS.register_module()
class GroupSampler(DistributedGroupSampler):
    """:class:`DistributedGroupSampler` for one process (seeded, unlike MMDet's)."""

    def __init__(self, dataset, samples_per_gpu: int = 1, seed: int | None = 0):
        super().__init__(dataset, samples_per_gpu, num_replicas=1, rank=0, seed=seed)


@SAMPLERS.register_module()
class DistributedSampler(EpochSampler):
    """Every image once per epoch (padded by repetition to a multiple of the replicas),
    shuffled or in order; replica ``rank`` takes every ``num_replicas``-th index."""

    def __init__(self, dataset, num_replicas: int | None = None, rank: int | None = None,
                 shuffle: bool = True, seed: int | None = 0, samples_per_gpu: int = 1):
        super().__init__(dataset, samples_per_gpu, seed)
        if num_replicas is None or rank is None:
            from .dist import get_dist_info
            _rank, _world = get_dist_info()
            num_replicas = _world if num_replicas is None else num_replicas
            rank = _rank if rank is None else rank
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.num_samples = math.ceil(len(dataset) / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def indices(self) -> list[int]:
        n = len(self.dataset)
        if self.shuffle:
            indices = torch.randperm(n, generator=self._generator()).tolist()
        else:
            indices = list(range(n))
        if n:
            indices = (indices * math.ceil(self.total_size / n))[:self.total_size]
        return indices[self.rank:self.total_size:self.num_replicas]
