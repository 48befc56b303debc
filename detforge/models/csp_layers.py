"""Cross Stage Partial building blocks of the real-time detectors (CSPNeXt, CSPNeXtPAFPN).

Submodule names follow MMCV/MMDetection 3.x (``main_conv``, ``short_conv``, ``final_conv``,
``blocks``, ``attention.fc``; ``depthwise_conv`` / ``pointwise_conv``), so that their RTMDet
checkpoints' keys are ours.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from detforge.models.layers import ConvModule

__all__ = ['DepthwiseSeparableConvModule', 'ChannelAttention', 'CSPNeXtBlock', 'DarknetBottleneck',
           'CSPLayer', 'SPPBottleneck']

_BN = dict(type='BN', momentum=0.03, eps=0.001)


class DepthwiseSeparableConvModule(nn.Module):
    """A depthwise ``k x k`` conv (one filter per channel) then a pointwise ``1 x 1`` conv, each
    with norm and activation (MMCV's module of this name)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, dilation: int = 1, norm_cfg: dict | None = _BN,
                 act_cfg: dict | None = dict(type='SiLU'), conv_cfg: dict | None = None):
        super().__init__()
        self.depthwise_conv = ConvModule(in_channels, in_channels, kernel_size, stride, padding, dilation,
                                         groups=in_channels, conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.pointwise_conv = ConvModule(in_channels, out_channels, 1, conv_cfg=conv_cfg, norm_cfg=norm_cfg,
                                         act_cfg=act_cfg)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class ChannelAttention(nn.Module):
    """``x * hardsigmoid(fc(mean over H, W of x))``: one learned weight per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(channels, channels, 1, bias=True)
        self.act = nn.Hardsigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return x * self.act(self.fc(self.global_avgpool(x)))


class CSPNeXtBlock(nn.Module):
    """``3x3`` conv then a ``kernel_size`` depthwise-separable conv, plus the input when
    ``add_identity`` and the channels match (RTMDet's large-kernel block)."""

    def __init__(self, in_channels: int, out_channels: int, expansion: float = 0.5, add_identity: bool = True,
                 use_depthwise: bool = False, kernel_size: int = 5, conv_cfg=None, norm_cfg: dict | None = _BN,
                 act_cfg: dict | None = dict(type='SiLU')):
        super().__init__()
        hidden = int(out_channels * expansion)
        if use_depthwise:
            self.conv1 = DepthwiseSeparableConvModule(in_channels, hidden, 3, padding=1, norm_cfg=norm_cfg,
                                                      act_cfg=act_cfg)
        else:
            self.conv1 = ConvModule(in_channels, hidden, 3, padding=1, norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.conv2 = DepthwiseSeparableConvModule(hidden, out_channels, kernel_size, padding=kernel_size // 2,
                                                  conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.add_identity = add_identity and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(self.conv1(x))
        return out + x if self.add_identity else out


class DarknetBottleneck(nn.Module):
    """``1x1`` conv then ``3x3`` conv, plus the input when ``add_identity`` (YOLOv5/X block)."""

    def __init__(self, in_channels: int, out_channels: int, expansion: float = 0.5, add_identity: bool = True,
                 use_depthwise: bool = False, conv_cfg=None, norm_cfg: dict | None = _BN,
                 act_cfg: dict | None = dict(type='SiLU')):
        super().__init__()
        hidden = int(out_channels * expansion)
        self.conv1 = ConvModule(in_channels, hidden, 1, conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg)
        conv = DepthwiseSeparableConvModule if use_depthwise else ConvModule
        self.conv2 = conv(hidden, out_channels, 3, padding=1, conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.add_identity = add_identity and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(self.conv1(x))
        return out + x if self.add_identity else out


class CSPLayer(nn.Module):
    """Cross Stage Partial layer: the input goes two ways through ``1x1`` convs of
    ``out_channels * expand_ratio`` channels, one of them through ``num_blocks`` blocks; the two
    are concatenated (optionally re-weighted per channel) and fused by a ``1x1`` conv.

    ``(B, in_channels, H, W)`` → ``(B, out_channels, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, expand_ratio: float = 0.5, num_blocks: int = 1,
                 add_identity: bool = True, use_depthwise: bool = False, use_lk_block: bool = False,
                 channel_attention: bool = False, conv_cfg=None, norm_cfg: dict | None = _BN,
                 act_cfg: dict | None = dict(type='SiLU')):
        super().__init__()
        mid = int(out_channels * expand_ratio)
        kw = dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.main_conv = ConvModule(in_channels, mid, 1, **kw)
        self.short_conv = ConvModule(in_channels, mid, 1, **kw)
        self.final_conv = ConvModule(2 * mid, out_channels, 1, **kw)
        block = CSPNeXtBlock if use_lk_block else DarknetBottleneck
        self.blocks = nn.Sequential(*[block(mid, mid, 1.0, add_identity, use_depthwise, **kw)
                                      for _ in range(num_blocks)])
        self.channel_attention = channel_attention
        if channel_attention:
            self.attention = ChannelAttention(2 * mid)

    def forward(self, x: Tensor) -> Tensor:
        out = torch.cat((self.blocks(self.main_conv(x)), self.short_conv(x)), dim=1)
        if self.channel_attention:
            out = self.attention(out)
        return self.final_conv(out)


class SPPBottleneck(nn.Module):
    """Spatial pyramid pooling: a ``1x1`` conv halves the channels, max-pools of each kernel
    size (stride 1) are concatenated with it, a ``1x1`` conv fuses them."""

    def __init__(self, in_channels: int, out_channels: int, kernel_sizes=(5, 9, 13), conv_cfg=None,
                 norm_cfg: dict | None = _BN, act_cfg: dict | None = dict(type='SiLU')):
        super().__init__()
        mid = in_channels // 2
        kw = dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.conv1 = ConvModule(in_channels, mid, 1, **kw)
        self.poolings = nn.ModuleList(nn.MaxPool2d(k, stride=1, padding=k // 2) for k in kernel_sizes)
        self.conv2 = ConvModule(mid * (len(kernel_sizes) + 1), out_channels, 1, **kw)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [pool(x) for pool in self.poolings], dim=1))
