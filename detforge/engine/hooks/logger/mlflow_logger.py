"""Scalars, parameters and the final checkpoint to MLflow (``pip install 'detforge[mlflow]'``)."""
from __future__ import annotations

import glob
import os.path as osp

from detforge.registry import HOOKS, DetforgeError

from ...dist_utils import master_only
from .base import LoggerHook

__all__ = ['MlflowLoggerHook']


@HOOKS.register_module()
class MlflowLoggerHook(LoggerHook):
    """``log_config = dict(interval=50, hooks=[dict(type='TextLoggerHook'),
    dict(type='MlflowLoggerHook', exp_name='bccd')])`` (MMCV's name and arguments).

    Each logged line becomes MLflow metrics (``loss/train``, ``bbox_mAP/val``,
    ``learning_rate`` ...) at step = the iteration; ``params`` and ``tags`` are recorded
    once at the start. The run goes where MLflow's own settings say (``MLFLOW_TRACKING_URI``,
    else ``./mlruns``) unless ``tracking_uri`` is given, e.g. ``'file:///data/mlruns'``.

    Args:
        exp_name: MLflow experiment (created if missing).
        tags: ``dict`` of run tags.
        params: ``dict`` of run parameters (e.g. ``dict(lr=0.01, model='retinanet_r18')``).
        log_model: at the end, store the last checkpoint (``latest.pth``) and the config
            file(s) of the work dir as run artifacts. (MMCV calls ``mlflow.pytorch.log_model``,
            which pickles the model object; detforge logs the weights-only checkpoint, which
            ``detforge test`` reads directly.)
        tracking_uri: where MLflow writes (detforge's addition; default MLflow's).
        interval, ignore_last, reset_flag, by_epoch: as :class:`LoggerHook`.
    """

    def __init__(self, exp_name: str | None = None, tags: dict | None = None,
                 params: dict | None = None, log_model: bool = True, interval: int = 10,
                 ignore_last: bool = True, reset_flag: bool = False, by_epoch: bool = True,
                 tracking_uri: str | None = None):
        super().__init__(interval, ignore_last, reset_flag, by_epoch)
        self.exp_name = exp_name
        self.tags = tags
        self.params = params
        self.log_model = log_model
        self.tracking_uri = tracking_uri
        self.mlflow = None
        self._started = False

    def import_mlflow(self):
        try:
            import mlflow
        except ImportError as e:
            raise DetforgeError("MlflowLoggerHook needs MLflow: pip install 'detforge[mlflow]' "
                                '(or mlflow), or remove it from log_config.hooks') from e
        self.mlflow = mlflow

    @master_only
    def before_run(self, runner):
        super().before_run(runner)
        self.import_mlflow()
        if self.tracking_uri is not None:
            self.mlflow.set_tracking_uri(self.tracking_uri)
        if self.exp_name is not None:
            self.mlflow.set_experiment(self.exp_name)
        if self.mlflow.active_run() is None:
            self.mlflow.start_run(run_name=getattr(runner, 'timestamp', None))
            self._started = True
        if self.tags is not None:
            self.mlflow.set_tags(dict(self.tags))
        if self.params is not None:
            self.mlflow.log_params(dict(self.params))

    @master_only
    def log(self, runner):
        tags = {k: float(v) for k, v in self.get_loggable_tags(runner).items()}
        if tags:
            # MLflow keys may not contain '@' (AR@100): replace it
            tags = {k.replace('@', '_at_'): v for k, v in tags.items()}
            self.mlflow.log_metrics(tags, step=self.get_iter(runner))

    @master_only
    def after_run(self, runner):
        if self.mlflow is None:
            return
        if self.log_model and runner.work_dir is not None:
            latest = osp.join(runner.work_dir, 'latest.pth')
            if osp.isfile(latest):
                self.mlflow.log_artifact(osp.realpath(latest), artifact_path='checkpoints')
            for config in glob.glob(osp.join(runner.work_dir, '*.py')):
                self.mlflow.log_artifact(config, artifact_path='config')
        if self._started:
            self.mlflow.end_run()
            self._started = False
