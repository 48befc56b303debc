"""Per-sample random seeds: how augmentations stay reproducible across workers and resumes.

The loader's sampler yields :class:`SeededIndex` objects (ints that carry a seed drawn from
``(seed, epoch, position in the epoch)``); a data set calls :func:`apply_sample_seed` on the
index it receives, which seeds ``numpy``, ``random`` and ``torch`` before the pipeline runs.
"""
from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ['SeededIndex', 'seed_for_sample', 'seed_all', 'apply_sample_seed']


def seed_for_sample(seed: int, epoch: int, position: int) -> int:
    """A 32-bit seed from ``(seed, epoch, position in the epoch)``."""
    return int(np.random.SeedSequence([seed, epoch, position]).generate_state(1)[0])


def seed_all(s: int) -> None:
    """Seed ``numpy``, ``random`` and torch's CPU generator (the data pipeline's RNGs).

    Only the CPU generator: ``torch.manual_seed`` also queues a seed for every accelerator
    backend, recording a stack trace each time while CUDA is not initialised (about 1.5 ms,
    as long as resizing the image); transforms never draw from an accelerator's RNG.
    """
    np.random.seed(s)
    random.seed(s)
    torch.default_generator.manual_seed(s)


class SeededIndex(int):
    """A data set index that carries the RNG seed of its sample (otherwise a plain int)."""

    rng_seed: int

    def __new__(cls, index: int, rng_seed: int):
        obj = super().__new__(cls, index)
        obj.rng_seed = rng_seed
        return obj

    def __reduce__(self):  # keep the seed when the index is sent to a worker process
        return SeededIndex, (int(self), self.rng_seed)


def apply_sample_seed(idx) -> int:
    """Seed the RNGs if ``idx`` carries a seed; return the plain int index."""
    s = getattr(idx, 'rng_seed', None)
    if s is not None:
        seed_all(s)
    return int(idx)
