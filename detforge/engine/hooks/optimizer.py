"""Backward and optimizer step: plain, mixed precision, and with gradient accumulation.

``optimizer_config=dict(grad_clip=dict(max_norm=35, norm_type=2))`` builds
:class:`OptimizerHook`; ``fp16=dict(loss_scale='dynamic')`` in a config makes
``train_detector`` use :class:`Fp16OptimizerHook` (autocast float16 + ``GradScaler``), and
``amp=dict(dtype='bfloat16')`` :class:`AmpOptimizerHook` in bfloat16 (no scaler needed; the
mixed precision that CPUs run).
"""
from __future__ import annotations

import contextlib
import functools

import torch
from torch import nn
from torch.nn.utils import clip_grad

from detforge.registry import HOOKS, BuildError

from ..dist_utils import unwrap_model
from .hook import Hook

__all__ = ['OptimizerHook', 'AmpOptimizerHook', 'Fp16OptimizerHook',
           'GradientCumulativeOptimizerHook', 'GradientCumulativeFp16OptimizerHook']


@HOOKS.register_module()
class OptimizerHook(Hook):
    """``zero_grad``, ``loss.backward()``, optional gradient clipping, ``optimizer.step()``.

    Args:
        grad_clip: ``dict(max_norm=..., norm_type=2)`` for ``clip_grad_norm_`` over the
            parameters that have a gradient; the total norm before clipping is logged as
            ``grad_norm``.
        detect_anomalous_params: log parameters that got no gradient (slow; debugging).
    """

    def __init__(self, grad_clip: dict | None = None, detect_anomalous_params: bool = False):
        if grad_clip is not None:
            if not isinstance(grad_clip, dict) or 'max_norm' not in grad_clip:
                raise BuildError(f'grad_clip must be dict(max_norm=..., norm_type=2), got '
                                 f'{grad_clip!r}')
        self.grad_clip = grad_clip
        self.detect_anomalous_params = detect_anomalous_params

    def clip_grads(self, params) -> float | None:
        params = [p for p in params if p.requires_grad and p.grad is not None]
        if not params:
            return None
        return float(clip_grad.clip_grad_norm_(params, **self.grad_clip))

    def _clip_and_log(self, runner) -> None:
        if self.grad_clip is not None:
            grad_norm = self.clip_grads(runner.model.parameters())
            if grad_norm is not None:
                runner.log_buffer.update({'grad_norm': grad_norm},
                                         runner.outputs.get('num_samples', 1))

    def after_train_iter(self, runner) -> None:
        runner.optimizer.zero_grad()
        loss = runner.outputs['loss']
        if self.detect_anomalous_params:
            self.detect_anomalous_parameters(loss, runner)
        loss.backward()
        self._clip_and_log(runner)
        runner.optimizer.step()

    @staticmethod
    def detect_anomalous_parameters(loss, runner) -> None:
        visited, stack, reached = set(), [loss.grad_fn], set()
        while stack:
            fn = stack.pop()
            if fn is None or fn in visited:
                continue
            visited.add(fn)
            if hasattr(fn, 'variable'):
                reached.add(fn.variable)
            stack.extend(next_fn for next_fn, _ in fn.next_functions)
        for name, param in unwrap_model(runner.model).named_parameters():
            if param.requires_grad and param not in reached:
                runner.logger.error(f'{name} with shape {tuple(param.size())} is not in the '
                                    f'computational graph of the loss')


_DTYPES = {'float16': torch.float16, 'fp16': torch.float16, 'half': torch.float16,
           'bfloat16': torch.bfloat16, 'bf16': torch.bfloat16}


@HOOKS.register_module()
class AmpOptimizerHook(OptimizerHook):
    """Mixed precision: the forward pass runs under ``torch.autocast`` and, in float16,
    the loss is scaled by a ``GradScaler`` whose state is saved in checkpoints.

    Args:
        dtype: ``'float16'`` or ``'bfloat16'``.
        loss_scale: ``'dynamic'``, a fixed number, or a dict of ``GradScaler`` arguments
            (float16 only; bfloat16 has float32's range and needs no scaling).
        grad_clip: as :class:`OptimizerHook` (applied to the unscaled gradients).
        device_type: ``'cuda'`` or ``'cpu'``; default: where the model is.
    """

    def __init__(self, dtype: str = 'float16', loss_scale: str | float | dict = 'dynamic',
                 grad_clip: dict | None = None, device_type: str | None = None,
                 distributed: bool = True, coalesce: bool = True, bucket_size_mb: int = -1,
                 **kwargs):
        super().__init__(grad_clip=grad_clip, **kwargs)
        if dtype not in _DTYPES:
            raise BuildError(f'amp dtype must be one of {", ".join(_DTYPES)}, got {dtype!r}')
        self.dtype = _DTYPES[dtype]
        self.loss_scale = loss_scale
        self.device_type = device_type
        self.scaler: torch.amp.GradScaler | None = None
        self._fixed_scale: float | None = None
        self._pending_state: dict | None = None
        if not (loss_scale == 'dynamic' or isinstance(loss_scale, (int, float, dict))
                or loss_scale is None):
            raise BuildError(f"loss_scale must be 'dynamic', a number or a dict of GradScaler "
                             f'arguments, got {loss_scale!r}')

    def before_run(self, runner) -> None:
        device_type = self.device_type or next(
            unwrap_model(runner.model).parameters()).device.type
        self.device_type = device_type
        runner.autocast = functools.partial(torch.autocast, device_type=device_type,
                                            dtype=self.dtype)
        if self.dtype == torch.float16 and self.loss_scale is not None:
            if self.loss_scale == 'dynamic':
                self.scaler = torch.amp.GradScaler(device_type)
            elif isinstance(self.loss_scale, dict):
                self.scaler = torch.amp.GradScaler(device_type, **self.loss_scale)
            else:
                self._fixed_scale = float(self.loss_scale)
                self.scaler = torch.amp.GradScaler(device_type, init_scale=self._fixed_scale)
            if self._pending_state is not None:
                self.scaler.load_state_dict(self._pending_state)
                self._pending_state = None
        # keep the model's own fp16 flag for code that checks it (mmcv's auto_fp16)
        unwrap_model(runner.model).fp16_enabled = True

    def after_train_iter(self, runner) -> None:
        runner.optimizer.zero_grad()
        loss = runner.outputs['loss']
        if self.scaler is None:
            loss.backward()
            self._clip_and_log(runner)
            runner.optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(runner.optimizer)
        self._clip_and_log(runner)
        self.scaler.step(runner.optimizer)
        self.scaler.update(self._fixed_scale)
        runner.log_buffer.update({'loss_scale': self.scaler.get_scale()})

    def after_run(self, runner) -> None:
        runner.autocast = contextlib.nullcontext

    def state_dict(self) -> dict:
        return {'scaler': self.scaler.state_dict() if self.scaler is not None else None}

    def load_state_dict(self, state: dict) -> None:
        if state.get('scaler') is None:
            return
        if self.scaler is not None:
            self.scaler.load_state_dict(state['scaler'])
        else:
            self._pending_state = state['scaler']


@HOOKS.register_module()
class Fp16OptimizerHook(AmpOptimizerHook):
    """MMDetection's name: float16 autocast with a ``GradScaler``
    (``fp16=dict(loss_scale=512.)`` or ``'dynamic'``)."""

    def __init__(self, loss_scale: str | float | dict = 512., grad_clip: dict | None = None,
                 dtype: str = 'float16', **kwargs):
        super().__init__(dtype=dtype, loss_scale=loss_scale, grad_clip=grad_clip, **kwargs)


def _has_batch_norm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


class _CumulativeMixin:
    """Accumulate gradients over ``cumulative_iters`` iterations, then step.

    The loss of each iteration is divided by the number of iterations in its group (the
    last group of a run may be shorter), so the accumulated gradient is the mean over the
    group: the same as one batch ``cumulative_iters`` times larger (without BatchNorm).
    """

    def _init_cumulative(self, cumulative_iters):
        if not (isinstance(cumulative_iters, int) and cumulative_iters > 0):
            raise BuildError(f'cumulative_iters must be a positive int, got {cumulative_iters!r}')
        self.cumulative_iters = cumulative_iters
        self.divisible_iters = 0
        self.remainder_iters = 0
        self.initialized = False

    def _init(self, runner):
        if runner.iter % self.cumulative_iters != 0:
            runner.logger.warning('resuming in the middle of a gradient-accumulation group: '
                                  'the gradients of its first iterations are lost')
        if _has_batch_norm(runner.model) and self.cumulative_iters > 1:
            runner.logger.warning('the model has BatchNorm layers: accumulating gradients is '
                                  'not the same as a larger batch for them')
        self.divisible_iters = runner.max_iters // self.cumulative_iters * self.cumulative_iters
        self.remainder_iters = runner.max_iters - self.divisible_iters
        self.initialized = True

    def _loss_factor(self, runner) -> int:
        if runner.iter < self.divisible_iters:
            return self.cumulative_iters
        return self.remainder_iters

    def _should_step(self, runner) -> bool:
        return self.every_n_iters(runner, self.cumulative_iters) or self.is_last_iter(runner)


@HOOKS.register_module()
class GradientCumulativeOptimizerHook(_CumulativeMixin, OptimizerHook):
    """``optimizer_config=dict(type='GradientCumulativeOptimizerHook', cumulative_iters=4)``."""

    def __init__(self, cumulative_iters: int = 1, **kwargs):
        super().__init__(**kwargs)
        self._init_cumulative(cumulative_iters)

    def before_run(self, runner):
        runner.optimizer.zero_grad()

    def after_train_iter(self, runner):
        if not self.initialized:
            self._init(runner)
        loss = runner.outputs['loss'] / self._loss_factor(runner)
        loss.backward()
        if self._should_step(runner):
            self._clip_and_log(runner)
            runner.optimizer.step()
            runner.optimizer.zero_grad()


@HOOKS.register_module()
class GradientCumulativeFp16OptimizerHook(_CumulativeMixin, AmpOptimizerHook):
    """Gradient accumulation with mixed precision."""

    def __init__(self, cumulative_iters: int = 1, **kwargs):
        super().__init__(**kwargs)
        self._init_cumulative(cumulative_iters)

    def before_run(self, runner):
        super().before_run(runner)
        runner.optimizer.zero_grad()

    def after_train_iter(self, runner):
        if not self.initialized:
            self._init(runner)
        loss = runner.outputs['loss'] / self._loss_factor(runner)
        if self.scaler is None:
            loss.backward()
        else:
            self.scaler.scale(loss).backward()
        if self._should_step(runner):
            if self.scaler is None:
                self._clip_and_log(runner)
                runner.optimizer.step()
            else:
                self.scaler.unscale_(runner.optimizer)
                self._clip_and_log(runner)
                self.scaler.step(runner.optimizer)
                self.scaler.update(self._fixed_scale)
            runner.optimizer.zero_grad()
