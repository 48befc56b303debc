"""Momentum schedules (mmcv 1.x semantics): ``momentum_config=dict(policy='cosine', ...)``.

SGD's ``momentum`` or Adam's ``betas[0]`` is set per param group from the base momentum
stored in ``initial_momentum``; warmup divides the scheduled value by the lr warmup factor.
"""
from __future__ import annotations

from detforge.registry import HOOKS, BuildError, build_from_cfg

from .hook import Hook
from .lr_updater import annealing_cos

__all__ = ['MomentumUpdaterHook', 'StepMomentumUpdaterHook',
           'CosineAnnealingMomentumUpdaterHook', 'build_momentum_hook']


def build_momentum_hook(cfg: dict) -> Hook:
    if not isinstance(cfg, dict):
        return cfg
    cfg = dict(cfg)
    if 'policy' in cfg:
        policy = cfg.pop('policy')
        if policy == policy.lower():
            policy = policy.title()
        cfg['type'] = policy + 'MomentumUpdaterHook'
    return build_from_cfg(cfg, HOOKS)


def _get(group):
    return group['momentum'] if 'momentum' in group else group['betas'][0]


def _set(group, value):
    if 'momentum' in group:
        group['momentum'] = value
    elif 'betas' in group:
        group['betas'] = (value, group['betas'][1])


class MomentumUpdaterHook(Hook):

    def __init__(self, by_epoch: bool = True, warmup: str | None = None,
                 warmup_iters: int = 0, warmup_ratio: float = 0.9):
        if warmup is not None and warmup not in ('constant', 'linear', 'exp'):
            raise BuildError(f'"{warmup}" is not a warmup type; use "constant", "linear" or '
                             f'"exp"')
        self.by_epoch = by_epoch
        self.warmup = warmup
        self.warmup_iters = warmup_iters
        self.warmup_ratio = warmup_ratio
        self.base_momentum: list = []
        self.regular_momentum: list = []

    def get_momentum(self, runner, base_momentum: float) -> float:
        raise NotImplementedError

    def _groups(self, runner):
        if isinstance(runner.optimizer, dict):
            raise BuildError('momentum schedules support a single optimizer')
        return [g for g in runner.optimizer.param_groups if 'momentum' in g or 'betas' in g]

    def _apply(self, runner, values):
        for group, value in zip(self._groups(runner), values):
            _set(group, value)

    def before_run(self, runner):
        for group in self._groups(runner):
            group.setdefault('initial_momentum', _get(group))
        self.base_momentum = [g['initial_momentum'] for g in self._groups(runner)]

    def get_regular_momentum(self, runner):
        return [self.get_momentum(runner, m) for m in self.base_momentum]

    def get_warmup_momentum(self, cur_iters):
        if self.warmup == 'constant':
            return [m / self.warmup_ratio for m in self.regular_momentum]
        if self.warmup == 'linear':
            k = (1 - cur_iters / self.warmup_iters) * (1 - self.warmup_ratio)
            return [m / (1 - k) for m in self.regular_momentum]
        k = self.warmup_ratio ** (1 - cur_iters / self.warmup_iters)
        return [m / k for m in self.regular_momentum]

    def before_train_epoch(self, runner):
        if not self.by_epoch:
            return
        self.regular_momentum = self.get_regular_momentum(runner)
        self._apply(runner, self.regular_momentum)

    def before_train_iter(self, runner):
        cur_iter = runner.iter
        if not self.by_epoch:
            self.regular_momentum = self.get_regular_momentum(runner)
            if self.warmup is None or cur_iter >= self.warmup_iters:
                self._apply(runner, self.regular_momentum)
            else:
                self._apply(runner, self.get_warmup_momentum(cur_iter))
        elif self.warmup is not None and cur_iter <= self.warmup_iters:
            if cur_iter == self.warmup_iters:
                self._apply(runner, self.regular_momentum)
            else:
                self._apply(runner, self.get_warmup_momentum(cur_iter))


@HOOKS.register_module()
class StepMomentumUpdaterHook(MomentumUpdaterHook):
    """``momentum = base * gamma ** k`` after ``k`` steps, bounded below by ``min_momentum``."""

    def __init__(self, step, gamma: float = 0.5, min_momentum: float | None = None, **kwargs):
        self.step = step
        self.gamma = gamma
        self.min_momentum = min_momentum
        super().__init__(**kwargs)

    def get_momentum(self, runner, base_momentum):
        import bisect
        progress = runner.epoch if self.by_epoch else runner.iter
        exp = progress // self.step if isinstance(self.step, int) else \
            bisect.bisect_right(list(self.step), progress)
        value = base_momentum * self.gamma ** exp
        return max(value, self.min_momentum) if self.min_momentum is not None else value


@HOOKS.register_module(name=['CosineAnnealingMomentumUpdaterHook',
                             'CosineMomentumUpdaterHook'])
class CosineAnnealingMomentumUpdaterHook(MomentumUpdaterHook):
    """Cosine from the base momentum to ``min_momentum`` (or ``base * min_momentum_ratio``)."""

    def __init__(self, min_momentum: float | None = None,
                 min_momentum_ratio: float | None = None, **kwargs):
        if (min_momentum is None) == (min_momentum_ratio is None):
            raise BuildError('give exactly one of min_momentum and min_momentum_ratio')
        self.min_momentum = min_momentum
        self.min_momentum_ratio = min_momentum_ratio
        super().__init__(**kwargs)

    def get_momentum(self, runner, base_momentum):
        if self.by_epoch:
            progress, max_progress = runner.epoch, runner.max_epochs
        else:
            progress, max_progress = runner.iter, runner.max_iters
        target = base_momentum * self.min_momentum_ratio \
            if self.min_momentum_ratio is not None else self.min_momentum
        return annealing_cos(base_momentum, target, progress / max_progress)
