"""Fold batch norm into the convolution before it, for faster inference.

In eval mode a batch norm is an affine map per channel,
``y = (x - mean) / sqrt(var + eps) * gamma + beta``, so a convolution followed by it is one
convolution with rescaled weights and a new bias:

    w' = w * gamma / sqrt(var + eps)            (per output channel)
    b' = (b - mean) * gamma / sqrt(var + eps) + beta

:func:`fuse_conv_bn` walks a model as MMCV's ``fuse_conv_bn`` does: within each module, a
batch norm registered right after a ``Conv2d`` (``conv1``/``bn1`` in a ResNet block, ``conv``
then ``bn`` in a ``ConvModule``, ``Sequential(conv, bn)`` in a downsample) is folded into it
and replaced by ``nn.Identity``. That registration order is the forward order in every module
detforge ships; a custom module that registers a norm after a convolution it does not follow
would be fused wrongly, so :func:`fuse_detector` checks the outputs before and after on a
probe image and refuses a model whose results change. Group norm is not foldable (its
statistics depend on the input) and stays.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from detforge.registry import DetforgeError

__all__ = ['fold_bn_into_conv', 'fuse_conv_bn', 'fuse_detector']


@torch.no_grad()
def fold_bn_into_conv(conv: nn.Conv2d, bn: _BatchNorm) -> nn.Conv2d:
    """Return a new ``Conv2d`` computing ``bn(conv(x))`` with ``bn`` in eval mode.

    Args:
        conv: convolution with ``C_out`` output channels (with or without bias).
        bn: batch norm over ``C_out`` channels with running statistics.

    Returns:
        A ``Conv2d`` of the same geometry with bias, weights ``(C_out, C_in/g, kh, kw)``
        scaled per output channel.
    """
    if bn.running_mean is None or bn.running_var is None:
        raise DetforgeError(f'{type(bn).__name__} without running statistics cannot be folded')
    if bn.num_features != conv.out_channels:
        raise DetforgeError(f'a batch norm over {bn.num_features} channels does not follow a '
                            f'convolution with {conv.out_channels} outputs')
    scale = torch.rsqrt(bn.running_var.float() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.float()
    bias = conv.bias.float() if conv.bias is not None else torch.zeros_like(scale)
    shift = (bias - bn.running_mean.float()) * scale
    if bn.bias is not None:
        shift = shift + bn.bias.float()
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      conv.padding, conv.dilation, conv.groups, bias=True,
                      padding_mode=conv.padding_mode, device=conv.weight.device,
                      dtype=conv.weight.dtype)
    fused.weight.copy_(conv.weight.float() * scale.view(-1, 1, 1, 1))
    fused.bias.copy_(shift)
    if conv.weight.dim() == 4 and not conv.weight.is_contiguous() and \
            conv.weight.is_contiguous(memory_format=torch.channels_last):
        fused = fused.to(memory_format=torch.channels_last)  # keep the model's layout
    return fused


def fuse_conv_bn(module: nn.Module) -> nn.Module:
    """Fold every batch norm that directly follows a convolution into it, in place.

    Args:
        module: any model; it should be in eval mode (the running statistics are used).

    Returns:
        ``module`` itself, with each folded pair's convolution replaced by the fused one and
        its batch norm by ``nn.Identity`` (so ``state_dict`` keys of the norms disappear).
    """
    last_conv_name, last_conv = None, None
    for name, child in list(module.named_children()):
        if isinstance(child, _BatchNorm) and last_conv is not None:
            setattr(module, last_conv_name, fold_bn_into_conv(last_conv, child))
            setattr(module, name, nn.Identity())
            last_conv_name, last_conv = None, None
        elif isinstance(child, nn.Conv2d):
            last_conv_name, last_conv = name, child
        else:
            fuse_conv_bn(child)
            # any module registered in between (an activation, a block) ends the pair
            last_conv_name, last_conv = None, None
    return module


def _count(module: nn.Module, kind) -> int:
    return sum(isinstance(m, kind) for m in module.modules())


@torch.no_grad()
def fuse_detector(model: nn.Module, probe_size: tuple[int, int] = (160, 224),
                  atol: float = 1e-3) -> nn.Module:
    """Fuse a detector's conv+BN pairs and check its feature maps did not change.

    The check runs the backbone (and neck) on a fixed random image before and after: a
    wrongly paired norm changes them far beyond float32 rounding, and the fused model is
    refused with a message instead of giving silently different detections.

    Args:
        model: a detector in eval mode (``extract_feat`` is used for the check when present).
        probe_size: ``(H, W)`` of the probe image.
        atol: largest accepted absolute difference of any feature value, relative to the
            feature map's largest magnitude.

    Returns:
        ``model``, fused in place, with ``model.fused_conv_bn`` set to the number of folded
        pairs.
    """
    if model.training:
        raise DetforgeError('fuse a model in eval mode (call model.eval() first): the running '
                            'statistics of batch norm are what is folded')
    bn_before = _count(model, _BatchNorm)
    extract = getattr(model, 'extract_feat', None)
    device = next(model.parameters()).device
    probe = None
    if extract is not None:
        gen = torch.Generator().manual_seed(0)
        probe = torch.randn((1, 3) + tuple(probe_size), generator=gen).to(device)
        before = [f.clone() for f in _as_list(extract(probe))]
    fuse_conv_bn(model)
    folded = bn_before - _count(model, _BatchNorm)
    if probe is not None:
        after = _as_list(extract(probe))
        for level, (a, b) in enumerate(zip(before, after)):
            scale = max(a.abs().max().item(), 1.0)
            diff = (a - b).abs().max().item()
            if diff > atol * scale:
                raise DetforgeError(f'fusing batch norm into convolutions changed feature level '
                                    f'{level} by {diff:.3g} (of magnitude {scale:.3g}): a module '
                                    'registers a norm after a convolution it does not follow; '
                                    'run this model without --fuse')
    model.fused_conv_bn = folded
    return model


def _as_list(feats) -> list[torch.Tensor]:
    if isinstance(feats, torch.Tensor):
        return [feats]
    return [f for f in feats if isinstance(f, torch.Tensor)]
