"""MMDetection 2.x's optimizer hooks: names that ``optimizer_config`` uses, and the base of a
user's own hook.

detforge does backward and step in ``Runner.run_step`` (one function, read top to bottom).
A config that names one of the classes below (or no type) is *translated*: the hook is
built, its :class:`OptimizerStep` becomes the runner's step settings, and the hook itself
is not registered. A **subclass** of them (a user's registered hook, e.g. gradient
accumulation written for MMDetection 2.x) is registered instead, at MMCV's priority
``ABOVE_NORMAL``, and its ``after_train_iter`` does backward and step, as in MMCV; the runner
then only runs the forward (under the hook's autocast dtype) and logs.
``OptimizerHook.after_train_iter`` below is that MMCV step, for subclasses that call
``super()`` and for hooks registered by hand; it follows the same :class:`OptimizerStep`.
"""
from __future__ import annotations

import contextlib

from detforge.registry import HOOKS

from ..optimizer.optimizer_step import OptimizerStep
from .hook import Hook

__all__ = ['OptimizerHook', 'AmpOptimizerHook', 'Fp16OptimizerHook',
           'GradientCumulativeOptimizerHook', 'GradientCumulativeFp16OptimizerHook',
           'is_translated_optimizer_hook']


@HOOKS.register_module()
class OptimizerHook(Hook):
    """``optimizer_config=dict(grad_clip=dict(max_norm=35, norm_type=2))``.

    Args:
        grad_clip: ``dict(max_norm=..., norm_type=2)``; the total norm before clipping is
            logged as ``grad_norm``.
        detect_anomalous_params: log parameters that got no gradient (slow; debugging).
    """

    def __init__(self, grad_clip: dict | None = None, detect_anomalous_params: bool = False):
        self.grad_clip = grad_clip
        self.detect_anomalous_params = detect_anomalous_params
        self.optim_step = OptimizerStep(grad_clip=grad_clip,
                                        detect_anomalous_params=detect_anomalous_params)

    @property
    def scaler(self):
        """The AMP ``GradScaler`` (``None`` without float16 loss scaling)."""
        return self.optim_step.scaler

    def clip_grads(self, params) -> float | None:
        """MMCV's name: clip the gradients of ``params``; returns the norm before clipping."""
        return self.optim_step.clip_(params)

    def before_run(self, runner) -> None:
        self.optim_step.setup(runner.model)
        runner.autocast = self.optim_step.autocast

    def after_train_iter(self, runner) -> None:
        """MMCV's step (used only when this hook is registered, i.e. for subclasses):
        zero_grad at a group's start, backward (scaled), unscale, clip, step."""
        step, optimizer = self.optim_step, runner.optimizer
        it, max_iters = getattr(runner, 'iter', 0), getattr(runner, 'max_iters', None)
        loss = runner.outputs['loss']
        if step.starts_group(it):
            optimizer.zero_grad()
        if self.detect_anomalous_params:
            step.log_params_outside_graph(loss, runner.model, runner.logger)
        step.backward(loss, it, max_iters)
        if step.ends_group(it, max_iters):
            step.unscale_(optimizer)
            grad_norm = self.clip_grads(runner.model.parameters())
            step.step(optimizer)
            runner.log_buffer.update(step.log_vars(grad_norm),
                                     runner.outputs.get('num_samples', 1))

    def after_run(self, runner) -> None:
        runner.autocast = contextlib.nullcontext

    def state_dict(self) -> dict:
        return self.optim_step.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optim_step.load_state_dict(state)


@HOOKS.register_module()
class AmpOptimizerHook(OptimizerHook):
    """Mixed precision: the forward under ``torch.autocast``; in float16 the loss is scaled
    by a ``GradScaler`` whose state is saved in checkpoints.

    Args:
        dtype: ``'float16'`` or ``'bfloat16'``.
        loss_scale: ``'dynamic'``, a fixed number, or a dict of ``GradScaler`` arguments
            (float16 only; bfloat16 has float32's range and needs no scaling).
        grad_clip: as :class:`OptimizerHook` (applied to the unscaled gradients).
        device_type: ``'cuda'`` or ``'cpu'``; default: where the model is.
        distributed, coalesce, bucket_size_mb: accepted for MMCV configs; DDP already
            averages the gradients.
    """

    def __init__(self, dtype: str = 'float16', loss_scale: str | float | dict = 'dynamic',
                 grad_clip: dict | None = None, device_type: str | None = None,
                 distributed: bool = True, coalesce: bool = True, bucket_size_mb: int = -1,
                 cumulative_iters: int = 1, detect_anomalous_params: bool = False):
        self.grad_clip = grad_clip
        self.detect_anomalous_params = detect_anomalous_params
        self.loss_scale = loss_scale
        self.optim_step = OptimizerStep(grad_clip=grad_clip, dtype=dtype, loss_scale=loss_scale,
                                        cumulative_iters=cumulative_iters,
                                        detect_anomalous_params=detect_anomalous_params,
                                        device_type=device_type)
        self.dtype = self.optim_step.dtype


@HOOKS.register_module()
class Fp16OptimizerHook(AmpOptimizerHook):
    """MMDetection's name: float16 autocast with a ``GradScaler``
    (``fp16=dict(loss_scale=512.)`` or ``'dynamic'``)."""

    def __init__(self, loss_scale: str | float | dict = 512., grad_clip: dict | None = None,
                 dtype: str = 'float16', **kwargs):
        super().__init__(dtype=dtype, loss_scale=loss_scale, grad_clip=grad_clip, **kwargs)


@HOOKS.register_module()
class GradientCumulativeOptimizerHook(OptimizerHook):
    """``optimizer_config=dict(type='GradientCumulativeOptimizerHook', cumulative_iters=4)``:
    the same step as a batch 4 times larger (without BatchNorm)."""

    def __init__(self, cumulative_iters: int = 1, grad_clip: dict | None = None,
                 detect_anomalous_params: bool = False):
        self.grad_clip = grad_clip
        self.detect_anomalous_params = detect_anomalous_params
        self.cumulative_iters = cumulative_iters
        self.optim_step = OptimizerStep(grad_clip=grad_clip, cumulative_iters=cumulative_iters,
                                        detect_anomalous_params=detect_anomalous_params)


@HOOKS.register_module()
class GradientCumulativeFp16OptimizerHook(AmpOptimizerHook):
    """Gradient accumulation with mixed precision."""

    def __init__(self, cumulative_iters: int = 1, **kwargs):
        super().__init__(cumulative_iters=cumulative_iters, **kwargs)
        self.cumulative_iters = cumulative_iters


_TRANSLATED = (OptimizerHook, AmpOptimizerHook, Fp16OptimizerHook,
               GradientCumulativeOptimizerHook, GradientCumulativeFp16OptimizerHook)


def is_translated_optimizer_hook(hook) -> bool:
    """Whether ``hook`` is one of detforge's own optimizer hooks (its settings go into
    ``Runner.run_step``), not a user's subclass (which is registered and steps itself)."""
    return type(hook) in _TRANSLATED
