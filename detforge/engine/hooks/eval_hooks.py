"""Evaluate during training, and keep the best checkpoint by a metric."""
from __future__ import annotations

import math
import os
import os.path as osp

import torch.distributed as dist
from torch.nn.modules.batchnorm import _BatchNorm

from detforge.registry import HOOKS, DetforgeError

from ..checkpoint import preserve_rng
from ..dist_utils import get_dist_info, unwrap_model
from .hook import Hook

__all__ = ['EvalHook', 'DistEvalHook']


@HOOKS.register_module()
class EvalHook(Hook):
    """``evaluation=dict(interval=1, metric='bbox', save_best='auto')``.

    Runs :func:`detforge.apis.single_gpu_test` on ``dataloader`` every ``interval`` epochs
    (or iterations), calls ``dataset.evaluate(results, **eval_kwargs)`` (which prints the
    COCO / VOC table), puts the metrics in the log, and with ``save_best`` keeps
    ``best_{metric}_{epoch_N}.pth`` for the best value so far. ``save_best='auto'`` uses
    the first metric the dataset returns (``bbox_mAP`` for COCO). Evaluation leaves the
    training RNG states untouched, so it does not change the training that follows.
    """
    rule_map = {'greater': lambda x, y: x > y, 'less': lambda x, y: x < y}
    init_value_map = {'greater': -math.inf, 'less': math.inf}
    _default_greater_keys = ['acc', 'top', 'AR@', 'auc', 'precision', 'mAP', 'mDice', 'mIoU',
                             'mAcc', 'aAcc', 'AP']
    _default_less_keys = ['loss']

    def __init__(self, dataloader, start: int | None = None, interval: int = 1,
                 by_epoch: bool = True, save_best: str | None = None, rule: str | None = None,
                 test_fn=None, greater_keys=None, less_keys=None, out_dir: str | None = None,
                 **eval_kwargs):
        if not hasattr(dataloader, 'dataset') or not hasattr(dataloader.dataset, 'evaluate'):
            raise DetforgeError('EvalHook needs a data loader whose dataset has evaluate()')
        if not isinstance(interval, int) or interval <= 0:
            raise DetforgeError(f'evaluation.interval must be a positive int, got {interval!r}')
        if start is not None and start < 0:
            raise DetforgeError(f'evaluation.start must be >= 0, got {start}')
        if save_best is not None and not isinstance(save_best, str):
            raise DetforgeError(f'evaluation.save_best must be a metric name or "auto", got '
                                f'{save_best!r}')
        self.dataloader = dataloader
        self.interval = interval
        self.start = start
        self.by_epoch = by_epoch
        self.save_best = save_best
        self.eval_kwargs = eval_kwargs
        self.out_dir = out_dir
        self.test_fn = test_fn
        self.greater_keys = list(self._default_greater_keys) + list(greater_keys or [])
        self.less_keys = list(self._default_less_keys) + list(less_keys or [])
        self.best_ckpt_path: str | None = None
        self.latest_results = None
        if save_best is not None:
            self._init_rule(rule, save_best)

    def _init_rule(self, rule, key_indicator) -> None:
        if rule is not None and rule not in self.rule_map:
            raise DetforgeError(f'evaluation.rule must be "greater" or "less", got {rule!r}')
        if rule is None and key_indicator != 'auto':
            key = key_indicator.lower()
            if any(k.lower() in key for k in self.greater_keys):
                rule = 'greater'
            elif any(k.lower() in key for k in self.less_keys):
                rule = 'less'
            else:
                raise DetforgeError(f'cannot tell whether {key_indicator!r} is better when '
                                    f'greater or less; set evaluation.rule')
        self.rule = rule
        self.key_indicator = key_indicator
        self.compare_func = self.rule_map[rule] if rule is not None else None

    def before_run(self, runner):
        if self.out_dir is None:
            self.out_dir = runner.work_dir
        if self.save_best is not None:
            runner.meta.setdefault('hook_msgs', {})
            self.best_ckpt_path = runner.meta['hook_msgs'].get('best_ckpt')

    def _should_evaluate(self, runner) -> bool:
        current = runner.epoch if self.by_epoch else runner.iter
        check = self.every_n_epochs if self.by_epoch else self.every_n_iters
        if self.start is None:
            return check(runner, self.interval)
        if current + 1 < self.start:
            return False
        return (current + 1 - self.start) % self.interval == 0

    def after_train_epoch(self, runner):
        if self.by_epoch and self._should_evaluate(runner):
            self._do_evaluate(runner)

    def after_train_iter(self, runner):
        if not self.by_epoch and self._should_evaluate(runner):
            # the loggers run after this hook: let them write this iteration's training
            # line now, before the buffer is cleared for the metrics (as MMCV does)
            from .logger import LoggerHook
            for hook in runner.hooks:
                if isinstance(hook, LoggerHook):
                    hook.after_train_iter(runner)
            runner.log_buffer.clear()
            self._do_evaluate(runner)

    def _test(self, runner):
        from detforge.apis.test import single_gpu_test
        test_fn = self.test_fn or single_gpu_test
        return test_fn(runner.model, self.dataloader, show=False)

    def _do_evaluate(self, runner) -> None:
        with preserve_rng():
            results = self._test(runner)
            self.latest_results = results
            runner.log_buffer.output['eval_iter_num'] = len(self.dataloader)
            key_score = self.evaluate(runner, results)
        runner.model.train()
        if self.save_best and key_score is not None:
            self._save_ckpt(runner, key_score)

    def evaluate(self, runner, results):
        eval_res = self.dataloader.dataset.evaluate(results, logger=runner.logger,
                                                    **self.eval_kwargs)
        for name, val in eval_res.items():
            runner.log_buffer.output[name] = val
        runner.log_buffer.ready = True
        if self.save_best is None:
            return None
        if not eval_res:
            runner.logger.warning('evaluation returned no metric; save_best is skipped')
            return None
        if self.key_indicator == 'auto':
            self._init_rule(self.rule, next(iter(eval_res)))
        if self.key_indicator not in eval_res:
            raise DetforgeError(f'evaluation.save_best={self.key_indicator!r} is not among the '
                                f'metrics {list(eval_res)}')
        return eval_res[self.key_indicator]

    def _save_ckpt(self, runner, key_score) -> None:
        if get_dist_info()[0] != 0:
            return
        if self.by_epoch:
            current = f'epoch_{runner.epoch + 1}'
        else:
            current = f'iter_{runner.iter + 1}'
        hook_msgs = runner.meta.setdefault('hook_msgs', {})
        best_score = hook_msgs.get('best_score', self.init_value_map[self.rule])
        if not self.compare_func(key_score, best_score):
            return
        hook_msgs['best_score'] = float(key_score)
        if self.best_ckpt_path and osp.isfile(self.best_ckpt_path):
            os.remove(self.best_ckpt_path)
        name = f'best_{self.key_indicator}_{current}.pth'
        self.best_ckpt_path = osp.join(self.out_dir, name)
        hook_msgs['best_ckpt'] = self.best_ckpt_path
        runner.save_checkpoint(self.out_dir, filename_tmpl=name, create_symlink=False)
        runner.logger.info(f'Now best checkpoint is saved as {name}. Best {self.key_indicator} '
                           f'is {key_score:0.4f} at {current}.')


@HOOKS.register_module()
class DistEvalHook(EvalHook):
    """:class:`EvalHook` over all ranks: each runs inference on its share, the results are
    gathered in dataset order (``tmpdir`` on a shared disk, or ``gpu_collect``) and rank 0
    evaluates. BatchNorm buffers of rank 0 are broadcast first so every rank tests the same
    model."""

    def __init__(self, dataloader, start=None, interval=1, by_epoch=True, tmpdir=None,
                 gpu_collect=False, save_best=None, rule=None, test_fn=None,
                 greater_keys=None, less_keys=None, broadcast_bn_buffer=True, out_dir=None,
                 **eval_kwargs):
        super().__init__(dataloader, start=start, interval=interval, by_epoch=by_epoch,
                         save_best=save_best, rule=rule, test_fn=test_fn,
                         greater_keys=greater_keys, less_keys=less_keys, out_dir=out_dir,
                         **eval_kwargs)
        self.tmpdir = tmpdir
        self.gpu_collect = gpu_collect
        self.broadcast_bn_buffer = broadcast_bn_buffer

    def _do_evaluate(self, runner) -> None:
        rank, world_size = get_dist_info()
        if self.broadcast_bn_buffer and world_size > 1:
            for _, module in unwrap_model(runner.model).named_modules():
                if isinstance(module, _BatchNorm) and module.track_running_stats:
                    dist.broadcast(module.running_var, 0)
                    dist.broadcast(module.running_mean, 0)
        from detforge.apis.test import multi_gpu_test
        tmpdir = self.tmpdir or osp.join(runner.work_dir, '.eval_hook')
        key_score = None
        with preserve_rng():
            test_fn = self.test_fn or multi_gpu_test
            results = test_fn(runner.model, self.dataloader, tmpdir=tmpdir,
                              gpu_collect=self.gpu_collect)
            self.latest_results = results
            if rank == 0:
                runner.log_buffer.output['eval_iter_num'] = len(self.dataloader)
                key_score = self.evaluate(runner, results)
        runner.model.train()
        if rank == 0 and self.save_best and key_score is not None:
            self._save_ckpt(runner, key_score)
