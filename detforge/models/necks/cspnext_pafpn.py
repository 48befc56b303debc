"""CSPNeXtPAFPN, RTMDet's neck: a path-aggregation FPN built of CSP layers (MMDetection 3.x
parameter names)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from detforge.models.csp_layers import CSPLayer, DepthwiseSeparableConvModule
from detforge.models.layers import ConvModule
from detforge.registry import NECKS, BuildError

__all__ = ['CSPNeXtPAFPN']


@NECKS.register_module()
class CSPNeXtPAFPN(nn.Module):
    """Top-down: the coarser map is reduced (``1x1``) to the finer one's channels, upsampled 2x,
    concatenated with it and fused by a CSP layer; bottom-up: the finer result is downsampled
    (``3x3``, stride 2), concatenated with the top-down map of the next level and fused; a
    ``3x3`` conv brings every level to ``out_channels``.

    The inputs' sizes must halve exactly from level to level (pad the input to a multiple of the
    largest stride, as the ``Pad(size_divisor=32)`` of RTMDet's pipelines does).

    Args:
        in_channels: channels of each input level, finest first.
        out_channels: channels of every output level.
        num_csp_blocks: blocks of each CSP layer.
        use_depthwise: depthwise-separable downsampling convs.
        expand_ratio: hidden channels of the CSP layers.
        upsample_cfg: arguments of ``nn.Upsample``.
        conv_cfg, norm_cfg, act_cfg: of every conv.
        init_cfg: accepted for MMDetection configs.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int, num_csp_blocks: int = 3,
                 use_depthwise: bool = False, expand_ratio: float = 0.5,
                 upsample_cfg: dict = dict(scale_factor=2, mode='nearest'), conv_cfg: dict | None = None,
                 norm_cfg: dict = dict(type='BN', momentum=0.03, eps=0.001), act_cfg: dict = dict(type='SiLU'),
                 init_cfg=None):
        super().__init__()
        if len(in_channels) < 2:
            raise BuildError(f'CSPNeXtPAFPN needs at least 2 input levels, got {list(in_channels)}',
                             key_path=['in_channels'])
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.init_cfg = init_cfg
        kw = dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg)
        csp = dict(num_blocks=num_csp_blocks, add_identity=False, use_lk_block=True, expand_ratio=expand_ratio, **kw)
        n = len(in_channels)
        self.upsample = nn.Upsample(**upsample_cfg)
        # index j of the top-down lists joins level n - 1 - j into level n - 2 - j
        self.reduce_layers = nn.ModuleList(ConvModule(in_channels[i], in_channels[i - 1], 1, **kw)
                                           for i in range(n - 1, 0, -1))
        self.top_down_blocks = nn.ModuleList(CSPLayer(in_channels[i - 1] * 2, in_channels[i - 1], **csp)
                                             for i in range(n - 1, 0, -1))
        down = DepthwiseSeparableConvModule if use_depthwise else ConvModule
        self.downsamples = nn.ModuleList(down(in_channels[i], in_channels[i], 3, stride=2, padding=1, **kw)
                                         for i in range(n - 1))
        self.bottom_up_blocks = nn.ModuleList(CSPLayer(in_channels[i] * 2, in_channels[i + 1], **csp)
                                              for i in range(n - 1))
        self.out_convs = nn.ModuleList(ConvModule(c, out_channels, 3, padding=1, **kw) for c in in_channels)

    def init_weights(self) -> None:
        pass  # layers are initialised when built

    def forward(self, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        """Per level ``(B, in_channels[l], H_l, W_l)`` → ``(B, out_channels, H_l, W_l)``."""
        if len(inputs) != len(self.in_channels):
            raise ValueError(f'CSPNeXtPAFPN expects {len(self.in_channels)} levels, got {len(inputs)}')
        n = len(inputs)
        # top-down: from the coarsest level, each step reduces the coarse map (kept as that
        # level's top-down result) and fuses it, upsampled, into the next finer level
        top_down = [inputs[-1]]
        for j, i in enumerate(range(n - 1, 0, -1)):
            top_down[0] = self.reduce_layers[j](top_down[0])
            fused = self.top_down_blocks[j](torch.cat([self.upsample(top_down[0]), inputs[i - 1]], dim=1))
            top_down.insert(0, fused)
        # bottom-up: from the finest top-down result
        outs = [top_down[0]]
        for i in range(n - 1):
            down = self.downsamples[i](outs[-1])
            outs.append(self.bottom_up_blocks[i](torch.cat([down, top_down[i + 1]], dim=1)))
        return tuple(conv(x) for conv, x in zip(self.out_convs, outs))
