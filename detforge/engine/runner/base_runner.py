"""The runner: owns the model, optimizer and loop state, runs the training step, and calls
the hooks around it in order."""
from __future__ import annotations

import contextlib
import copy
import logging
import os
import os.path as osp
import torch
from torch import nn

from detforge.registry import HOOKS, DetforgeError, build_context, build_from_cfg

from ..checkpoint import (get_rng_state, link_or_copy, load_checkpoint, save_checkpoint,
                          set_rng_state, summarize_load_from)
from ..dist_utils import get_dist_info, master_only, unwrap_model
from ..hooks.hook import Hook
from ..hooks.optimizer import is_translated_optimizer_hook
from ..optimizer.optimizer_step import OptimizerStep
from .log_buffer import LogBuffer
from .priority import get_priority

__all__ = ['BaseRunner']


class BaseRunner:
    """State, hooks and the training step shared by :class:`EpochBasedRunner` and
    :class:`IterBasedRunner`.

    One training iteration is :meth:`run_step`, read top to bottom (forward, losses, log,
    zero_grad, backward, clip, step); the loops call the hooks around it for the side
    concerns (lr and momentum schedules, logging, checkpoints, evaluation, EMA).

    Args:
        model: the detector (optionally DDP-wrapped); must define ``train_step(batch,
            optimizer)`` returning ``dict(loss, log_vars, num_samples)``.
        optimizer: a ``torch.optim.Optimizer`` (or a dict of them).
        work_dir: where checkpoints and logs go.
        logger: a ``logging.Logger``.
        meta: extra data saved in every checkpoint's ``meta`` (config text, seed, ...).
        max_epochs / max_iters: the length of training (one of them).
    """

    def __init__(self, model: nn.Module, batch_processor=None, optimizer=None,
                 work_dir: str | None = None, logger: logging.Logger | None = None,
                 meta: dict | None = None, max_iters: int | None = None,
                 max_epochs: int | None = None):
        if batch_processor is not None:
            raise DetforgeError('batch_processor is not supported: define train_step() and '
                                'val_step() on the model instead')
        if not hasattr(unwrap_model(model), 'train_step'):
            raise DetforgeError(f'{type(unwrap_model(model)).__name__} has no train_step(); '
                                f'a runner needs a model with train_step(batch, optimizer)')
        if max_epochs is not None and max_iters is not None:
            raise DetforgeError('runner: give max_epochs or max_iters, not both')
        if meta is not None and not isinstance(meta, dict):
            raise TypeError(f'meta must be a dict, got {type(meta).__name__}')
        self.model = model
        self.optimizer = optimizer
        self.logger = logger or logging.getLogger('detforge')
        self.meta = meta if meta is not None else {}
        self.work_dir = osp.abspath(work_dir) if work_dir is not None else None
        if self.work_dir is not None:
            _ensure_writable(self.work_dir)
        self.rank, self.world_size = get_dist_info()
        self.timestamp: str | None = None
        self.mode: str | None = None
        self._hooks: list = []
        self._epoch = 0
        self._iter = 0
        self._inner_iter = 0
        self._max_epochs = max_epochs
        self._max_iters = max_iters
        self.log_buffer = LogBuffer()
        self.data_loader = None
        self.data_batch = None
        self.outputs: dict = {}
        # how run_step turns the loss into a step (configure_step, from optimizer_config /
        # fp16 / amp); None: the runner does no backward (the model's train_step steps itself)
        self.optim_step: OptimizerStep | None = None
        # a user's OptimizerHook subclass that does backward and step in after_train_iter
        self.optimizer_hook: Hook | None = None
        # a context manager factory wrapping the forward pass (torch.autocast under AMP)
        self.autocast = contextlib.nullcontext
        self._resume_loader_state: dict | None = None
        # set by a hook (EarlyStoppingHook) to end the run after the current epoch (or
        # iteration); the loops check it
        self.stop_training = False

    # ----------------------------------------------------------------- state
    @property
    def model_name(self) -> str:
        return type(unwrap_model(self.model)).__name__

    @property
    def hooks(self) -> list:
        return self._hooks

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def iter(self) -> int:
        return self._iter

    @property
    def inner_iter(self) -> int:
        return self._inner_iter

    @property
    def max_epochs(self) -> int | None:
        return self._max_epochs

    @property
    def max_iters(self) -> int | None:
        return self._max_iters

    def current_lr(self) -> list[float] | dict[str, list[float]]:
        if isinstance(self.optimizer, torch.optim.Optimizer):
            return [group['lr'] for group in self.optimizer.param_groups]
        if isinstance(self.optimizer, dict):
            return {k: [g['lr'] for g in o.param_groups] for k, o in self.optimizer.items()}
        raise RuntimeError('current_lr() needs an optimizer')

    def current_momentum(self) -> list[float]:
        def momentum(optim):
            out = []
            for group in optim.param_groups:
                if 'momentum' in group:
                    out.append(group['momentum'])
                elif 'betas' in group:
                    out.append(group['betas'][0])
                else:
                    out.append(0.)
            return out
        if isinstance(self.optimizer, torch.optim.Optimizer):
            return momentum(self.optimizer)
        if isinstance(self.optimizer, dict):
            return {k: momentum(o) for k, o in self.optimizer.items()}
        raise RuntimeError('current_momentum() needs an optimizer')

    # ----------------------------------------------------------------- hooks
    def register_hook(self, hook, priority: int | str = 'NORMAL') -> None:
        """Insert ``hook`` after every hook of the same or higher priority."""
        priority = get_priority(priority)
        if hasattr(hook, 'priority'):
            raise ValueError('"priority" is a reserved attribute for hooks')
        hook.priority = priority
        index = len(self._hooks)
        for i in range(len(self._hooks) - 1, -1, -1):
            if priority >= self._hooks[i].priority:
                index = i + 1
                break
            index = i
        self._hooks.insert(index, hook)

    def register_hook_from_cfg(self, hook_cfg: dict) -> None:
        hook_cfg = copy.deepcopy(dict(hook_cfg))
        priority = hook_cfg.pop('priority', 'NORMAL')
        self.register_hook(build_from_cfg(hook_cfg, HOOKS), priority=priority)

    def call_hook(self, fn_name: str) -> None:
        for hook in self._hooks:
            getattr(hook, fn_name)(self)

    def get_hook_info(self) -> str:
        lines = []
        for stage in ('before_run', 'before_train_epoch', 'before_train_iter',
                      'after_train_iter', 'after_train_epoch', 'before_val_epoch',
                      'after_val_epoch', 'after_run'):
            names = [f'({h.priority:<3}) {type(h).__name__}' for h in self._hooks
                     if type(h).__dict__.get(stage) is not None or any(
                         stage in vars(c) for c in type(h).__mro__[:-1]
                         if c.__name__ != 'Hook')]
            if names:
                lines.append(f'{stage}:\n  ' + '\n  '.join(names))
        return '\n'.join(lines)

    def register_training_hooks(self, lr_config, optimizer_config=None, checkpoint_config=None,
                                log_config=None, momentum_config=None,
                                timer_config=dict(type='IterTimerHook'),
                                custom_hooks_config=None) -> None:
        """Configure the step from ``optimizer_config`` (:meth:`configure_step`) and register
        the default hooks, in mmcv's priorities:

        lr (VERY_HIGH), momentum (HIGH), checkpoint (NORMAL), timer (LOW), loggers
        (VERY_LOW), custom hooks (their ``priority``, default NORMAL); a user's own optimizer
        hook (ABOVE_NORMAL).

        Args:
            lr_config, momentum_config: ``dict(policy=..., ...)`` or ``None``.
            optimizer_config: ``dict(grad_clip=..., type=...)``, a built hook, or ``None``.
            checkpoint_config, timer_config: hook configs (``dict``) or built hooks, or ``None``.
            log_config: ``dict(interval=N, hooks=[dict(type='TextLoggerHook'), ...])``.
            custom_hooks_config: a list of ``dict(type=..., priority=...)``.
        """
        from ..hooks.lr_updater import build_lr_hook
        from ..hooks.momentum_updater import build_momentum_hook
        with build_context('lr_config'):
            if lr_config is not None:
                self.register_hook(build_lr_hook(lr_config), priority='VERY_HIGH')
        with build_context('momentum_config'):
            if momentum_config is not None:
                self.register_hook(build_momentum_hook(momentum_config), priority='HIGH')
        with build_context('optimizer_config'):
            self.configure_step(optimizer_config)
        with build_context('checkpoint_config'):
            if checkpoint_config is not None:
                if isinstance(checkpoint_config, dict):
                    checkpoint_config = {'type': 'CheckpointHook', **checkpoint_config}
                    checkpoint_config = build_from_cfg(checkpoint_config, HOOKS)
                self.register_hook(checkpoint_config, priority='NORMAL')
        with build_context('timer_config'):
            if timer_config is not None:
                hook = build_from_cfg(dict(timer_config), HOOKS) \
                    if isinstance(timer_config, dict) else timer_config
                self.register_hook(hook, priority='LOW')
        with build_context('log_config'):
            if log_config is not None:
                for i, info in enumerate(log_config.get('hooks', [])):
                    with build_context('hooks', str(i)):
                        cfg = {'interval': log_config.get('interval', 10), **dict(info)}
                        self.register_hook(build_from_cfg(cfg, HOOKS), priority='VERY_LOW')
        if custom_hooks_config is not None:
            if not isinstance(custom_hooks_config, (list, tuple)):
                raise DetforgeError(f'custom_hooks must be a list of dict(type=...), got '
                                    f'{type(custom_hooks_config).__name__}')
            for i, cfg in enumerate(custom_hooks_config):
                with build_context('custom_hooks', str(i)):
                    if not isinstance(cfg, dict):
                        raise DetforgeError(f'custom_hooks[{i}] must be a dict(type=...), '
                                            f'got {cfg!r}')
                    self.register_hook_from_cfg(cfg)

    def configure_step(self, optimizer_config) -> None:
        """Translate MMDetection 2.x's ``optimizer_config`` into :meth:`run_step`'s settings.

        ``optimizer_config`` (with ``fp16`` / ``amp`` merged in by ``train_detector``) is built
        as the hook it names (``OptimizerHook`` when no ``type``). detforge's own optimizer
        hooks become :attr:`optim_step` and are not registered. Any other hook, such as a
        user's ``OptimizerHook`` subclass, is registered at ``ABOVE_NORMAL`` (MMCV's place) and
        becomes :attr:`optimizer_hook`: its ``after_train_iter`` does backward and step, and
        :meth:`run_step` stops after the forward and the log.

        Args:
            optimizer_config: a ``dict``, a built hook, or ``None`` (the runner does no
                backward: MMCV's convention for a model whose ``train_step`` steps itself).
        """
        if self.optimizer_hook in self._hooks:  # configured again: the new config replaces it
            self._hooks.remove(self.optimizer_hook)
        self.optim_step, self.optimizer_hook = None, None
        self.autocast = contextlib.nullcontext
        if optimizer_config is None:
            return
        if isinstance(optimizer_config, dict):
            hook = build_from_cfg({'type': 'OptimizerHook', **optimizer_config}, HOOKS)
        else:
            hook = optimizer_config
        if is_translated_optimizer_hook(hook):
            self.optim_step = hook.optim_step
        else:
            self.optimizer_hook = hook
            self.optim_step = getattr(hook, 'optim_step', None) or OptimizerStep()
            self.register_hook(hook, priority='ABOVE_NORMAL')
        self.optim_step.setup(self.model)
        self.autocast = self.optim_step.autocast
        self.logger.info('training step: %r%s', self.optim_step,
                         f'; backward and step by {type(hook).__name__}.after_train_iter'
                         if self.optimizer_hook is not None else '')

    def register_optimizer_hook(self, optimizer_config) -> None:
        """MMCV's name for :meth:`configure_step`."""
        self.configure_step(optimizer_config)

    # ----------------------------------------------------------------- one step
    def run_step(self, data_batch, **kwargs) -> dict:
        """One training iteration, in order: forward, losses, log, zero_grad, backward
        (through the AMP scaler), unscale, clip, optimizer step.

        The settings come from :meth:`configure_step`; the hooks run before (lr, momentum)
        and after (EMA, checkpoint, log, evaluation) this function.

        Args:
            data_batch: the collated batch the loop drew (for a detector
                ``dict(img, img_metas, gt_bboxes, gt_labels, ...)``).
            kwargs: passed on to the model's ``train_step`` (MMCV's ``runner.run(...,
                **kwargs)``).

        Returns:
            the model's ``dict(loss, log_vars, num_samples)``, also kept as :attr:`outputs`.
        """
        # forward -> losses -> parse, in the model's train_step (for a detector:
        # forward_train, then _parse_losses sums the `loss*` entries and averages the log
        # values over processes); under AMP the forward runs in float16 / bfloat16
        with self.autocast():
            outputs = self.model.train_step(data_batch, self.optimizer, **kwargs)
        self.outputs = self._checked_outputs(outputs)
        self.log_buffer.update(outputs.get('log_vars', {}), outputs['num_samples'])
        step = self.optim_step
        if step is None or self.optimizer_hook is not None:
            return outputs  # the model (no optimizer_config) or the user's hook steps
        if step.starts_group(self.iter):  # every iteration, unless accumulating gradients
            self.optimizer.zero_grad()
        if step.detect_anomalous_params:
            step.log_params_outside_graph(outputs['loss'], self.model, self.logger)
        # loss / accumulation group size, x loss scale under float16, then backward
        step.backward(outputs['loss'], self.iter, self.max_iters)
        if step.ends_group(self.iter, self.max_iters):
            step.unscale_(self.optimizer)  # true gradients before clipping
            grad_norm = step.clip_(self.model.parameters())
            step.step(self.optimizer)  # the scaler skips it when a gradient overflowed
            self.log_buffer.update(step.log_vars(grad_norm), outputs['num_samples'])
        return outputs

    def run_iter(self, data_batch, train_mode: bool, **kwargs) -> dict:
        """A training step (:meth:`run_step`) or, with ``train_mode=False``, the model's
        ``val_step`` (losses on validation data, no backward) logged the same way.

        Args:
            data_batch: a collated batch.
            train_mode: train (``True``) or validation losses.

        Returns:
            the model's outputs ``dict(loss, log_vars, num_samples)``.
        """
        if train_mode:
            return self.run_step(data_batch, **kwargs)
        with self.autocast():  # the same precision as the training forward
            outputs = self.model.val_step(data_batch, self.optimizer, **kwargs)
        outputs = self._checked_outputs(outputs)
        self.log_buffer.update(outputs.get('log_vars', {}), outputs['num_samples'])
        self.outputs = outputs
        return outputs

    def _checked_outputs(self, outputs) -> dict:
        if not isinstance(outputs, dict):
            raise TypeError(f'{self.model_name}.train_step()/val_step() must return a dict '
                            f'with "loss", "log_vars" and "num_samples", got '
                            f'{type(outputs).__name__}')
        outputs.setdefault('num_samples', 1)
        return outputs

    def _warn_about_step(self) -> None:
        if self.optim_step is not None:
            self.optim_step.warn_about(self.model, self.iter, self.logger)

    # ----------------------------------------------------------------- checkpoints
    def _loader_state(self) -> dict:
        return {'epoch': self.epoch, 'pos': 0}

    def checkpoint_state(self) -> dict:
        """Everything besides weights and optimizer that an exact resume needs."""
        hook_states = {}
        for hook in self._hooks:
            if hasattr(hook, 'state_dict'):
                hook_states[type(hook).__name__] = hook.state_dict()
        state = {'rng_state': get_rng_state(), 'loader_state': self._loader_state(),
                 'hooks': hook_states}
        if self.optim_step is not None and self.optim_step.scaler is not None:
            state['scaler'] = self.optim_step.scaler.state_dict()
        return state

    def _checkpoint_meta(self) -> dict:
        raise NotImplementedError

    @master_only
    def save_checkpoint(self, out_dir: str, filename_tmpl: str = 'epoch_{}.pth',
                        save_optimizer: bool = True, meta: dict | None = None,
                        create_symlink: bool = True) -> str:
        """Write ``out_dir/filename_tmpl.format(n)`` (atomically) and point ``latest.pth``
        at it; return the path. Rank 0 only."""
        full_meta = dict(self.meta)
        # hook_msgs stays (as in MMCV): best_score / best_ckpt of save_best and last_ckpt
        # survive a resume
        if 'hook_msgs' in full_meta:
            full_meta['hook_msgs'] = dict(full_meta['hook_msgs'])
        full_meta.update(meta or {})
        full_meta.update(self._checkpoint_meta())
        number = full_meta['epoch'] if 'epoch' in filename_tmpl else full_meta['iter']
        filepath = osp.join(out_dir, filename_tmpl.format(number))
        optimizer = self.optimizer if save_optimizer else None
        state = self.checkpoint_state()
        save_checkpoint(self.model, filepath, optimizer=optimizer, meta=full_meta, **state)
        if create_symlink:
            link_or_copy(filepath, osp.join(out_dir, 'latest.pth'))
        return filepath

    def load_checkpoint(self, filename: str, map_location='cpu', strict: bool = False,
                        revise_keys=((r'^module\.', ''),)) -> dict:
        """Load weights only (``load_from``); what was kept, re-initialised (the
        class-specific layers of a model for other classes), missing or unexpected goes to the
        log in one line (:func:`summarize_load_from`)."""
        checkpoint = load_checkpoint(self.model, filename, map_location, strict, self.logger,
                                     revise_keys=revise_keys, log_report=False)
        self.logger.log(*summarize_load_from(filename, checkpoint))
        return checkpoint

    def resume(self, checkpoint: str | dict, resume_optimizer: bool = True,
               map_location: str = 'cpu') -> None:
        """Continue a run exactly where ``checkpoint`` left it: weights, optimizer, loop
        counters, sampler position, hook states (AMP scaler, EMA) and RNG states."""
        filename = checkpoint if isinstance(checkpoint, str) else '(in memory)'
        if isinstance(checkpoint, str):
            checkpoint = load_checkpoint(self.model, checkpoint, map_location, strict=False,
                                         logger=self.logger)
            report = checkpoint['load_report']
            if report.missing or report.mismatched:
                raise DetforgeError(f'cannot resume from {filename}: it does not match the '
                                    f'model ({report})')
        meta = checkpoint.get('meta', {})
        self._epoch = int(meta.get('epoch', 0))
        self._iter = int(meta.get('iter', 0))
        self._inner_iter = 0
        if self.meta is None:
            self.meta = {}
        self.meta.setdefault('hook_msgs', {})
        for key in ('hook_msgs',):
            if key in meta:
                self.meta[key].update(meta[key])
        if 'optimizer' in checkpoint and resume_optimizer and self.optimizer is not None:
            if isinstance(self.optimizer, torch.optim.Optimizer):
                self.optimizer.load_state_dict(checkpoint['optimizer'])
            else:
                for name, optim in self.optimizer.items():
                    optim.load_state_dict(checkpoint['optimizer'][name])
        hook_states = checkpoint.get('hooks', {})
        if self.optim_step is not None:
            self.optim_step.load_state_dict({'scaler': _saved_scaler(checkpoint)})
        for hook in self._hooks:
            name = type(hook).__name__
            if name in hook_states and hasattr(hook, 'load_state_dict'):
                hook.load_state_dict(hook_states[name])
        self._resume_loader_state = checkpoint.get('loader_state')
        self._apply_resumed_state(meta)
        if 'rng_state' in checkpoint:
            set_rng_state(checkpoint['rng_state'])
        self.logger.info('resumed from %s at epoch %d, iter %d', filename, self.epoch,
                         self.iter)

    def _apply_resumed_state(self, meta: dict) -> None:
        pass


def _saved_scaler(checkpoint: dict) -> dict | None:
    """The AMP scaler state of a checkpoint: ``scaler``, or where detforge kept it before the
    step moved into the runner (the optimizer hook's state)."""
    if checkpoint.get('scaler') is not None:
        return checkpoint['scaler']
    for name in ('AmpOptimizerHook', 'Fp16OptimizerHook', 'GradientCumulativeFp16OptimizerHook'):
        state = checkpoint.get('hooks', {}).get(name) or {}
        if state.get('scaler') is not None:
            return state['scaler']
    return None


def _ensure_writable(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise DetforgeError(f'cannot create the work dir {path}: {e.strerror}') from e
    if not os.access(path, os.W_OK | os.X_OK):
        raise DetforgeError(f'the work dir {path} is not writable; choose another with '
                            f'--work-dir')


def set_sampler_epoch(data_loader, epoch: int) -> None:
    """Tell the loader's sampler (or batch sampler) which epoch comes, for its shuffle."""
    for sampler in (getattr(data_loader, 'batch_sampler', None),
                    getattr(data_loader, 'sampler', None)):
        if sampler is not None and hasattr(sampler, 'set_epoch'):
            sampler.set_epoch(epoch)
            return


def set_sampler_start(data_loader, num_batches: int) -> bool:
    """Make the next pass over ``data_loader`` skip its first ``num_batches`` batches;
    ``False`` if the sampler cannot (the caller then skips them itself)."""
    batch_sampler = getattr(data_loader, 'batch_sampler', None)
    if batch_sampler is not None and hasattr(batch_sampler, 'set_start'):
        batch_sampler.set_start(num_batches)
        return True
    sampler = getattr(data_loader, 'sampler', None)
    if sampler is not None and hasattr(sampler, 'set_start'):
        sampler.set_start(num_batches)  # the contract counts batches for every sampler
        return True
    return False
