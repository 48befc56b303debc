"""Scalars and the run's files to Weights & Biases (``pip install 'detforge[wandb]'``)."""
from __future__ import annotations

import glob
import os.path as osp

from detforge.registry import HOOKS, DetforgeError

from ...dist_utils import master_only
from .base import LoggerHook

__all__ = ['WandbLoggerHook']


@HOOKS.register_module()
class WandbLoggerHook(LoggerHook):
    """``log_config = dict(interval=50, hooks=[dict(type='TextLoggerHook'),
    dict(type='WandbLoggerHook', init_kwargs=dict(project='bccd'))])`` (MMCV's name and
    arguments).

    ``wandb.init(**init_kwargs)`` at the start; each logged line becomes one ``wandb.log``
    (``loss/train``, ``bbox_mAP/val``, ``learning_rate`` ...) at step = the iteration; at the
    end the work dir's logs and config (``out_suffix``) are uploaded as an artifact and the
    run is finished. Offline (no account, no network): ``init_kwargs=dict(mode='offline')``
    or ``WANDB_MODE=offline``; ``wandb sync`` uploads later.

    Args:
        init_kwargs: arguments of ``wandb.init`` (``project``, ``name``, ``config``,
            ``mode``, ``dir`` ...).
        commit: ``wandb.log(..., commit=commit)``.
        with_step: pass the iteration as ``step`` (else log it as ``global_step``).
        log_artifact: upload the files of the work dir ending in ``out_suffix`` at the end.
        interval, ignore_last, reset_flag, by_epoch: as :class:`LoggerHook`.
    """

    def __init__(self, init_kwargs: dict | None = None, interval: int = 10,
                 ignore_last: bool = True, reset_flag: bool = False, commit: bool = True,
                 by_epoch: bool = True, with_step: bool = True, log_artifact: bool = True,
                 out_suffix=('.log.json', '.log', '.py')):
        super().__init__(interval, ignore_last, reset_flag, by_epoch)
        self.init_kwargs = init_kwargs
        self.commit = commit
        self.with_step = with_step
        self.log_artifact = log_artifact
        self.out_suffix = (out_suffix,) if isinstance(out_suffix, str) else tuple(out_suffix)
        self.wandb = None
        self.run = None

    def import_wandb(self):
        try:
            import wandb
        except ImportError as e:
            raise DetforgeError("WandbLoggerHook needs wandb: pip install 'detforge[wandb]' "
                                '(or wandb), or remove it from log_config.hooks') from e
        self.wandb = wandb

    @master_only
    def before_run(self, runner):
        super().before_run(runner)
        if self.wandb is None:
            self.import_wandb()
        self.run = self.wandb.init(**dict(self.init_kwargs or {}))

    @master_only
    def log(self, runner):
        tags = self.get_loggable_tags(runner)
        if not tags:
            return
        if self.with_step:
            self.run.log(tags, step=self.get_iter(runner), commit=self.commit)
        else:
            tags['global_step'] = self.get_iter(runner)
            self.run.log(tags, commit=self.commit)

    @master_only
    def after_run(self, runner):
        if self.run is None:
            return
        if self.log_artifact and runner.work_dir is not None:
            artifact = self.wandb.Artifact(name='artifacts', type='model')
            for path in sorted(glob.glob(osp.join(runner.work_dir, '*'))):
                if path.endswith(self.out_suffix) and osp.isfile(path):
                    artifact.add_file(path)
            self.run.log_artifact(artifact)
        self.run.finish()
        self.run = None
