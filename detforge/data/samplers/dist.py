"""Rank and world size from torch.distributed (``(0, 1)`` when it is not initialised)."""
from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

__all__ = ['get_dist_info', 'sync_random_seed']


def get_dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def sync_random_seed(seed: int | None = None) -> int:
    """``seed`` if given, else a random seed drawn on rank 0 and broadcast to all ranks
    (so the samplers of all replicas agree on the permutation)."""
    if seed is not None:
        return int(seed)
    seed = int(np.random.randint(2 ** 31))
    rank, world = get_dist_info()
    if world == 1:
        return seed
    t = torch.tensor(seed if rank == 0 else 0, dtype=torch.int64)
    if dist.get_backend() == 'nccl':
        t = t.cuda()
    dist.broadcast(t, src=0)
    return int(t.item())
