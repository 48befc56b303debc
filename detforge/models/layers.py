"""Normalisation layers built from configs, and the conv + norm + activation block."""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.ops import FrozenBatchNorm2d

from detforge.registry import NORM_LAYERS, BuildError

__all__ = ['build_norm_layer', 'ConvModule', 'FrozenBatchNorm2d', 'SyncBatchNorm']

# config name -> (class, abbreviation used in module names: bn1, gn1 ...)
NORM_LAYERS.register_module('BN', module=nn.BatchNorm2d)
NORM_LAYERS.register_module('BN1d', module=nn.BatchNorm1d)
NORM_LAYERS.register_module('BN2d', module=nn.BatchNorm2d)
NORM_LAYERS.register_module('GN', module=nn.GroupNorm)
NORM_LAYERS.register_module('LN', module=nn.LayerNorm)
NORM_LAYERS.register_module('IN', module=nn.InstanceNorm2d)
NORM_LAYERS.register_module(['FrozenBN', 'FrozenBatchNorm2d'], module=FrozenBatchNorm2d)


class _DifferentiableAllReduce(torch.autograd.Function):
    """Sum over ranks whose backward is again a sum over ranks (the gradient of every
    rank's loss with respect to this rank's share of the sum)."""

    @staticmethod
    def forward(ctx, tensor, group):
        import torch.distributed as dist
        ctx.group = group
        tensor = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(tensor, group=group)
        return tensor

    @staticmethod
    def backward(ctx, grad):
        return _DifferentiableAllReduce.apply(grad, ctx.group), None


class SyncBatchNorm(_BatchNorm):
    """``norm_cfg=dict(type='SyncBN')``: batch norm whose batch statistics are those of the
    whole distributed batch (all ranks), as if one process saw every image.

    torch's :class:`torch.nn.SyncBatchNorm` only runs on GPUs (and DDP refuses it in a CPU
    model), so this layer does the synchronisation itself:

    * training with a process group of more than one rank: each rank sums ``x`` per
      channel, the sums (and element counts) are all-reduced to the global mean, then the
      squared deviations are all-reduced to the global biased variance. Both reductions
      are differentiable (their backward all-reduces the gradient), so every rank's
      gradient flows through the shared statistics exactly as in one process that holds
      the whole batch. Works with gloo (CPU) and NCCL.
    * one process, or eval mode: plain batch norm (``F.batch_norm``), so a SyncBN model
      trains and tests in a single process too.
    * on CUDA, :func:`detforge.engine.wrap_distributed` swaps these layers for torch's
      :class:`torch.nn.SyncBatchNorm` (fused kernels, same parameters and buffers, same
      state-dict keys): see :meth:`convert_to_torch`.

    The running statistics follow :class:`torch.nn.BatchNorm2d` (momentum, unbiased variance
    over the global count), hence are identical on all ranks.
    """

    _abbr_ = 'bn'

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, process_group=None,
                 device=None, dtype=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats,
                         device=device, dtype=dtype)
        self.process_group = process_group

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f'SyncBN expects (N, C, ...) input, got {x.dim()}D')

    def _group(self):
        import torch.distributed as dist
        return self.process_group or dist.group.WORLD

    def _world_size(self) -> int:
        import torch.distributed as dist
        if not (dist.is_available() and dist.is_initialized()):
            return 1
        return dist.get_world_size(self._group())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (N, C, *) -> normalised ``x``, same shape."""
        if not self.training or self._world_size() == 1:
            return super().forward(x)
        self._check_input_dim(x)
        num_channels = x.shape[1]
        dims = [0] + list(range(2, x.dim()))
        shape = (1, num_channels) + (1,) * (x.dim() - 2)
        # one collective for the per-channel sums and this rank's element count
        count = x.new_full((1,), x.numel() // num_channels)
        totals = _DifferentiableAllReduce.apply(torch.cat([x.sum(dims), count]), self._group())
        total_count = totals[-1]
        mean = totals[:num_channels] / total_count
        centred = x - mean.view(shape)
        # two passes (sums, then squared deviations): as accurate as F.batch_norm's variance
        var = _DifferentiableAllReduce.apply(centred.square().sum(dims), self._group()) \
            / total_count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = (1.0 / self.num_batches_tracked.item() if self.momentum is None
                          else self.momentum)
                unbiased = var * total_count / (total_count - 1).clamp(min=1)
                self.running_mean.lerp_(mean, factor)
                self.running_var.lerp_(unbiased, factor)
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out

    @classmethod
    def convert_to_torch(cls, module: nn.Module) -> nn.Module:
        """``module`` with every :class:`SyncBatchNorm` replaced by a
        :class:`torch.nn.SyncBatchNorm` that shares its parameters and buffers (for CUDA
        models; the state-dict keys stay the same)."""
        if isinstance(module, cls):
            torch_bn = nn.SyncBatchNorm(module.num_features, module.eps, module.momentum,
                                        module.affine, module.track_running_stats,
                                        module.process_group)
            if module.affine:
                torch_bn.weight, torch_bn.bias = module.weight, module.bias
            if module.track_running_stats:
                torch_bn.running_mean = module.running_mean
                torch_bn.running_var = module.running_var
                torch_bn.num_batches_tracked = module.num_batches_tracked
            torch_bn.train(module.training)
            return torch_bn
        for name, child in module.named_children():
            converted = cls.convert_to_torch(child)
            if converted is not child:
                setattr(module, name, converted)
        return module


NORM_LAYERS.register_module('SyncBN', module=SyncBatchNorm)

_ABBR = {'BN': 'bn', 'BN1d': 'bn', 'BN2d': 'bn', 'SyncBN': 'bn', 'FrozenBN': 'bn',
         'FrozenBatchNorm2d': 'bn', 'GN': 'gn', 'LN': 'ln', 'IN': 'in'}


def build_norm_layer(cfg: dict, num_features: int, postfix: int | str = '') -> tuple[str, nn.Module]:
    """Build a normalisation layer over ``num_features`` channels.

    Args:
        cfg: ``dict(type='BN' | 'SyncBN' | 'GN' | 'FrozenBN' | 'LN' | 'IN', requires_grad=True,
            **layer_args)``; GN needs ``num_groups``.
        num_features: channels.
        postfix: appended to the name (``bn1``).

    Returns:
        ``(name, layer)``, e.g. ``('bn1', BatchNorm2d(64))``. With ``requires_grad=False`` the
        affine parameters are frozen.
    """
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise BuildError(f'norm_cfg must be a dict with a "type" key, got {cfg!r}', cfg)
    args = copy.deepcopy(dict(cfg))
    layer_type = args.pop('type')
    cls = NORM_LAYERS.get(layer_type) if isinstance(layer_type, str) else layer_type
    if cls is None:
        hint = NORM_LAYERS.suggest(str(layer_type))
        raise BuildError(f"'{layer_type}' is not a norm layer; expected one of BN, SyncBN, GN, "
                         f"FrozenBN, LN, IN" + (f" (did you mean {hint[0]!r}?)" if hint else ''), cfg)
    requires_grad = args.pop('requires_grad', True)
    abbr = _ABBR.get(layer_type, getattr(cls, '_abbr_', 'norm')) if isinstance(layer_type, str) else 'norm'
    name = f'{abbr}{postfix}'
    args.setdefault('eps', 1e-5)
    if cls is nn.GroupNorm:
        if 'num_groups' not in args:
            raise BuildError(f'GN needs num_groups, e.g. dict(type="GN", num_groups=32); got {cfg!r}', cfg)
        layer = nn.GroupNorm(num_channels=num_features, **args)
    elif cls is FrozenBatchNorm2d:
        layer = FrozenBatchNorm2d(num_features, eps=args.get('eps', 1e-5))
    elif cls is nn.LayerNorm:
        layer = nn.LayerNorm(num_features, **args)
    else:
        layer = cls(num_features, **args)
        if cls is nn.SyncBatchNorm and hasattr(layer, '_specify_ddp_gpu_num'):
            layer._specify_ddp_gpu_num(1)
    for p in layer.parameters():
        p.requires_grad = requires_grad
    return name, layer


_ACTIVATIONS = {'ReLU': nn.ReLU, 'LeakyReLU': nn.LeakyReLU, 'ReLU6': nn.ReLU6, 'SiLU': nn.SiLU,
                'Swish': nn.SiLU, 'GELU': nn.GELU, 'Sigmoid': nn.Sigmoid, 'Tanh': nn.Tanh}


class ConvModule(nn.Module):
    """Conv2d, then an optional norm layer, then an optional activation (MMCV's block; the
    submodule names ``conv``, ``bn``/``gn`` and ``activate`` match its checkpoints).

    ``bias='auto'`` gives the conv a bias only when there is no norm layer.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias='auto', conv_cfg: dict | None = None,
                 norm_cfg: dict | None = None, act_cfg: dict | None = dict(type='ReLU'),
                 inplace: bool = True):
        super().__init__()
        if conv_cfg is not None and conv_cfg.get('type', 'Conv2d') not in ('Conv2d', 'Conv'):
            raise BuildError(f"conv_cfg type {conv_cfg.get('type')!r} is not supported; only Conv2d",
                             conv_cfg)
        with_norm = norm_cfg is not None
        if bias == 'auto':
            bias = not with_norm
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation,
                              groups, bias=bias)
        self.norm_name = None
        if with_norm:
            self.norm_name, norm = build_norm_layer(norm_cfg, out_channels)
            self.add_module(self.norm_name, norm)
        self.activate = None
        if act_cfg is not None:
            act_args = dict(act_cfg)
            act_type = act_args.pop('type')
            if act_type not in _ACTIVATIONS:
                raise BuildError(f'activation {act_type!r} is not supported; expected one of '
                                 f'{", ".join(_ACTIVATIONS)}', act_cfg)
            if act_type in ('ReLU', 'LeakyReLU', 'ReLU6', 'SiLU', 'Swish'):
                act_args.setdefault('inplace', inplace)
            self.activate = _ACTIVATIONS[act_type](**act_args)

    @property
    def norm(self) -> nn.Module | None:
        return getattr(self, self.norm_name) if self.norm_name else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm_name:
            x = getattr(self, self.norm_name)(x)
        if self.activate is not None:
            x = self.activate(x)
        return x
