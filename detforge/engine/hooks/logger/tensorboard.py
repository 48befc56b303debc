"""Scalars to TensorBoard (``WORK_DIR/tf_logs`` by default)."""
from __future__ import annotations

import os.path as osp

from detforge.registry import HOOKS, DetforgeError

from ...dist_utils import master_only
from .base import LoggerHook

__all__ = ['TensorboardLoggerHook']


@HOOKS.register_module()
class TensorboardLoggerHook(LoggerHook):

    def __init__(self, log_dir: str | None = None, interval: int = 10,
                 ignore_last: bool = True, reset_flag: bool = False, by_epoch: bool = True):
        super().__init__(interval, ignore_last, reset_flag, by_epoch)
        self.log_dir = log_dir
        self.writer = None

    @master_only
    def before_run(self, runner):
        super().before_run(runner)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise DetforgeError('TensorboardLoggerHook needs tensorboard: pip install '
                                'tensorboard (or remove it from log_config.hooks)') from e
        if self.log_dir is None:
            self.log_dir = osp.join(runner.work_dir, 'tf_logs')
        self.writer = SummaryWriter(self.log_dir)

    @master_only
    def log(self, runner):
        tags = self.get_loggable_tags(runner, allow_text=True)
        step = self.get_iter(runner)
        for tag, val in tags.items():
            if isinstance(val, str):
                self.writer.add_text(tag, val, step)
            else:
                self.writer.add_scalar(tag, val, step)

    @master_only
    def after_run(self, runner):
        if self.writer is not None:
            self.writer.close()
