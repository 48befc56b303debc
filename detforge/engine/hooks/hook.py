"""The hook protocol: methods the runner calls at fixed points of the loop."""
from __future__ import annotations

from detforge.registry import HOOKS

__all__ = ['Hook']


@HOOKS.register_module()
class Hook:
    """Base class of every hook; each method is a no-op unless overridden.

    The runner calls ``before_run``, then per epoch ``before_train_epoch`` (which by default
    calls ``before_epoch``), per iteration ``before_train_iter`` / ``after_train_iter``, then
    ``after_train_epoch`` and finally ``after_run``; the ``val`` versions likewise. A hook
    that has state worth keeping across a resume defines ``state_dict()`` and
    ``load_state_dict(state)``; the runner stores it in the checkpoint under ``hooks``.
    """
    stages = ('before_run', 'before_train_epoch', 'before_train_iter', 'after_train_iter',
              'after_train_epoch', 'before_val_epoch', 'before_val_iter', 'after_val_iter',
              'after_val_epoch', 'after_evaluate', 'after_run')

    def before_run(self, runner): pass

    def after_run(self, runner): pass

    def before_epoch(self, runner): pass

    def after_epoch(self, runner): pass

    def before_iter(self, runner): pass

    def after_iter(self, runner): pass

    def before_train_epoch(self, runner): self.before_epoch(runner)

    def before_val_epoch(self, runner): self.before_epoch(runner)

    def after_train_epoch(self, runner): self.after_epoch(runner)

    def after_val_epoch(self, runner): self.after_epoch(runner)

    def before_train_iter(self, runner): self.before_iter(runner)

    def before_val_iter(self, runner): self.before_iter(runner)

    def after_train_iter(self, runner): self.after_iter(runner)

    def after_val_iter(self, runner): self.after_iter(runner)

    def after_evaluate(self, runner, metrics: dict | None):
        """Called by the evaluation hook after each evaluation during training, on every
        rank, with the metrics it logged (``{'bbox_mAP': ..., ...}``; ``None`` on ranks other
        than 0, which do not evaluate). After the best checkpoint (``save_best``) is written.
        """

    # ------------------------------------------------------------------ helpers (mmcv names)
    @staticmethod
    def every_n_epochs(runner, n: int) -> bool:
        return n > 0 and (runner.epoch + 1) % n == 0

    @staticmethod
    def every_n_inner_iters(runner, n: int) -> bool:
        return n > 0 and (runner.inner_iter + 1) % n == 0

    @staticmethod
    def every_n_iters(runner, n: int) -> bool:
        return n > 0 and (runner.iter + 1) % n == 0

    @staticmethod
    def end_of_epoch(runner) -> bool:
        return runner.inner_iter + 1 == len(runner.data_loader)

    @staticmethod
    def is_last_epoch(runner) -> bool:
        return runner.epoch + 1 == runner.max_epochs

    @staticmethod
    def is_last_iter(runner) -> bool:
        return runner.iter + 1 == runner.max_iters

    def __repr__(self) -> str:
        return type(self).__name__
