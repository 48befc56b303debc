"""Train for a number of epochs, following a workflow such as ``[('train', 1), ('val', 1)]``."""
from __future__ import annotations

import itertools
import platform

import torch

from detforge.registry import RUNNERS, DetforgeError

from ..checkpoint import preserve_rng
from .base_runner import BaseRunner, set_sampler_epoch, set_sampler_start

__all__ = ['EpochBasedRunner', 'Runner']


@RUNNERS.register_module()
class EpochBasedRunner(BaseRunner):
    """One pass over the train loader per epoch; ``runner.iter`` counts iterations overall
    and ``runner.inner_iter`` within the epoch."""

    _in_train_iter = False
    _resume_pos = 0

    def train(self, data_loader, **kwargs) -> None:
        self.model.train()
        self.mode = 'train'
        self.data_loader = data_loader
        self._max_iters = self._max_epochs * len(data_loader)
        set_sampler_epoch(data_loader, self._epoch)
        start, self._resume_pos = self._resume_pos, 0
        self.epoch_start_pos = start  # > 0 in a resumed, half-done epoch (progress bars)
        self.call_hook('before_train_epoch')
        batches = self._batches_from(data_loader, start)
        for i, data_batch in enumerate(batches, start=start):
            self.data_batch = data_batch
            self._inner_iter = i
            self._in_train_iter = True
            self.call_hook('before_train_iter')
            self.run_step(data_batch, **kwargs)
            self.call_hook('after_train_iter')
            self._in_train_iter = False
            del self.data_batch
            self._iter += 1
        self.call_hook('after_train_epoch')
        self._epoch += 1

    @staticmethod
    def _batches_from(data_loader, start: int):
        if start == 0:
            return data_loader
        # a resumed, half-done epoch: creating the iterator must not disturb the restored
        # RNG states (the uninterrupted run created it before the checkpoint was taken)
        with preserve_rng():
            if set_sampler_start(data_loader, start):
                return iter(data_loader)
            return itertools.islice(iter(data_loader), start, None)

    @torch.no_grad()
    def val(self, data_loader, **kwargs) -> None:
        self.model.eval()
        self.mode = 'val'
        self.data_loader = data_loader
        self.call_hook('before_val_epoch')
        for i, data_batch in enumerate(data_loader):
            self.data_batch = data_batch
            self._inner_iter = i
            self.call_hook('before_val_iter')
            self.run_iter(data_batch, train_mode=False)
            self.call_hook('after_val_iter')
            del self.data_batch
        self.call_hook('after_val_epoch')

    def run(self, data_loaders: list, workflow: list, max_epochs: int | None = None,
            **kwargs) -> None:
        """Run ``workflow`` (list of ``(mode, epochs)``) until ``max_epochs`` train epochs."""
        if max_epochs is not None:
            self._max_epochs = max_epochs
        if self._max_epochs is None:
            raise DetforgeError('EpochBasedRunner needs max_epochs (runner=dict(type='
                                "'EpochBasedRunner', max_epochs=12))")
        _check_workflow(data_loaders, workflow)
        for i, (mode, _) in enumerate(workflow):
            if mode == 'train':
                self._max_iters = self._max_epochs * len(data_loaders[i])
                break
        self.logger.info('Start running, host: %s, work_dir: %s', platform.node(),
                         self.work_dir)
        self.logger.info('Hooks will be executed in the following order:\n%s',
                         self.get_hook_info())
        self.logger.info('workflow: %s, max: %d epochs', workflow, self._max_epochs)
        self._warn_about_step()
        self.call_hook('before_run')
        while self.epoch < self._max_epochs and not self.stop_training:
            for i, (mode, epochs) in enumerate(workflow):
                epoch_runner = getattr(self, mode)
                for _ in range(epochs):
                    if mode == 'train' and (self.epoch >= self._max_epochs
                                            or self.stop_training):
                        break
                    epoch_runner(data_loaders[i], **kwargs)
        self.call_hook('after_run')

    # ----------------------------------------------------------------- checkpoints
    def _checkpoint_meta(self) -> dict:
        if self._in_train_iter:  # saved by iteration, in the middle of an epoch
            return dict(epoch=self.epoch, iter=self.iter + 1)
        return dict(epoch=self.epoch + 1, iter=self.iter)

    def _loader_state(self) -> dict:
        if self._in_train_iter:
            return {'epoch': self.epoch, 'pos': self.inner_iter + 1}
        return {'epoch': self.epoch + 1, 'pos': 0}

    def _apply_resumed_state(self, meta: dict) -> None:
        state = self._resume_loader_state
        if state:
            self._epoch = int(state['epoch'])
            self._resume_pos = int(state['pos'])


def _check_workflow(data_loaders, workflow) -> None:
    if not isinstance(data_loaders, (list, tuple)):
        raise TypeError('data_loaders must be a list of loaders, one per workflow phase')
    if len(data_loaders) != len(workflow):
        raise DetforgeError(f'workflow {workflow} has {len(workflow)} phases but '
                            f'{len(data_loaders)} data loaders were given')
    for mode, n in workflow:
        if mode not in ('train', 'val'):
            raise DetforgeError(f"workflow phase {mode!r} is unknown; use 'train' or 'val'")
        if not isinstance(n, int) or n < 1:
            raise DetforgeError(f'workflow phase ({mode!r}, {n!r}) needs a positive integer')


@RUNNERS.register_module()
class Runner(EpochBasedRunner):
    """Deprecated name of :class:`EpochBasedRunner` (mmcv kept it too)."""
