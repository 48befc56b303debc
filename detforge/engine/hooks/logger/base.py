"""When to write the averaged log values (shared by the text and TensorBoard loggers)."""
from __future__ import annotations

import numbers

import torch

from ..hook import Hook

__all__ = ['LoggerHook']


class LoggerHook(Hook):
    """Average the log buffer every ``interval`` iterations and call :meth:`log`.

    Args:
        interval: iterations between lines.
        ignore_last: skip the short last interval of an epoch.
        reset_flag: clear the averaged values after logging (set on the last logger).
        by_epoch: count ``interval`` within the epoch (else over the whole run).
    """

    def __init__(self, interval: int = 10, ignore_last: bool = True, reset_flag: bool = False,
                 by_epoch: bool = True):
        self.interval = interval
        self.ignore_last = ignore_last
        self.reset_flag = reset_flag
        self.by_epoch = by_epoch

    def log(self, runner):
        raise NotImplementedError

    @staticmethod
    def is_scalar(value, include_torch: bool = True) -> bool:
        if isinstance(value, numbers.Number):
            return True
        return include_torch and isinstance(value, torch.Tensor) and value.numel() == 1

    @staticmethod
    def get_mode(runner) -> str:
        if runner.mode == 'train':
            return 'train' if 'time' in runner.log_buffer.output else 'val'
        if runner.mode == 'val':
            return 'val'
        raise ValueError(f"runner mode should be 'train' or 'val', got {runner.mode!r}")

    @staticmethod
    def get_epoch(runner) -> int:
        if runner.mode == 'train':
            return runner.epoch + 1
        return runner.epoch  # the val phase follows the epoch counted already

    def get_iter(self, runner, inner_iter: bool = False) -> int:
        if self.by_epoch and inner_iter:
            return runner.inner_iter + 1
        return runner.iter + 1

    def get_lr_tags(self, runner) -> dict:
        lrs = runner.current_lr()
        if isinstance(lrs, dict):
            return {f'learning_rate/{k}': v[0] for k, v in lrs.items()}
        return {'learning_rate': lrs[0]}

    def get_momentum_tags(self, runner) -> dict:
        momentums = runner.current_momentum()
        if isinstance(momentums, dict):
            return {f'momentum/{k}': v[0] for k, v in momentums.items()}
        return {'momentum': momentums[0]}

    def get_loggable_tags(self, runner, allow_text: bool = False,
                          tags_to_skip=('time', 'data_time')) -> dict:
        tags = {}
        for var, val in runner.log_buffer.output.items():
            if var in tags_to_skip:
                continue
            if self.is_scalar(val) or (allow_text and isinstance(val, str)):
                tags[f'{var}/{self.get_mode(runner)}'] = val
        tags.update(self.get_lr_tags(runner))
        tags.update(self.get_momentum_tags(runner))
        return tags

    def before_run(self, runner):
        for hook in runner.hooks[::-1]:
            if isinstance(hook, LoggerHook):
                hook.reset_flag = True
                break

    def before_epoch(self, runner):
        runner.log_buffer.clear()

    def after_train_iter(self, runner):
        if self.by_epoch and self.every_n_inner_iters(runner, self.interval):
            runner.log_buffer.average(self.interval)
        elif not self.by_epoch and self.every_n_iters(runner, self.interval):
            runner.log_buffer.average(self.interval)
        elif self.end_of_epoch(runner) and not self.ignore_last:
            runner.log_buffer.average(self.interval)
        if runner.log_buffer.ready:
            self.log(runner)
            if self.reset_flag:
                runner.log_buffer.clear_output()

    def after_train_epoch(self, runner):
        if runner.log_buffer.ready:
            self.log(runner)
            if self.reset_flag:
                runner.log_buffer.clear_output()

    def after_val_epoch(self, runner):
        runner.log_buffer.average()
        self.log(runner)
        if self.reset_flag:
            runner.log_buffer.clear_output()
