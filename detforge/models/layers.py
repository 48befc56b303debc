"""Normalisation layers built from configs, and the conv + norm + activation block."""
from __future__ import annotations

import copy

import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from detforge.registry import NORM_LAYERS, BuildError

__all__ = ['build_norm_layer', 'ConvModule', 'FrozenBatchNorm2d']

# config name -> (class, abbreviation used in module names: bn1, gn1 ...)
NORM_LAYERS.register_module('BN', module=nn.BatchNorm2d)
NORM_LAYERS.register_module('BN1d', module=nn.BatchNorm1d)
NORM_LAYERS.register_module('BN2d', module=nn.BatchNorm2d)
NORM_LAYERS.register_module('SyncBN', module=nn.SyncBatchNorm)
NORM_LAYERS.register_module('GN', module=nn.GroupNorm)
NORM_LAYERS.register_module('LN', module=nn.LayerNorm)
NORM_LAYERS.register_module('IN', module=nn.InstanceNorm2d)
NORM_LAYERS.register_module(['FrozenBN', 'FrozenBatchNorm2d'], module=FrozenBatchNorm2d)

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
