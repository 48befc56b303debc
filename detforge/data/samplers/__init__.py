"""Samplers (registry ``SAMPLERS``): aspect-ratio groups, distributed, exact resume.

Every module of this package is imported here (importing the package registers its
classes); a new module must be added below.
"""
from .dist import get_dist_info, sync_random_seed
from .group_sampler import GroupSampler, DistributedGroupSampler, DistributedSampler, EpochSampler

__all__ = ['get_dist_info', 'sync_random_seed', 'GroupSampler', 'DistributedGroupSampler',
           'DistributedSampler', 'EpochSampler']
