"""Learning-rate schedules as hooks (mmcv 1.x semantics), plus Detectron2's two schedulers.

Every lr is a pure function of ``runner.iter`` / ``runner.epoch`` and the base lr stored
in each param group's ``initial_lr``, so a resumed run recomputes exactly the same value.

``lr_config=dict(policy='step', step=[8, 11])`` builds ``StepLrUpdaterHook(step=[8, 11])``:
the policy name is title-cased when written in lower case and suffixed with
``LrUpdaterHook``; a name registered as is (``'WarmupMultiStepLR'``) is used directly.
"""
from __future__ import annotations

import bisect
import math
from typing import Sequence

from detforge.registry import HOOKS, BuildError, build_from_cfg

from .hook import Hook

__all__ = ['LrUpdaterHook', 'FixedLrUpdaterHook', 'StepLrUpdaterHook', 'ExpLrUpdaterHook',
           'PolyLrUpdaterHook', 'InvLrUpdaterHook', 'CosineAnnealingLrUpdaterHook',
           'FlatCosineAnnealingLrUpdaterHook', 'CosineRestartLrUpdaterHook',
           'OneCycleLrUpdaterHook', 'WarmupMultiStepLrUpdaterHook',
           'WarmupCosineLrUpdaterHook', 'annealing_cos', 'build_lr_hook']


def annealing_cos(start: float, end: float, factor: float, weight: float = 1.) -> float:
    """Cosine from ``weight * start + (1 - weight) * end`` at ``factor=0`` to ``end`` at 1."""
    cos_out = math.cos(math.pi * factor) + 1
    return end + 0.5 * weight * (start - end) * cos_out


def annealing_linear(start: float, end: float, factor: float) -> float:
    return start + (end - start) * factor


def build_lr_hook(lr_config: dict) -> Hook:
    """``lr_config`` (with ``policy`` or ``type``) -> an lr hook."""
    if not isinstance(lr_config, dict):
        return lr_config
    cfg = dict(lr_config)
    if 'policy' in cfg:
        policy = cfg.pop('policy')
        if not isinstance(policy, str):
            raise BuildError(f'lr_config.policy must be a name such as "step", got {policy!r}',
                             lr_config)
        if HOOKS.get(policy) is not None and policy.endswith(('LR', 'Hook')):
            cfg['type'] = policy
        else:
            if policy == policy.lower():
                policy = policy.title()
            cfg['type'] = policy + 'LrUpdaterHook'
            if HOOKS.get(cfg['type']) is None:
                names = sorted(n[:-len('LrUpdaterHook')] for n in HOOKS.keys()
                               if n.endswith('LrUpdaterHook') and n != 'LrUpdaterHook')
                raise BuildError(f'unknown lr policy {lr_config["policy"]!r}; known: '
                                 f'{", ".join(names)} (lower-case names are title-cased: '
                                 f'"step" -> Step)', lr_config)
    return build_from_cfg(cfg, HOOKS)


class LrUpdaterHook(Hook):
    """Base of the lr schedules.

    Args:
        by_epoch: the schedule counts epochs (else iterations).
        warmup: ``None``, ``'constant'``, ``'linear'`` or ``'exp'``.
        warmup_iters: length of the warmup, in iterations (epochs with ``warmup_by_epoch``).
        warmup_ratio: the lr at warmup start, as a fraction of the scheduled lr.
        warmup_by_epoch: ``warmup_iters`` counts epochs.

    Warmup (at iteration ``i < warmup_iters``, scheduled lr ``r``):
    constant ``r * warmup_ratio``; linear ``r * (1 - (1 - i / warmup_iters) * (1 -
    warmup_ratio))``; exp ``r * warmup_ratio ** (1 - i / warmup_iters)``.
    """

    def __init__(self, by_epoch: bool = True, warmup: str | None = None, warmup_iters: int = 0,
                 warmup_ratio: float = 0.1, warmup_by_epoch: bool = False):
        if warmup is not None:
            if warmup not in ('constant', 'linear', 'exp'):
                raise BuildError(f'"{warmup}" is not a warmup type; use "constant", "linear" or '
                                 f'"exp"')
            if warmup_iters <= 0:
                raise BuildError('warmup_iters must be a positive integer when warmup is set')
            if not 0 < warmup_ratio <= 1.0:
                raise BuildError(f'warmup_ratio must be in (0, 1], got {warmup_ratio}')
        self.by_epoch = by_epoch
        self.warmup = warmup
        self.warmup_iters = warmup_iters
        self.warmup_ratio = warmup_ratio
        self.warmup_by_epoch = warmup_by_epoch
        if warmup_by_epoch:
            self.warmup_epochs = warmup_iters
            self.warmup_iters = None
        else:
            self.warmup_epochs = None
        self.base_lr: list | dict = []
        self.regular_lr: list | dict = []

    # ------------------------------------------------------------ to override
    def get_lr(self, runner, base_lr: float) -> float:
        raise NotImplementedError

    # ------------------------------------------------------------ machinery
    def _set_lr(self, runner, lr_groups) -> None:
        if isinstance(runner.optimizer, dict):
            for name, optim in runner.optimizer.items():
                for group, lr in zip(optim.param_groups, lr_groups[name]):
                    group['lr'] = lr
        else:
            for group, lr in zip(runner.optimizer.param_groups, lr_groups):
                group['lr'] = lr

    def get_regular_lr(self, runner):
        if isinstance(runner.optimizer, dict):
            return {k: [self.get_lr(runner, lr) for lr in base]
                    for k, base in self.base_lr.items()}
        return [self.get_lr(runner, lr) for lr in self.base_lr]

    def get_warmup_lr(self, cur_iters: int):
        def warm(regular):
            if self.warmup == 'constant':
                return [lr * self.warmup_ratio for lr in regular]
            if self.warmup == 'linear':
                k = (1 - cur_iters / self.warmup_iters) * (1 - self.warmup_ratio)
                return [lr * (1 - k) for lr in regular]
            k = self.warmup_ratio ** (1 - cur_iters / self.warmup_iters)  # exp
            return [lr * k for lr in regular]
        if isinstance(self.regular_lr, dict):
            return {k: warm(v) for k, v in self.regular_lr.items()}
        return warm(self.regular_lr)

    def before_run(self, runner) -> None:
        # 'initial_lr' survives in a resumed optimizer's state, so the base lr is the
        # configured one even after the schedule has changed 'lr'
        if isinstance(runner.optimizer, dict):
            self.base_lr = {}
            for name, optim in runner.optimizer.items():
                for group in optim.param_groups:
                    group.setdefault('initial_lr', group['lr'])
                self.base_lr[name] = [g['initial_lr'] for g in optim.param_groups]
        else:
            for group in runner.optimizer.param_groups:
                group.setdefault('initial_lr', group['lr'])
            self.base_lr = [g['initial_lr'] for g in runner.optimizer.param_groups]

    def before_train_epoch(self, runner) -> None:
        if self.warmup_iters is None:
            self.warmup_iters = self.warmup_epochs * len(runner.data_loader)
        if not self.by_epoch:
            return
        self.regular_lr = self.get_regular_lr(runner)
        self._set_lr(runner, self.regular_lr)

    def before_train_iter(self, runner) -> None:
        cur_iter = runner.iter
        if self.warmup_iters is None:  # IterBasedRunner with warmup_by_epoch
            self.warmup_iters = self.warmup_epochs * len(runner.data_loader)
        if not self.by_epoch:
            self.regular_lr = self.get_regular_lr(runner)
            if self.warmup is None or cur_iter >= self.warmup_iters:
                self._set_lr(runner, self.regular_lr)
            else:
                self._set_lr(runner, self.get_warmup_lr(cur_iter))
        else:
            if not self.regular_lr:  # by-epoch schedule under an IterBasedRunner
                self.regular_lr = self.get_regular_lr(runner)
            if self.warmup is None or cur_iter > self.warmup_iters:
                return
            if cur_iter == self.warmup_iters:
                self._set_lr(runner, self.regular_lr)
            else:
                self._set_lr(runner, self.get_warmup_lr(cur_iter))


def _progress(hook, runner) -> tuple[int, int]:
    if hook.by_epoch:
        return runner.epoch, runner.max_epochs
    return runner.iter, runner.max_iters


@HOOKS.register_module()
class FixedLrUpdaterHook(LrUpdaterHook):
    """The base lr throughout (with optional warmup)."""

    def get_lr(self, runner, base_lr):
        return base_lr


@HOOKS.register_module(name=['StepLrUpdaterHook', 'MultistepLrUpdaterHook',
                             'MultiStepLrUpdaterHook'])
class StepLrUpdaterHook(LrUpdaterHook):
    """``lr = base_lr * gamma ** k`` where ``k`` is the number of steps passed.

    Args:
        step: an int (decay every ``step`` epochs/iters) or a list of milestones.
        gamma: decay factor.
        min_lr: lower bound of the lr, if given.
    """

    def __init__(self, step: int | Sequence[int], gamma: float = 0.1,
                 min_lr: float | None = None, **kwargs):
        if isinstance(step, (list, tuple)):
            if not all(isinstance(s, int) and s > 0 for s in step):
                raise BuildError(f'step milestones must be positive integers, got {step}')
        elif not (isinstance(step, int) and step > 0):
            raise BuildError(f'step must be a positive int or a list of them, got {step!r}')
        self.step = step
        self.gamma = gamma
        self.min_lr = min_lr
        super().__init__(**kwargs)

    def get_lr(self, runner, base_lr):
        progress = runner.epoch if self.by_epoch else runner.iter
        if isinstance(self.step, int):
            exp = progress // self.step
        else:
            exp = bisect.bisect_right(list(self.step), progress)
        lr = base_lr * self.gamma ** exp
        return max(lr, self.min_lr) if self.min_lr is not None else lr


@HOOKS.register_module()
class ExpLrUpdaterHook(LrUpdaterHook):
    """``lr = base_lr * gamma ** progress``."""

    def __init__(self, gamma: float, **kwargs):
        self.gamma = gamma
        super().__init__(**kwargs)

    def get_lr(self, runner, base_lr):
        progress = runner.epoch if self.by_epoch else runner.iter
        return base_lr * self.gamma ** progress


@HOOKS.register_module()
class PolyLrUpdaterHook(LrUpdaterHook):
    """``lr = (base_lr - min_lr) * (1 - progress / max_progress) ** power + min_lr``."""

    def __init__(self, power: float = 1., min_lr: float = 0., **kwargs):
        self.power = power
        self.min_lr = min_lr
        super().__init__(**kwargs)

    def get_lr(self, runner, base_lr):
        progress, max_progress = _progress(self, runner)
        coeff = (1 - progress / max_progress) ** self.power
        return (base_lr - self.min_lr) * coeff + self.min_lr


@HOOKS.register_module()
class InvLrUpdaterHook(LrUpdaterHook):
    """``lr = base_lr * (1 + gamma * progress) ** -power``."""

    def __init__(self, gamma: float, power: float = 1., **kwargs):
        self.gamma = gamma
        self.power = power
        super().__init__(**kwargs)

    def get_lr(self, runner, base_lr):
        progress = runner.epoch if self.by_epoch else runner.iter
        return base_lr * (1 + self.gamma * progress) ** (-self.power)


def _target_lr(hook, base_lr):
    return base_lr * hook.min_lr_ratio if hook.min_lr_ratio is not None else hook.min_lr


def _check_min_lr(min_lr, min_lr_ratio):
    if (min_lr is None) == (min_lr_ratio is None):
        raise BuildError('give exactly one of min_lr and min_lr_ratio')


@HOOKS.register_module(name=['CosineAnnealingLrUpdaterHook', 'CosineLrUpdaterHook'])
class CosineAnnealingLrUpdaterHook(LrUpdaterHook):
    """Cosine from ``base_lr`` to ``min_lr`` (or ``base_lr * min_lr_ratio``) over the run:
    ``lr = target + 0.5 * (base_lr - target) * (1 + cos(pi * progress / max_progress))``.
    ``policy='cosine'`` is this schedule."""

    def __init__(self, min_lr: float | None = None, min_lr_ratio: float | None = None,
                 **kwargs):
        if min_lr is None and min_lr_ratio is None:
            min_lr = 0.
        _check_min_lr(min_lr, min_lr_ratio)
        self.min_lr = min_lr
        self.min_lr_ratio = min_lr_ratio
        super().__init__(**kwargs)

    def get_lr(self, runner, base_lr):
        progress, max_progress = _progress(self, runner)
        return annealing_cos(base_lr, _target_lr(self, base_lr), progress / max_progress)


@HOOKS.register_module()
class FlatCosineAnnealingLrUpdaterHook(LrUpdaterHook):
    """Flat at ``base_lr`` for ``start_percent`` of the run, then cosine to the target."""

    def __init__(self, start_percent: float = 0.75, min_lr: float | None = None,
                 min_lr_ratio: float | None = None, **kwargs):
        if min_lr is None and min_lr_ratio is None:
            min_lr = 0.
        _check_min_lr(min_lr, min_lr_ratio)
        if not 0 <= start_percent <= 1:
            raise BuildError(f'start_percent must be in [0, 1], got {start_percent}')
        self.start_percent = start_percent
        self.min_lr = min_lr
        self.min_lr_ratio = min_lr_ratio
        super().__init__(**kwargs)

    def get_lr(self, runner, base_lr):
        progress, max_progress = _progress(self, runner)
        start = round(max_progress * self.start_percent)
        if progress < start:
            return base_lr
        factor = (progress - start) / (max_progress - start)
        return annealing_cos(base_lr, _target_lr(self, base_lr), factor)


@HOOKS.register_module()
class CosineRestartLrUpdaterHook(LrUpdaterHook):
    """Cosine annealing restarted at the end of each period (SGDR).

    Args:
        periods: length of each cycle, in epochs/iterations.
        restart_weights: the peak of each cycle as a fraction of ``base_lr``.
    """

    def __init__(self, periods: Sequence[int], restart_weights: Sequence[float] = (1,),
                 min_lr: float | None = None, min_lr_ratio: float | None = None, **kwargs):
        if min_lr is None and min_lr_ratio is None:
            min_lr = 0.
        _check_min_lr(min_lr, min_lr_ratio)
        if len(periods) != len(restart_weights):
            raise BuildError('periods and restart_weights must have the same length')
        self.periods = list(periods)
        self.restart_weights = list(restart_weights)
        self.min_lr = min_lr
        self.min_lr_ratio = min_lr_ratio
        self.cumulative_periods = [sum(self.periods[:i + 1]) for i in range(len(self.periods))]
        super().__init__(**kwargs)

    def get_lr(self, runner, base_lr):
        progress = runner.epoch if self.by_epoch else runner.iter
        idx = bisect.bisect_right(self.cumulative_periods, progress)
        if idx >= len(self.periods):
            raise ValueError(f'progress {progress} is past the last period '
                             f'{self.cumulative_periods}')
        nearest_restart = 0 if idx == 0 else self.cumulative_periods[idx - 1]
        alpha = min((progress - nearest_restart) / self.periods[idx], 1)
        return annealing_cos(base_lr, _target_lr(self, base_lr), alpha,
                             self.restart_weights[idx])


@HOOKS.register_module()
class OneCycleLrUpdaterHook(LrUpdaterHook):
    """The one-cycle policy (per iteration): from ``max_lr / div_factor`` up to ``max_lr``
    over ``pct_start`` of the steps, then down to ``initial / final_div_factor``.

    Args:
        max_lr: peak lr (a float, or one per param group).
        total_steps: default ``runner.max_iters``.
        anneal_strategy: ``'cos'`` or ``'linear'``.
        three_phase: go back to the initial lr before the final annealing.
    """

    def __init__(self, max_lr, total_steps: int | None = None, pct_start: float = 0.3,
                 anneal_strategy: str = 'cos', div_factor: float = 25,
                 final_div_factor: float = 1e4, three_phase: bool = False, **kwargs):
        kwargs.setdefault('by_epoch', False)
        if kwargs['by_epoch']:
            raise BuildError('OneCycle is an iteration schedule; by_epoch must be False')
        if not 0 <= pct_start <= 1:
            raise BuildError(f'pct_start must be in [0, 1], got {pct_start}')
        if anneal_strategy not in ('cos', 'linear'):
            raise BuildError(f"anneal_strategy must be 'cos' or 'linear', got "
                             f'{anneal_strategy!r}')
        self.max_lr = max_lr
        self.total_steps = total_steps
        self.pct_start = pct_start
        self.anneal_func = annealing_cos if anneal_strategy == 'cos' else annealing_linear
        self.div_factor = div_factor
        self.final_div_factor = final_div_factor
        self.three_phase = three_phase
        self.lr_phases: list = []
        super().__init__(**kwargs)

    def before_run(self, runner):
        total = self.total_steps if self.total_steps is not None else runner.max_iters
        optim = runner.optimizer
        if isinstance(optim, dict):
            raise BuildError('OneCycleLrUpdaterHook supports a single optimizer')
        max_lrs = self.max_lr if isinstance(self.max_lr, (list, tuple)) else \
            [self.max_lr] * len(optim.param_groups)
        for group, max_lr in zip(optim.param_groups, max_lrs):
            group.setdefault('initial_lr', max_lr / self.div_factor)
        self.base_lr = [g['initial_lr'] for g in optim.param_groups]
        if self.three_phase:
            self.lr_phases = [
                (float(self.pct_start * total) - 1, 1, self.div_factor),
                (float(2 * self.pct_start * total) - 2, self.div_factor, 1),
                (total - 1, 1, 1 / self.final_div_factor)]
        else:
            self.lr_phases = [
                (float(self.pct_start * total) - 1, 1, self.div_factor),
                (total - 1, self.div_factor, 1 / self.final_div_factor)]

    def get_lr(self, runner, base_lr):
        curr_iter = runner.iter
        start_iter = 0
        for i, (end_iter, start_mult, end_mult) in enumerate(self.lr_phases):
            if curr_iter <= end_iter or i == len(self.lr_phases) - 1:
                pct = (curr_iter - start_iter) / (end_iter - start_iter)
                return self.anneal_func(base_lr * start_mult, base_lr * end_mult, pct)
            start_iter = end_iter
        raise AssertionError('unreachable')


# ------------------------------------------------------------------- Detectron2's schedulers
def _d2_warmup_factor(method: str, it: int, warmup_iters: int, warmup_factor: float) -> float:
    """Detectron2's ``_get_warmup_factor_at_iter``."""
    if it >= warmup_iters:
        return 1.0
    if method == 'constant':
        return warmup_factor
    if method == 'linear':
        alpha = it / warmup_iters
        return warmup_factor * (1 - alpha) + alpha
    raise BuildError(f'unknown warmup_method {method!r}; use "linear" or "constant"')


@HOOKS.register_module(name=['WarmupMultiStepLrUpdaterHook', 'WarmupMultiStepLR'])
class WarmupMultiStepLrUpdaterHook(LrUpdaterHook):
    """Detectron2's ``WarmupMultiStepLR`` (per iteration)::

        lr = base_lr * warmup_factor(iter) * gamma ** bisect_right(steps, iter)

    where the warmup factor rises linearly from ``warmup_factor`` to 1 over
    ``warmup_iters`` (or stays at ``warmup_factor`` with ``warmup_method='constant'``).
    ``steps`` may also be given as ``milestones``.
    """

    def __init__(self, steps: Sequence[int] | None = None, gamma: float = 0.1,
                 warmup_factor: float = 0.001, warmup_iters: int = 1000,
                 warmup_method: str = 'linear', milestones: Sequence[int] | None = None,
                 by_epoch: bool = False):
        steps = steps if steps is not None else milestones
        if steps is None or list(steps) != sorted(steps):
            raise BuildError(f'steps must be an increasing list of iterations, got {steps}')
        self.steps = list(steps)
        self.gamma = gamma
        self.d2_warmup_factor = warmup_factor
        self.d2_warmup_iters = warmup_iters
        self.warmup_method = warmup_method
        super().__init__(by_epoch=by_epoch)

    def get_lr(self, runner, base_lr):
        it = runner.epoch if self.by_epoch else runner.iter
        factor = _d2_warmup_factor(self.warmup_method, runner.iter, self.d2_warmup_iters,
                                   self.d2_warmup_factor)
        return base_lr * factor * self.gamma ** bisect.bisect_right(self.steps, it)

    def before_train_iter(self, runner):
        # the warmup is part of the formula, so the lr is recomputed every iteration
        self._set_lr(runner, self.get_regular_lr(runner))


@HOOKS.register_module(name=['WarmupCosineLrUpdaterHook', 'WarmupCosineLR'])
class WarmupCosineLrUpdaterHook(WarmupMultiStepLrUpdaterHook):
    """Detectron2's ``WarmupCosineLR`` (per iteration)::

        lr = base_lr * warmup_factor(iter) * 0.5 * (1 + cos(pi * iter / max_iters))

    (0 once ``iter >= max_iters``).
    """

    def __init__(self, warmup_factor: float = 0.001, warmup_iters: int = 1000,
                 warmup_method: str = 'linear', max_iters: int | None = None,
                 by_epoch: bool = False):
        if by_epoch:
            raise BuildError('WarmupCosineLR is an iteration schedule; by_epoch must be False')
        super().__init__(steps=[], warmup_factor=warmup_factor, warmup_iters=warmup_iters,
                         warmup_method=warmup_method)
        self.cos_max_iters = max_iters

    def get_lr(self, runner, base_lr):
        max_iters = self.cos_max_iters or runner.max_iters
        factor = _d2_warmup_factor(self.warmup_method, runner.iter, self.d2_warmup_iters,
                                   self.d2_warmup_factor)
        if runner.iter >= max_iters:
            return 0.0
        return base_lr * factor * 0.5 * (1.0 + math.cos(math.pi * runner.iter / max_iters))
