"""Tell the sampler the epoch before each epoch (the runners already do; kept for configs
that name the hook)."""
from __future__ import annotations

from detforge.registry import HOOKS

from ..runner.base_runner import set_sampler_epoch
from .hook import Hook

__all__ = ['DistSamplerSeedHook']


@HOOKS.register_module()
class DistSamplerSeedHook(Hook):

    def before_epoch(self, runner):
        set_sampler_epoch(runner.data_loader, runner.epoch)
