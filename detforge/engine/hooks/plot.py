"""Plot the loss, lr and mAP curves of the run to a PNG in the work dir."""
from __future__ import annotations

import json
import os.path as osp

from detforge.registry import HOOKS

from ..dist_utils import get_dist_info
from .hook import Hook

__all__ = ['PlotCurvesHook']


@HOOKS.register_module()
class PlotCurvesHook(Hook):
    """Writes ``WORK_DIR/{timestamp}_curves.png`` from the JSON log after each epoch and at
    the end of the run (rank 0 only). Keys: ``loss``, ``lr`` and the first metric key
    found among ``metric_keys``.

    Register it with priority ``LOWEST`` so the loggers have written the epoch first.
    """

    def __init__(self, keys=('loss', 'lr'), metric_keys=('bbox_mAP', 'mAP', 'segm_mAP',
                                                           'AR@100'),
                 out_file: str | None = None, by_epoch: bool = True):
        self.keys = list(keys)
        self.metric_keys = list(metric_keys)
        self.out_file = out_file
        self.by_epoch = by_epoch

    def _json_log(self, runner) -> str | None:
        for hook in runner.hooks:
            path = getattr(hook, 'json_log_path', None)
            if path:
                return path
        return None

    def plot(self, runner) -> str | None:
        if get_dist_info()[0] != 0:
            return None
        json_log = self._json_log(runner)
        if json_log is None or not osp.isfile(json_log):
            return None
        keys = list(self.keys)
        present = set()
        with open(json_log, encoding='utf-8') as f:
            for line in f:
                try:
                    present.update(json.loads(line))
                except ValueError:
                    continue
        keys = [k for k in keys if k in present]
        metric = next((k for k in self.metric_keys if k in present), None)
        if metric:
            keys.append(metric)
        if not keys:
            return None
        from detforge.visualization.curves import plot_curves
        out = self.out_file or osp.join(runner.work_dir, f'{runner.timestamp}_curves.png')
        plot_curves([json_log], keys, out, title=runner.meta.get('exp_name'))
        return out

    def after_train_epoch(self, runner):
        if self.by_epoch:
            self.plot(runner)

    def after_run(self, runner):
        out = self.plot(runner)
        if out:
            runner.logger.info('curves of this run: %s', out)
