"""Evaluate during training, and keep the best checkpoint by a metric."""
from __future__ import annotations

import contextlib
import json
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


@contextlib.contextmanager
def _unreadable_image_stops_the_run(runner):
    """An image of the validation set that no decoder reads ends the run (its metrics would
    be wrong without it), with the way forward in the same line: the checkpoint of this
    epoch is already written (the checkpoint hook runs before evaluation)."""
    from detforge.data.errors import ImageLoadError
    try:
        yield
    except ImageLoadError as e:
        ckpt = runner.meta.get('hook_msgs', {}).get('last_ckpt') if runner.meta else None
        safe = (f'the checkpoint {ckpt} is safe' if ckpt else
                'no checkpoint was written for this point')
        raise ImageLoadError(
            f'evaluation stopped the training: {e}; {safe}: replace the file or remove the '
            f'image from the validation annotations (data.val.ann_file), then continue with '
            f'--auto-resume (or --resume-from {ckpt or "CHECKPOINT"}), or train with '
            f'--no-validate') from e


def _acts_on_metrics(hook) -> bool:
    """A hook with its own ``after_evaluate`` and a ``state_dict`` (EarlyStoppingHook)."""
    return (type(hook).after_evaluate is not Hook.after_evaluate
            and callable(getattr(hook, 'state_dict', None)))


@HOOKS.register_module()
class EvalHook(Hook):
    """``evaluation=dict(interval=1, metric='bbox', save_best='auto')``.

    Runs :func:`detforge.apis.single_gpu_test` on ``dataloader`` every ``interval`` epochs
    (or iterations), calls ``dataset.evaluate(results, **eval_kwargs)`` (which prints the
    COCO / VOC table), puts the metrics in the log, and with ``save_best`` keeps
    ``best_{metric}_{epoch_N}.pth`` for the best value so far. ``save_best='auto'`` uses
    the first metric the dataset returns (``bbox_mAP`` for COCO). Evaluation leaves the
    training RNG states untouched, so it does not change the training that follows.

    Faults: a checkpoint written when an evaluation is due records it (``state_dict``), so
    that an evaluation interrupted by a kill is run again first thing on resume. An image
    of the validation set that no decoder reads stops the run with one line naming the
    file, the checkpoint that is safe and how to resume or leave the file out.
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
        self.latest_metrics: dict | None = None  # of the last evaluation (rank 0)
        self._runner = None  # set in before_run; state_dict() needs the loop counters
        self._last_evaluated: int | None = None  # epoch (or iteration) last evaluated, 1-based
        self._pending: int | None = None  # an evaluation due when the resumed run stopped
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
        self._runner = runner
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
            self._evaluate_now(runner)

    def after_train_iter(self, runner):
        if not self.by_epoch and self._should_evaluate(runner):
            # the loggers run after this hook: let them write this iteration's training
            # line now, before the buffer is cleared for the metrics (as MMCV does)
            from .logger import LoggerHook
            for hook in runner.hooks:
                if isinstance(hook, LoggerHook):
                    hook.after_train_iter(runner)
            runner.log_buffer.clear()
            self._evaluate_now(runner)

    def _current(self, runner) -> int:
        """The epoch (or iteration) just trained, 1-based."""
        return (runner.epoch if self.by_epoch else runner.iter) + 1

    def _evaluate_now(self, runner) -> None:
        self.latest_metrics = None
        self._do_evaluate(runner)
        self._last_evaluated = self._current(runner)
        # e.g. EarlyStoppingHook; every rank calls it (the others with None) so that a hook
        # can share rank 0's decision
        for hook in runner.hooks:
            if hook is not self and hasattr(hook, 'after_evaluate'):
                hook.after_evaluate(runner, self.latest_metrics)
        self._write_done_marker(runner)

    # The checkpoint of an epoch is written before its evaluation, so it always says "due".
    # A small file in the work dir records the last evaluation that finished; on resume an
    # evaluation is re-run only when that file does not show it done. It also keeps what
    # that evaluation changed after the checkpoint was written (save_best's best score and
    # file, the state of hooks that act on the metrics such as EarlyStoppingHook), which a
    # resume from that checkpoint restores instead of running the evaluation again.
    _DONE_FILE = '.last_evaluation.json'

    def _write_done_marker(self, runner) -> None:
        if get_dist_info()[0] != 0 or not self.out_dir:
            return
        path = osp.join(self.out_dir, self._DONE_FILE)
        hook_msgs = (runner.meta or {}).get('hook_msgs', {})
        record = {'by_epoch': self.by_epoch, 'done': self._last_evaluated,
                  'hook_msgs': {k: hook_msgs[k] for k in ('best_score', 'best_ckpt')
                                if k in hook_msgs},
                  'hook_states': {type(h).__name__: h.state_dict() for h in runner.hooks
                                  if h is not self and _acts_on_metrics(h)}}
        with contextlib.suppress(OSError, TypeError, ValueError):
            with open(path + '.part', 'w') as f:
                json.dump(record, f)
            os.replace(path + '.part', path)

    def _read_done_marker(self) -> dict:
        try:
            with open(osp.join(self.out_dir or '', self._DONE_FILE)) as f:
                done = json.load(f)
        except (OSError, ValueError):
            return {}
        return done if isinstance(done, dict) and done.get('by_epoch') == self.by_epoch else {}

    def _finished_before(self, n: int) -> bool:
        return int(self._read_done_marker().get('done') or 0) >= n

    def _restore_after(self, runner, n: int) -> None:
        """Evaluation ``n`` finished before the run stopped: take back what it changed."""
        record = self._read_done_marker()
        if int(record.get('done') or 0) != n:
            return
        hook_msgs = runner.meta.setdefault('hook_msgs', {})
        hook_msgs.update(record.get('hook_msgs') or {})
        self.best_ckpt_path = hook_msgs.get('best_ckpt', self.best_ckpt_path)
        states = record.get('hook_states') or {}
        for hook in runner.hooks:
            if type(hook).__name__ in states and hasattr(hook, 'load_state_dict'):
                hook.load_state_dict(states[type(hook).__name__])

    # -- an evaluation interrupted by a kill is run again on resume
    def state_dict(self) -> dict:
        """``{'eval_due': n}``: the epoch (or iteration) whose evaluation is due but not
        done when the checkpoint is written (the checkpoint hook runs before this one), or
        0. A run killed during that evaluation re-runs it on resume."""
        runner = self._runner
        if runner is None:
            return {'eval_due': 0}
        current = self._current(runner)
        due = (self._should_evaluate(runner) and self._last_evaluated != current
               and (not self.by_epoch or self.end_of_epoch(runner)))
        return {'eval_due': current if due else 0}

    def load_state_dict(self, state: dict) -> None:
        self._pending = int(state.get('eval_due', 0)) or None

    def before_train_epoch(self, runner):
        if self.by_epoch:
            self._run_pending(runner)

    def before_train_iter(self, runner):
        if not self.by_epoch:
            self._run_pending(runner)

    def after_run(self, runner):
        self._run_pending(runner)  # a resumed run that had no epoch left to train

    def _run_pending(self, runner) -> None:
        if self._pending is None:
            return
        pending, self._pending = self._pending, None
        done = [self._finished_before(pending)]
        if get_dist_info()[1] > 1 and dist.is_available() and dist.is_initialized():
            dist.broadcast_object_list(done, src=0)  # rank 0's work dir decides for all ranks
        if done[0]:
            self._restore_after(runner, pending)
            return
        unit = 'epoch' if self.by_epoch else 'iteration'
        runner.logger.info('evaluating %s %d again: its evaluation did not finish before the '
                           'previous run stopped', unit, pending)
        # the metrics are logged under the epoch (iteration) they belong to
        counter = '_epoch' if self.by_epoch else '_iter'
        saved, saved_mode = getattr(runner, counter), getattr(runner, 'mode', None)
        setattr(runner, counter, pending - 1)
        runner.mode = 'train'  # as after the epoch it belongs to (after_run has none)
        try:
            runner.log_buffer.clear_output()
            self._evaluate_now(runner)
            from .logger.base import LoggerHook
            for hook in runner.hooks:
                if isinstance(hook, LoggerHook) and runner.log_buffer.ready:
                    hook.log(runner)
            runner.log_buffer.clear_output()
        finally:
            setattr(runner, counter, saved)
            runner.mode = saved_mode

    def _test(self, runner):
        from detforge.apis.test import single_gpu_test
        test_fn = self.test_fn or single_gpu_test
        with _unreadable_image_stops_the_run(runner):
            return test_fn(runner.model, self.dataloader, show=False)

    def _do_evaluate(self, runner) -> None:
        with preserve_rng():
            results = self._test(runner)
            self.latest_results = results
            runner.log_buffer.output['eval_iter_num'] = len(self.dataloader)
            key_score = self.evaluate(runner, results)
        runner.model.train()
        self._last_evaluated = self._current(runner)  # before a best checkpoint records it
        if self.save_best and key_score is not None:
            self._save_ckpt(runner, key_score)

    def evaluate(self, runner, results):
        eval_res = self.dataloader.dataset.evaluate(results, logger=runner.logger,
                                                    **self.eval_kwargs)
        self.latest_metrics = dict(eval_res)
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
            with _unreadable_image_stops_the_run(runner):
                results = test_fn(runner.model, self.dataloader, tmpdir=tmpdir,
                                  gpu_collect=self.gpu_collect)
            self.latest_results = results
            if rank == 0:
                runner.log_buffer.output['eval_iter_num'] = len(self.dataloader)
                key_score = self.evaluate(runner, results)
        runner.model.train()
        self._last_evaluated = self._current(runner)  # before a best checkpoint records it
        if rank == 0 and self.save_best and key_score is not None:
            self._save_ckpt(runner, key_score)
