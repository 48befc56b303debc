"""Train for a number of iterations; the loader restarts (next epoch) when it runs out."""
from __future__ import annotations

import platform

import torch

from detforge.registry import RUNNERS, DetforgeError

from ..checkpoint import preserve_rng
from .base_runner import BaseRunner, set_sampler_epoch, set_sampler_start
from .epoch_based_runner import _check_workflow

__all__ = ['IterBasedRunner', 'IterLoader']


class IterLoader:
    """An endless iterator over a data loader that knows its epoch and its position in it.

    ``state_dict()`` -> ``{'epoch', 'pos'}`` (``pos``: batches consumed in this epoch);
    after ``load_state_dict`` the next batch is the one an uninterrupted run would get next.
    """

    def __init__(self, dataloader):
        self._dataloader = dataloader
        self._epoch = 0
        self._pos = 0
        self._iterator = None

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def dataset(self):
        return self._dataloader.dataset

    def __len__(self) -> int:
        return len(self._dataloader)

    def state_dict(self) -> dict:
        return {'epoch': self._epoch, 'pos': self._pos}

    def load_state_dict(self, state: dict) -> None:
        self._epoch, self._pos = int(state['epoch']), int(state['pos'])
        self._iterator = None

    def _start(self, skip: int):
        set_sampler_epoch(self._dataloader, self._epoch)
        if skip == 0:
            self._iterator = iter(self._dataloader)
            return
        # resumed mid-epoch: the uninterrupted run created this iterator before the
        # checkpoint, so creating it now must leave the restored RNG states alone
        with preserve_rng():
            if set_sampler_start(self._dataloader, skip):
                self._iterator = iter(self._dataloader)
            else:
                self._iterator = iter(self._dataloader)
                for _ in range(skip):
                    next(self._iterator)

    def __next__(self):
        if self._iterator is None:
            self._start(self._pos)
        try:
            batch = next(self._iterator)
        except StopIteration:
            self._epoch += 1
            self._pos = 0
            self._start(0)
            batch = next(self._iterator)
        self._pos += 1
        return batch

    def __iter__(self):
        return self


@RUNNERS.register_module()
class IterBasedRunner(BaseRunner):
    """``runner=dict(type='IterBasedRunner', max_iters=...)``; ``runner.epoch`` is the
    train loader's epoch."""

    def register_training_hooks(self, lr_config, optimizer_config=None, checkpoint_config=None,
                                log_config=None, momentum_config=None,
                                timer_config=dict(type='IterTimerHook'),
                                custom_hooks_config=None) -> None:
        """As :meth:`BaseRunner.register_training_hooks`, but the checkpoint, lr, momentum and
        logger hooks count iterations unless their config says ``by_epoch=True`` (as MMCV's
        ``IterBasedRunner``; MMCV leaves momentum by epoch). Without this, a plain
        ``checkpoint_config=dict(interval=N)`` would wait for epochs that never end.

        Args:
            see :meth:`BaseRunner.register_training_hooks`.
        """
        super().register_training_hooks(
            _by_iter(lr_config), optimizer_config, _by_iter(checkpoint_config),
            _by_iter_log(log_config), _by_iter(momentum_config), timer_config,
            custom_hooks_config)

    def train(self, data_loader: IterLoader, **kwargs) -> None:
        self.model.train()
        self.mode = 'train'
        self.data_loader = data_loader
        self._epoch = data_loader.epoch
        data_batch = next(data_loader)
        self._epoch = data_loader.epoch
        self.data_batch = data_batch
        self.call_hook('before_train_iter')
        self.run_step(data_batch, **kwargs)
        self.call_hook('after_train_iter')
        del self.data_batch
        self._inner_iter += 1
        self._iter += 1

    @torch.no_grad()
    def val(self, data_loader: IterLoader, **kwargs) -> None:
        self.model.eval()
        self.mode = 'val'
        self.data_loader = data_loader
        data_batch = next(data_loader)
        self.data_batch = data_batch
        self.call_hook('before_val_iter')
        self.run_iter(data_batch, train_mode=False)
        self.call_hook('after_val_iter')
        del self.data_batch
        self._inner_iter += 1

    def run(self, data_loaders: list, workflow: list, max_iters: int | None = None,
            **kwargs) -> None:
        if max_iters is not None:
            self._max_iters = max_iters
        if self._max_iters is None:
            raise DetforgeError('IterBasedRunner needs max_iters (runner=dict(type='
                                "'IterBasedRunner', max_iters=90000))")
        _check_workflow(data_loaders, workflow)
        self.iter_loaders = [IterLoader(x) for x in data_loaders]
        train_index = next((i for i, (mode, _) in enumerate(workflow) if mode == 'train'), None)
        self._train_loader = self.iter_loaders[train_index] if train_index is not None else None
        if self._resume_loader_state and train_index is not None:
            self.iter_loaders[train_index].load_state_dict(self._resume_loader_state)
            self._epoch = self.iter_loaders[train_index].epoch
        self.logger.info('Start running, host: %s, work_dir: %s', platform.node(),
                         self.work_dir)
        self.logger.info('Hooks will be executed in the following order:\n%s',
                         self.get_hook_info())
        self.logger.info('workflow: %s, max: %d iters', workflow, self._max_iters)
        self._warn_about_step()
        self.call_hook('before_run')
        self.call_hook('before_epoch')
        while self.iter < self._max_iters and not self.stop_training:
            for i, (mode, iters) in enumerate(workflow):
                self._inner_iter = 0
                iter_runner = getattr(self, mode)
                for _ in range(iters):
                    if mode == 'train' and (self.iter >= self._max_iters or self.stop_training):
                        break
                    iter_runner(self.iter_loaders[i], **kwargs)
        self.call_hook('after_epoch')
        self.call_hook('after_run')

    def _checkpoint_meta(self) -> dict:
        return dict(iter=self.iter + 1, epoch=self.epoch)

    def _loader_state(self) -> dict:
        train_loader = getattr(self, '_train_loader', None)
        if train_loader is None:
            return {'epoch': self.epoch, 'pos': 0}
        return train_loader.state_dict()

    def _apply_resumed_state(self, meta: dict) -> None:
        self._inner_iter = self._iter
        if self._resume_loader_state:
            self._epoch = int(self._resume_loader_state['epoch'])


def _by_iter(hook_cfg):
    """A copy of a hook config dict with ``by_epoch=False`` unless it says otherwise (a built
    hook or ``None`` is left as it is)."""
    if not isinstance(hook_cfg, dict):
        return hook_cfg
    return {'by_epoch': False, **hook_cfg}


def _by_iter_log(log_config):
    if not isinstance(log_config, dict):
        return log_config
    return {**log_config, 'hooks': [_by_iter(h) for h in log_config.get('hooks', [])]}
