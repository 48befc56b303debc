"""A tqdm progress bar over the iterations of each training epoch, with ETA."""
from __future__ import annotations

import contextlib
import datetime
import sys
import time

from detforge.registry import HOOKS

from ..dist_utils import get_dist_info
from .hook import Hook

__all__ = ['ProgressBarHook', 'progress_enabled']


def progress_enabled(enable: bool | None = None, stream=None) -> bool:
    """Whether a progress bar should draw: ``enable`` when given, else only when ``stream``
    (stderr) is a terminal, so that log files and CI output get no carriage-return spam.
    The environment variable ``TQDM_DISABLE=1`` turns every bar off (tqdm's own switch)."""
    import os
    if os.environ.get('TQDM_DISABLE', '').lower() in ('1', 'true', 'yes'):
        return False
    if enable is not None:
        return bool(enable)
    stream = stream if stream is not None else sys.stderr
    return bool(getattr(stream, 'isatty', lambda: False)())


@HOOKS.register_module()
class ProgressBarHook(Hook):
    """``progress_bar = dict(enable=None)`` in a config (``detforge train --no-progress``
    switches it off): one bar per training epoch on stderr, e.g. ::

        Epoch 3/12:  41%|████      | 30/73 [00:51<01:13, 1.71s/it, loss=0.912, eta=0:19:02]

    ``eta`` is for the whole run (the bar's own remaining time is for the epoch). Log lines
    written while the bar is drawn go above it (``tqdm.contrib.logging``), so the text log
    and the bar do not tear each other. Rank 0 only. An ``IterBasedRunner`` gets one bar for
    the whole run.

    Args:
        enable: ``True`` / ``False``; ``None`` (default) draws only when stderr is a
            terminal (never into a log file or a CI job's captured output).
        loss_key: the ``log_vars`` entry shown after the bar.
        mininterval: least seconds between redraws (tqdm's).
    """

    def __init__(self, enable: bool | None = None, loss_key: str = 'loss',
                 mininterval: float = 0.5):
        self.enable = enable
        self.loss_key = loss_key
        self.mininterval = mininterval
        self._bar = None
        self._redirect = None
        self._t0 = None
        self._start_iter = 0

    # -- which bar
    def _active(self) -> bool:
        return get_dist_info()[0] == 0 and progress_enabled(self.enable)

    def _open(self, runner, total: int, initial: int, desc: str) -> None:
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm
        self._close()
        # console handlers of the detforge logger print through tqdm.write while the bar
        # is up (file handlers are untouched)
        self._redirect = logging_redirect_tqdm(loggers=[runner.logger])
        self._redirect.__enter__()
        self._bar = tqdm(total=total, initial=initial, desc=desc, unit='it', file=sys.stderr,
                         dynamic_ncols=True, leave=True, mininterval=self.mininterval)

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._redirect is not None:
            self._redirect.__exit__(None, None, None)
            self._redirect = None

    # -- hook stages
    def before_run(self, runner):
        self._t0 = time.monotonic()
        self._start_iter = runner.iter
        if self._active() and runner.max_epochs is None and runner.max_iters:
            self._open(runner, runner.max_iters, runner.iter, 'Iter')

    def before_train_epoch(self, runner):
        if not self._active() or runner.max_epochs is None:
            return
        loader = runner.data_loader
        start = getattr(runner, 'epoch_start_pos', 0)  # a resumed, half-done epoch
        self._open(runner, len(loader), start, f'Epoch {runner.epoch + 1}/{runner.max_epochs}')

    def after_train_iter(self, runner):
        if self._bar is None:
            return
        postfix = {}
        loss = (runner.outputs or {}).get('log_vars', {}).get(self.loss_key)
        if loss is not None:
            postfix[self.loss_key] = f'{float(loss):.3f}'
        eta = self.run_eta(runner)
        if eta is not None:
            postfix['eta'] = eta
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(1)
        if runner.max_epochs is not None and self.end_of_epoch(runner):
            self._close()  # before the evaluation of the epoch draws its own bar

    def after_train_epoch(self, runner):
        if runner.max_epochs is not None:
            self._close()

    def after_run(self, runner):
        self._close()

    def run_eta(self, runner) -> str | None:
        """Time left for the whole run, from the mean time per iteration so far (evaluation
        time included), as ``H:MM:SS``."""
        done = runner.iter + 1 - self._start_iter
        if self._t0 is None or done <= 0 or not runner.max_iters:
            return None
        per_iter = (time.monotonic() - self._t0) / done
        left = max(runner.max_iters - runner.iter - 1, 0)
        return str(datetime.timedelta(seconds=int(per_iter * left)))

    def __del__(self):
        with contextlib.suppress(Exception):
            self._close()
