"""Exponential moving average of the weights, used for evaluation and checkpoints."""
from __future__ import annotations

import math

import torch

from detforge.registry import HOOKS, BuildError

from ..dist_utils import unwrap_model
from .hook import Hook

__all__ = ['EMAHook', 'ExpMomentumEMAHook']


@HOOKS.register_module()
class EMAHook(Hook):
    """``custom_hooks=[dict(type='EMAHook', momentum=0.0002, priority=49)]``.

    After each step, ``ema = (1 - m) * ema + m * param`` for every floating parameter and
    buffer with ``m = min(momentum, (1 + iter) / (warm_up + iter))``. At the end of each
    epoch the EMA weights are swapped into the model (so the checkpoint and evaluation
    after it use them) and swapped back before the next epoch. Under ``IterBasedRunner``
    (checkpoints and evaluation every N iterations, no epochs) the swap is done after each
    iteration's update and undone before the next iteration. The EMA copy is saved in
    checkpoints through :meth:`state_dict`, so a resume continues it exactly.

    Register it with a priority above ``NORMAL`` (e.g. 49) so that the swap happens before
    the checkpoint and evaluation hooks run.
    """

    def __init__(self, momentum: float = 0.0002, interval: int = 1, warm_up: int = 100,
                 resume_from: str | None = None):
        if not 0 < momentum < 1:
            raise BuildError(f'EMAHook momentum must be in (0, 1), got {momentum}')
        self.momentum = momentum
        self.interval = interval
        self.warm_up = warm_up
        self.ema: dict[str, torch.Tensor] = {}
        self.swapped = False
        self.by_iter = False  # set in before_run: the runner counts iterations, not epochs

    def _params(self, runner) -> dict[str, torch.Tensor]:
        return {k: v for k, v in unwrap_model(runner.model).state_dict(keep_vars=True).items()
                if v.dtype.is_floating_point}

    def before_run(self, runner):
        from ..runner.iter_based_runner import IterBasedRunner  # the runner imports the hooks
        self.by_iter = isinstance(runner, IterBasedRunner)
        params = self._params(runner)
        if not self.ema:
            self.ema = {k: v.detach().clone() for k, v in params.items()}
        else:  # resumed: the saved EMA copy is already there; match devices
            self.ema = {k: v.to(params[k].device) for k, v in self.ema.items()}

    def get_momentum(self, runner) -> float:
        return min(self.momentum, (1 + runner.iter) / (self.warm_up + runner.iter))

    @torch.no_grad()
    def after_train_iter(self, runner):
        if runner.iter % self.interval == 0:
            m = self.get_momentum(runner)
            for name, param in self._params(runner).items():
                self.ema[name].mul_(1 - m).add_(param.detach(), alpha=m)
        if self.by_iter and not self.swapped:
            # the checkpoint and evaluation hooks of this iteration (lower priority) see the
            # EMA weights; before_train_iter swaps the trained ones back
            self._swap(runner)

    def before_train_iter(self, runner):
        if self.swapped:
            self._swap(runner)

    @torch.no_grad()
    def _swap(self, runner):
        for name, param in self._params(runner).items():
            tmp = param.detach().clone()
            param.data.copy_(self.ema[name])
            self.ema[name].copy_(tmp)
        self.swapped = not self.swapped

    def after_train_epoch(self, runner):
        if not self.swapped:
            self._swap(runner)

    def before_train_epoch(self, runner):
        if self.swapped:
            self._swap(runner)

    def state_dict(self) -> dict:
        return {'ema': {k: v.detach().cpu() for k, v in self.ema.items()},
                'swapped': self.swapped}

    def load_state_dict(self, state: dict) -> None:
        self.ema = dict(state['ema'])
        self.swapped = bool(state['swapped'])


@HOOKS.register_module()
class ExpMomentumEMAHook(EMAHook):
    """YOLOX's schedule: ``m = (1 - momentum) * exp(-(1 + iter) / total_iter) + momentum``."""

    def __init__(self, resume_from=None, momentum: float = 0.0002, total_iter: int = 2000,
                 **kwargs):
        super().__init__(momentum=momentum, **kwargs)
        self.total_iter = total_iter

    def get_momentum(self, runner) -> float:
        return (1 - self.momentum) * math.exp(-(1 + runner.iter) / self.total_iter) \
            + self.momentum
