"""What turns a loss into updated weights: the settings ``Runner.run_step`` follows.

An MMDetection 2.x config spreads them over three keys; :func:`BaseRunner.configure_step`
reads them into one :class:`OptimizerStep`:

- ``optimizer_config=dict(grad_clip=dict(max_norm=35, norm_type=2))``: clipping;
- ``optimizer_config=dict(type='GradientCumulativeOptimizerHook', cumulative_iters=4)``:
  accumulate the gradients of 4 iterations, then step;
- ``fp16=dict(loss_scale='dynamic' | 512. | dict(...))``: the forward under float16
  autocast and the loss scaled by a ``GradScaler``; ``amp=dict(dtype='bfloat16')``:
  bfloat16 autocast (float32's range: no scaler; the mixed precision CPUs run).
"""
from __future__ import annotations

import contextlib
import logging

import torch
from torch import nn
from torch.nn.utils import clip_grad

from detforge.registry import BuildError

from ..dist_utils import unwrap_model

__all__ = ['OptimizerStep', 'AMP_DTYPES']

#: the names ``fp16`` / ``amp`` configs use for the autocast dtype
AMP_DTYPES = {'float16': torch.float16, 'fp16': torch.float16, 'half': torch.float16,
              'bfloat16': torch.bfloat16, 'bf16': torch.bfloat16}


class OptimizerStep:
    """Autocast dtype, loss scaling, gradient accumulation and clipping of a training step.

    Args:
        grad_clip: ``dict(max_norm=..., norm_type=2)`` for ``clip_grad_norm_`` over the
            parameters that have a gradient, or ``None`` (no clipping).
        dtype: ``None`` (float32), ``'float16'`` or ``'bfloat16'``: the autocast dtype of
            the forward pass; the weights stay float32.
        loss_scale: float16 only: ``'dynamic'``, a fixed number, a dict of ``GradScaler``
            arguments, or ``None`` (no scaling).
        cumulative_iters: iterations whose gradients are summed before one optimizer step;
            each loss is divided by the size of its group, so the step follows the mean
            gradient (the last group of a run may be shorter).
        detect_anomalous_params: log parameters the loss does not reach (slow; debugging).
        device_type: ``'cuda'`` or ``'cpu'`` for autocast and the scaler; default: where the
            model is when :meth:`setup` is called.
    """

    def __init__(self, grad_clip: dict | None = None, dtype: str | None = None,
                 loss_scale: str | float | dict | None = 'dynamic', cumulative_iters: int = 1,
                 detect_anomalous_params: bool = False, device_type: str | None = None):
        if grad_clip is not None and (not isinstance(grad_clip, dict)
                                      or 'max_norm' not in grad_clip):
            raise BuildError(f'grad_clip must be dict(max_norm=..., norm_type=2), got '
                             f'{grad_clip!r}')
        if dtype is not None and dtype not in AMP_DTYPES:
            raise BuildError(f'amp dtype must be one of {", ".join(AMP_DTYPES)}, got {dtype!r}')
        if not (loss_scale is None or loss_scale == 'dynamic'
                or isinstance(loss_scale, (int, float, dict))):
            raise BuildError(f"loss_scale must be 'dynamic', a number or a dict of GradScaler "
                             f'arguments, got {loss_scale!r}')
        if not (isinstance(cumulative_iters, int) and cumulative_iters > 0):
            raise BuildError(f'cumulative_iters must be a positive int, got {cumulative_iters!r}')
        self.grad_clip = grad_clip
        self.dtype = AMP_DTYPES[dtype] if dtype is not None else None
        self.loss_scale = loss_scale
        self.cumulative_iters = cumulative_iters
        self.detect_anomalous_params = detect_anomalous_params
        self.device_type = device_type
        self.scaler: torch.amp.GradScaler | None = None
        self._fixed_scale: float | None = None
        self._pending_scaler_state: dict | None = None

    def __repr__(self) -> str:
        dtype = str(self.dtype).replace('torch.', '') if self.dtype is not None else 'float32'
        return (f'OptimizerStep(grad_clip={self.grad_clip}, dtype={dtype}, '
                f'loss_scale={self.loss_scale if self.uses_scaler else None}, '
                f'cumulative_iters={self.cumulative_iters})')

    @property
    def uses_scaler(self) -> bool:
        return self.dtype == torch.float16 and self.loss_scale is not None

    # ---------------------------------------------------------------- before training
    def setup(self, model: nn.Module) -> None:
        """Pick the device type from ``model`` and create the ``GradScaler`` (once).

        Args:
            model: the model (possibly DDP-wrapped) whose parameters are stepped.
        """
        if self.device_type is None:
            self.device_type = next(model.parameters()).device.type
        if self.dtype is not None:
            # the model's own flag, for 2.x code that checks it (mmcv's auto_fp16)
            unwrap_model(model).fp16_enabled = True
        if self.scaler is not None or not self.uses_scaler:
            return
        if self.loss_scale == 'dynamic':
            self.scaler = torch.amp.GradScaler(self.device_type)
        elif isinstance(self.loss_scale, dict):
            self.scaler = torch.amp.GradScaler(self.device_type, **self.loss_scale)
        else:
            self._fixed_scale = float(self.loss_scale)
            self.scaler = torch.amp.GradScaler(self.device_type, init_scale=self._fixed_scale)
        if self._pending_scaler_state is not None:
            self.scaler.load_state_dict(self._pending_scaler_state)
            self._pending_scaler_state = None

    def warn_about(self, model: nn.Module, start_iter: int, logger: logging.Logger) -> None:
        """Say when accumulation is not what the user may think (BatchNorm, a resume in the
        middle of a group).

        Args:
            model: the model being trained.
            start_iter: the iteration the run starts (or resumes) at.
            logger: where the warnings go.
        """
        if self.cumulative_iters == 1:
            return
        if start_iter % self.cumulative_iters != 0:
            logger.warning('resuming in the middle of a gradient-accumulation group: the '
                           'gradients of its first iterations are lost')
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            logger.warning('the model has BatchNorm layers: accumulating gradients is not the '
                           'same as a larger batch for them')

    # ---------------------------------------------------------------- one iteration
    def autocast(self):
        """The context the forward pass runs in.

        Returns:
            ``torch.autocast(device_type, dtype)`` under AMP, else a null context.
        """
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type or 'cpu', dtype=self.dtype)

    def starts_group(self, it: int) -> bool:
        """Whether the gradients are zeroed before the backward of iteration ``it``.

        Args:
            it: the 0-based iteration.

        Returns:
            ``True`` when ``it`` begins an accumulation group (always, without accumulation).
        """
        return it % self.cumulative_iters == 0

    def ends_group(self, it: int, max_iters: int | None) -> bool:
        """Whether the optimizer steps after iteration ``it``.

        Args:
            it: the 0-based iteration.
            max_iters: the run's length, or ``None`` when unknown.

        Returns:
            ``True`` at the end of each accumulation group and at the run's last iteration.
        """
        return (it + 1) % self.cumulative_iters == 0 or (
            max_iters is not None and it + 1 == max_iters)

    def group_size(self, it: int, max_iters: int | None) -> int:
        """The number of iterations whose gradients add up with those of ``it``.

        Args:
            it: the 0-based iteration.
            max_iters: the run's length, or ``None`` when unknown.

        Returns:
            ``cumulative_iters``, or fewer in the run's last, shorter group.
        """
        n = self.cumulative_iters
        if max_iters is None or it < max_iters // n * n:
            return n
        return max_iters - max_iters // n * n

    def backward(self, loss: torch.Tensor, it: int = 0, max_iters: int | None = None) -> None:
        """``loss.backward()``, the loss divided by its group's size (accumulation) and
        multiplied by the scaler's scale (float16).

        Args:
            loss: the scalar total loss of the iteration.
            it: the 0-based iteration (for the accumulation group).
            max_iters: the run's length (its last group may be shorter), or ``None``.
        """
        if self.cumulative_iters > 1:
            loss = loss / self.group_size(it, max_iters)
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        loss.backward()

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide the gradients by the loss scale in place (before clipping looks at them);
        nothing without a scaler.

        Args:
            optimizer: the optimizer whose parameters' gradients are unscaled.
        """
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def clip_(self, params) -> float | None:
        """Clip the gradients of ``params`` in place.

        Args:
            params: iterable of parameters (those without a gradient are skipped).

        Returns:
            the total gradient norm before clipping, or ``None`` without ``grad_clip`` (or
            when no parameter has a gradient).
        """
        if self.grad_clip is None:
            return None
        params = [p for p in params if p.requires_grad and p.grad is not None]
        if not params:
            return None
        return float(clip_grad.clip_grad_norm_(params, **self.grad_clip))

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()``; with a scaler the step is skipped when a gradient overflowed,
        and the scale is updated (halved on overflow, grown after stable steps; a fixed
        ``loss_scale`` stays).

        Args:
            optimizer: the optimizer to step.
        """
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update(self._fixed_scale)

    def log_vars(self, grad_norm: float | None) -> dict[str, float]:
        """What the step adds to the log.

        Args:
            grad_norm: the norm :meth:`clip_` returned, or ``None``.

        Returns:
            ``{'grad_norm': ...}`` when clipping, and ``{'loss_scale': ...}`` with a scaler.
        """
        out = {}
        if grad_norm is not None:
            out['grad_norm'] = grad_norm
        if self.scaler is not None:
            out['loss_scale'] = self.scaler.get_scale()
        return out

    @staticmethod
    def log_params_outside_graph(loss: torch.Tensor, model: nn.Module,
                                 logger: logging.Logger) -> None:
        """Log every trainable parameter of ``model`` that ``loss`` does not depend on.

        Args:
            loss: the scalar loss, with its graph.
            model: the model (possibly DDP-wrapped).
            logger: where the names go (as errors).
        """
        visited, stack, reached = set(), [loss.grad_fn], set()
        while stack:
            fn = stack.pop()
            if fn is None or fn in visited:
                continue
            visited.add(fn)
            if hasattr(fn, 'variable'):
                reached.add(fn.variable)
            stack.extend(next_fn for next_fn, _ in fn.next_functions)
        for name, param in unwrap_model(model).named_parameters():
            if param.requires_grad and param not in reached:
                logger.error(f'{name} with shape {tuple(param.size())} is not in the '
                             f'computational graph of the loss')

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        """The state to checkpoint.

        Returns:
            ``{'scaler': GradScaler state or None}``.
        """
        return {'scaler': self.scaler.state_dict() if self.scaler is not None else None}

    def load_state_dict(self, state: dict) -> None:
        """Restore the scaler (kept until :meth:`setup` creates it, if not yet created).

        Args:
            state: what :meth:`state_dict` returned (``None`` or no scaler: nothing to do).
        """
        if not state or state.get('scaler') is None:
            return
        if self.scaler is not None:
            self.scaler.load_state_dict(state['scaler'])
        else:
            self._pending_scaler_state = state['scaler']
