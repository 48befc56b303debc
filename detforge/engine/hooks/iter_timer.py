"""Log ``data_time`` (waiting for the loader) and ``time`` (the whole iteration)."""
from __future__ import annotations

import time

from detforge.registry import HOOKS

from .hook import Hook

__all__ = ['IterTimerHook']


@HOOKS.register_module()
class IterTimerHook(Hook):

    def before_epoch(self, runner):
        self.t = time.time()

    def before_iter(self, runner):
        if not hasattr(self, 't'):
            self.t = time.time()
        runner.log_buffer.update({'data_time': time.time() - self.t})

    def after_iter(self, runner):
        runner.log_buffer.update({'time': time.time() - self.t})
        self.t = time.time()
