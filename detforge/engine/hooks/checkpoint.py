"""Save checkpoints every ``interval`` epochs (or iterations) and keep the newest few."""
from __future__ import annotations

import glob
import os
import os.path as osp
import re

from detforge.registry import HOOKS, BuildError

from ..dist_utils import master_only
from .hook import Hook

__all__ = ['CheckpointHook']


@HOOKS.register_module()
class CheckpointHook(Hook):
    """``checkpoint_config=dict(interval=1, max_keep_ckpts=3)``.

    Args:
        interval: save every ``interval`` epochs (``by_epoch``) or iterations; ``-1`` only
            the last one (with ``save_last``).
        by_epoch: count epochs or iterations.
        save_optimizer: include the optimizer state (needed to resume).
        out_dir: where to write; default the runner's work dir.
        max_keep_ckpts: delete older numbered checkpoints beyond this many (-1: keep all).
        save_last: always save at the end of training.
        save_format: ``'pth'`` (default) or ``'safetensors'``. With ``'safetensors'`` each
            checkpoint is written twice: the resumable ``epoch_N.pth`` (weights, optimizer,
            runner state) and beside it ``epoch_N.safetensors`` with the weights and ``meta``
            only, a file to share or deploy (safetensors cannot hold an optimizer state, and
            reading it never runs code). Both are written atomically; ``max_keep_ckpts``
            removes old ones of both kinds. Not an MMCV argument (MMCV writes ``.pth`` only).
    """

    SAVE_FORMATS = ('pth', 'safetensors')

    def __init__(self, interval: int = -1, by_epoch: bool = True, save_optimizer: bool = True,
                 out_dir: str | None = None, max_keep_ckpts: int = -1, save_last: bool = True,
                 sync_buffer: bool = False, save_format: str = 'pth', **kwargs):
        if save_format not in self.SAVE_FORMATS:
            raise BuildError(f'checkpoint_config.save_format: expected one of '
                             f'{list(self.SAVE_FORMATS)}, got {save_format!r}')
        if save_format == 'safetensors':
            from ..checkpoint_formats import _require_safetensors
            _require_safetensors()  # fail at build time, not after the first epoch
        self.save_format = save_format
        self.interval = interval
        self.by_epoch = by_epoch
        self.save_optimizer = save_optimizer
        self.out_dir = out_dir
        self.max_keep_ckpts = max_keep_ckpts
        self.save_last = save_last
        self.args = kwargs

    def before_run(self, runner):
        if not self.out_dir:
            self.out_dir = runner.work_dir
        elif runner.work_dir is not None:
            self.out_dir = osp.join(self.out_dir, osp.basename(runner.work_dir))
        runner.logger.info('checkpoints will be saved to %s by %s', self.out_dir,
                           'epoch' if self.by_epoch else 'iteration')
        self._remove_stale_temporaries(runner)

    @master_only
    def _remove_stale_temporaries(self, runner):
        # a run killed mid-save leaves its temporary file behind (up to a whole checkpoint)
        from ..checkpoint import remove_stale_temporaries
        remove_stale_temporaries(self.out_dir, runner.logger)

    def after_train_epoch(self, runner):
        if not self.by_epoch:
            return
        if self.every_n_epochs(runner, self.interval) or (
                self.save_last and self.is_last_epoch(runner)):
            runner.logger.info('saving checkpoint at %d epochs', runner.epoch + 1)
            self._save_checkpoint(runner)

    def after_train_iter(self, runner):
        if self.by_epoch:
            return
        if self.every_n_iters(runner, self.interval) or (
                self.save_last and self.is_last_iter(runner)):
            runner.logger.info('saving checkpoint at %d iterations', runner.iter + 1)
            self._save_checkpoint(runner)

    @master_only
    def _save_checkpoint(self, runner):
        tmpl = self.args.get('filename_tmpl', 'epoch_{}.pth' if self.by_epoch else 'iter_{}.pth')
        path = runner.save_checkpoint(self.out_dir, filename_tmpl=tmpl,
                                      save_optimizer=self.save_optimizer,
                                      **{k: v for k, v in self.args.items()
                                         if k != 'filename_tmpl'})
        runner.meta.setdefault('hook_msgs', {})['last_ckpt'] = path
        if self.save_format == 'safetensors':
            self._export_safetensors(runner, tmpl)
        if self.max_keep_ckpts > 0:
            self._remove_old(tmpl)
            if self.save_format == 'safetensors':
                self._remove_old(self._safetensors_tmpl(tmpl))

    @staticmethod
    def _safetensors_tmpl(tmpl: str) -> str:
        """``epoch_{}.pth`` -> ``epoch_{}.safetensors`` (the same stem, so the pair sorts
        together)."""
        stem, ext = osp.splitext(tmpl)
        return (stem if ext == '.pth' else tmpl) + '.safetensors'

    def _export_safetensors(self, runner, tmpl: str) -> None:
        """The weights-only twin of the checkpoint just written (same meta, same number)."""
        runner.save_checkpoint(self.out_dir, filename_tmpl=self._safetensors_tmpl(tmpl),
                               save_optimizer=False, create_symlink=False,
                               meta=self.args.get('meta'))

    def _remove_old(self, tmpl: str) -> None:
        pattern = re.compile('^' + re.escape(tmpl).replace(r'\{\}', r'(\d+)') + '$')
        numbered = []
        for path in glob.glob(osp.join(self.out_dir, '*')):
            m = pattern.match(osp.basename(path))
            if m:
                numbered.append((int(m.group(1)), path))
        numbered.sort()
        for _, path in numbered[:-self.max_keep_ckpts]:
            os.remove(path)
