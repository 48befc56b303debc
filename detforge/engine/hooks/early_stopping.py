"""Stop training when a monitored metric has stopped improving (MMEngine's EarlyStoppingHook)."""
from __future__ import annotations

import math

import numpy as np

from detforge.registry import HOOKS, DetforgeError

from ..dist_utils import broadcast_object, get_dist_info
from .hook import Hook

__all__ = ['EarlyStoppingHook']


@HOOKS.register_module()
class EarlyStoppingHook(Hook):
    """``custom_hooks = [dict(type='EarlyStoppingHook', monitor='bbox_mAP', patience=3)]``.

    Watches one value after every evaluation of ``evaluation=dict(...)`` (``bbox_mAP``,
    ``mAP``, ...) or, for a loss, after every ``('val', 1)`` phase of the workflow
    (``monitor='loss'``: the mean validation loss of the phase). With ``rule='greater'`` a
    value improves when it is at least ``min_delta`` above the best so far (``'less'``: at
    least ``min_delta`` below); after ``patience`` checks in a row
    without improvement the run ends. The semantics, defaults and checks are MMEngine's
    (``min_delta=0.1``, ``patience=5``, ``check_finite``, ``stopping_threshold``, ``strict``);
    set ``min_delta`` for your metric's scale (0.1 is 10 AP points on a 0-1 mAP).

    How it stops: it sets ``runner.stop_training``; the runner finishes the current epoch (or
    iteration), runs ``after_run`` (final plots, loggers closed) and returns normally. The
    reason goes to the log in one line. When stopped after an evaluation, this epoch's
    checkpoint is written if the checkpoint interval skipped it (as ``save_last`` would have
    at the planned end), so ``latest.pth`` is the model that was evaluated last. Its state
    (best value, checks without improvement) is saved in checkpoints and restored on resume.

    Args:
        monitor: the metric key as the evaluation logs it (``bbox_mAP``, ``mAP``,
            ``bbox_mAP_50``, ``loss`` ...).
        rule: ``'greater'`` or ``'less'``; ``None`` infers it from the name (``mAP``/``AP``/
            ``acc``... greater, ``loss`` less).
        min_delta: the least change that counts as an improvement.
        strict: raise when ``monitor`` is not among the metrics (else warn and skip).
        check_finite: stop when the value is NaN or infinite.
        patience: checks without improvement before stopping.
        stopping_threshold: stop as soon as the value is better than this.
    """
    rule_map = {'greater': lambda x, y: x > y, 'less': lambda x, y: x < y}
    _default_greater_keys = ['acc', 'top', 'AR@', 'auc', 'precision', 'mAP', 'mDice', 'mIoU',
                             'mAcc', 'aAcc', 'AP']
    _default_less_keys = ['loss']

    def __init__(self, monitor: str, rule: str | None = None, min_delta: float = 0.1,
                 strict: bool = False, check_finite: bool = True, patience: int = 5,
                 stopping_threshold: float | None = None):
        if not isinstance(monitor, str) or not monitor:
            raise DetforgeError(f'EarlyStoppingHook.monitor must be a metric name such as '
                                f"'bbox_mAP', got {monitor!r}")
        if rule is None:
            rule = self._infer_rule(monitor)
        elif rule not in self.rule_map:
            raise DetforgeError(f"EarlyStoppingHook.rule must be 'greater' or 'less', got "
                                f'{rule!r}')
        if not isinstance(patience, int) or patience < 1:
            raise DetforgeError(f'EarlyStoppingHook.patience must be a positive int, got '
                                f'{patience!r}')
        if min_delta < 0:
            raise DetforgeError(f'EarlyStoppingHook.min_delta must be >= 0, got {min_delta!r}')
        self.monitor = monitor
        self.rule = rule
        # the improvement test is compare(best + min_delta, current) failing, as MMEngine
        self.min_delta = min_delta if rule == 'greater' else -min_delta
        self.strict = strict
        self.check_finite = check_finite
        self.patience = patience
        self.stopping_threshold = stopping_threshold
        self.wait_count = 0
        self.best_score = -math.inf if rule == 'greater' else math.inf

    @classmethod
    def _infer_rule(cls, monitor: str) -> str:
        name = monitor.lower()
        greater = [k.lower() for k in cls._default_greater_keys]
        less = [k.lower() for k in cls._default_less_keys]
        if name in greater or (name not in less and any(k in name for k in greater)):
            return 'greater'
        if any(k in name for k in less):
            return 'less'
        raise DetforgeError(f'EarlyStoppingHook cannot tell whether {monitor!r} is better '
                            f"when greater or less; set rule='greater' or rule='less'")

    # ----------------------------------------------------------------- the decision
    def check(self, score: float) -> tuple[bool, str]:
        """Update the state with a new value; return ``(stop, reason)``."""
        compare = self.rule_map[self.rule]
        if self.check_finite and not math.isfinite(score):
            return True, (f'{self.monitor} = {score} is not finite (best so far '
                          f'{self.best_score:.4f})')
        if self.stopping_threshold is not None and compare(score, self.stopping_threshold):
            self.best_score = score
            return True, (f'{self.monitor} = {score:.4f} is {self.rule} than the '
                          f'stopping_threshold {self.stopping_threshold}')
        if compare(self.best_score + self.min_delta, score):
            self.wait_count += 1
            if self.wait_count >= self.patience:
                return True, (f'{self.monitor} did not improve by at least '
                              f'{abs(self.min_delta)} in the last {self.wait_count} '
                              f'evaluations (best {self.best_score:.4f}, last {score:.4f})')
            return False, ''
        self.best_score = score
        self.wait_count = 0
        return False, ''

    def _observe(self, runner, metrics: dict | None, after: str) -> bool:
        """Rank 0 decides from ``metrics``; every rank gets the decision."""
        stop, reason = False, ''
        if get_dist_info()[0] == 0 and metrics is not None:
            if self.monitor not in metrics:
                message = (f'EarlyStoppingHook: monitor {self.monitor!r} is not among the '
                           f'metrics {sorted(metrics)}')
                if self.strict:
                    raise DetforgeError(message + ' (strict=True)')
                runner.logger.warning(message + '; early stopping skipped this time')
            else:
                stop, reason = self.check(float(metrics[self.monitor]))
        stop, reason = broadcast_object((stop, reason))
        if stop:
            runner.stop_training = True
            runner.logger.info('early stopping %s: %s; training ends here', after, reason)
        return stop

    # ----------------------------------------------------------------- hook stages
    def after_evaluate(self, runner, metrics):
        if self._is_loss():
            return  # a loss is watched after the ('val', n) phase (same test on every rank)
        unit = 'epoch' if runner.max_epochs is not None else 'iteration'
        number = (runner.epoch if unit == 'epoch' else runner.iter) + 1
        if self._observe(runner, metrics, f'after the evaluation of {unit} {number}'):
            self._save_this_checkpoint(runner)

    def after_val_epoch(self, runner):
        """A ``('val', n)`` workflow phase: the mean of each logged loss over the phase."""
        if runner.mode != 'val':
            return
        buffer = runner.log_buffer
        metrics = {}
        for key, values in buffer.val_history.items():
            counts = np.asarray(buffer.n_history[key], dtype=np.float64)
            metrics[key] = float(np.sum(np.asarray(values) * counts) / np.sum(counts))
        if self.monitor not in metrics and not self._is_loss():
            return  # an evaluation metric: checked in after_evaluate
        self._observe(runner, metrics, f'after the validation losses of epoch {runner.epoch}')

    def _is_loss(self) -> bool:
        return 'loss' in self.monitor.lower()

    @staticmethod
    def _save_this_checkpoint(runner) -> None:
        """The checkpoint hook ran before the evaluation; when its interval skipped this
        epoch (iteration), write it now, as ``save_last`` would at the planned end."""
        from .checkpoint import CheckpointHook
        for hook in runner.hooks:
            if not isinstance(hook, CheckpointHook) or not hook.save_last:
                continue
            if hook.by_epoch != (runner.max_epochs is not None):
                continue
            saved = (hook.every_n_epochs(runner, hook.interval) or hook.is_last_epoch(runner)
                     if hook.by_epoch else hook.every_n_iters(runner, hook.interval)
                     or hook.is_last_iter(runner))
            if not saved:
                runner.logger.info('early stopping: saving the checkpoint of this %s',
                                   'epoch' if hook.by_epoch else 'iteration')
                hook._save_checkpoint(runner)

    # ----------------------------------------------------------------- resume
    def state_dict(self) -> dict:
        return {'best_score': float(self.best_score), 'wait_count': int(self.wait_count)}

    def load_state_dict(self, state: dict) -> None:
        self.best_score = float(state.get('best_score', self.best_score))
        self.wait_count = int(state.get('wait_count', 0))
