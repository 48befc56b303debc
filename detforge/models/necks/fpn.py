"""Feature Pyramid Network (Lin et al.) neck."""
from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from detforge.registry import NECKS, BuildError
from detforge.models.layers import ConvModule

__all__ = ['FPN']

_EXTRA_MODES = ('on_input', 'on_lateral', 'on_output')


@NECKS.register_module()
class FPN(nn.Module):
    """Top-down pyramid: 1x1 lateral convs, nearest upsampling and addition, 3x3 output convs,
    then extra levels.

    Args:
        in_channels: channels of each backbone output.
        out_channels: channels of every pyramid level.
        num_outs: levels to return.
        start_level, end_level: first and last (inclusive; ``-1`` = last) backbone output used.
        add_extra_convs: how levels beyond the backbone's are made: ``False`` by max-pooling
            (stride 2) the last output; otherwise by 3x3 stride-2 convs whose first one reads
            ``'on_input'`` (the last backbone output used, C5), ``'on_lateral'`` (its lateral) or
            ``'on_output'`` (P5). ``True`` means ``'on_input'``.
        relu_before_extra_convs: apply ReLU before each extra conv after the first.
        no_norm_on_lateral: no norm layer on the lateral convs even with ``norm_cfg``.
        norm_cfg, act_cfg: norm and activation of every conv (default: neither).
        upsample_cfg: ``F.interpolate`` arguments (default nearest, to the exact lower size).

    Outputs ``num_outs`` tensors ``(B, out_channels, H_l, W_l)``, finest first.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int, num_outs: int,
                 start_level: int = 0, end_level: int = -1, add_extra_convs: bool | str = False,
                 relu_before_extra_convs: bool = False, no_norm_on_lateral: bool = False,
                 conv_cfg: dict | None = None, norm_cfg: dict | None = None, act_cfg: dict | None = None,
                 upsample_cfg: dict = dict(mode='nearest'), init_cfg=None):
        super().__init__()
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.num_ins = len(in_channels)
        self.num_outs = num_outs
        self.relu_before_extra_convs = relu_before_extra_convs
        self.upsample_cfg = dict(upsample_cfg)
        if end_level == -1 or end_level == self.num_ins - 1:
            self.backbone_end_level = self.num_ins
            if num_outs < self.num_ins - start_level:
                raise BuildError(f'num_outs={num_outs} is fewer than the {self.num_ins - start_level} '
                                 f'backbone levels used', key_path=['num_outs'])
        else:
            if not 0 <= end_level < self.num_ins:
                raise BuildError(f'end_level={end_level} is out of range for {self.num_ins} inputs',
                                 key_path=['end_level'])
            self.backbone_end_level = end_level + 1
            if num_outs != end_level - start_level + 1:
                raise BuildError(f'with end_level={end_level}, num_outs must be '
                                 f'{end_level - start_level + 1}, got {num_outs}', key_path=['num_outs'])
        self.start_level = start_level
        self.end_level = end_level
        if add_extra_convs is True:
            add_extra_convs = 'on_input'
        if add_extra_convs not in (False,) + _EXTRA_MODES:
            raise BuildError(f'add_extra_convs must be False, True or one of {_EXTRA_MODES}, got '
                             f'{add_extra_convs!r}', key_path=['add_extra_convs'])
        self.add_extra_convs = add_extra_convs

        self.lateral_convs = nn.ModuleList()
        self.fpn_convs = nn.ModuleList()
        for i in range(start_level, self.backbone_end_level):
            self.lateral_convs.append(ConvModule(
                self.in_channels[i], out_channels, 1, conv_cfg=conv_cfg,
                norm_cfg=norm_cfg if not no_norm_on_lateral else None, act_cfg=act_cfg, inplace=False))
            self.fpn_convs.append(ConvModule(out_channels, out_channels, 3, padding=1, conv_cfg=conv_cfg,
                                             norm_cfg=norm_cfg, act_cfg=act_cfg, inplace=False))
        extra_levels = num_outs - self.backbone_end_level + start_level
        if add_extra_convs and extra_levels >= 1:
            for i in range(extra_levels):
                in_ch = (self.in_channels[self.backbone_end_level - 1]
                         if i == 0 and add_extra_convs == 'on_input' else out_channels)
                self.fpn_convs.append(ConvModule(in_ch, out_channels, 3, stride=2, padding=1,
                                                 conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg,
                                                 inplace=False))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        if len(inputs) != self.num_ins:
            raise ValueError(f'FPN built for {self.num_ins} inputs got {len(inputs)}')
        laterals = [conv(inputs[i + self.start_level]) for i, conv in enumerate(self.lateral_convs)]

        # top-down: each level adds the upsampled level above it
        for i in range(len(laterals) - 1, 0, -1):
            if 'scale_factor' in self.upsample_cfg:
                up = F.interpolate(laterals[i], **self.upsample_cfg)
            else:
                up = F.interpolate(laterals[i], size=laterals[i - 1].shape[2:], **self.upsample_cfg)
            laterals[i - 1] = laterals[i - 1] + up

        used = len(laterals)
        outs = [self.fpn_convs[i](laterals[i]) for i in range(used)]

        if self.num_outs > used:
            if not self.add_extra_convs:
                for _ in range(self.num_outs - used):
                    outs.append(F.max_pool2d(outs[-1], 1, stride=2))
            else:
                source = {'on_input': inputs[self.backbone_end_level - 1],
                          'on_lateral': laterals[-1],
                          'on_output': outs[-1]}[self.add_extra_convs]
                outs.append(self.fpn_convs[used](source))
                for i in range(used + 1, self.num_outs):
                    x = F.relu(outs[-1]) if self.relu_before_extra_convs else outs[-1]
                    outs.append(self.fpn_convs[i](x))
        return tuple(outs)

    def init_weights(self) -> None:
        pass  # initialised in the constructor (Xavier uniform, as MMDetection)
