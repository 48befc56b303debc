"""ResNeXt backbone (Xie et al., "Aggregated Residual Transformations"), as MMDetection 2.x
builds it: a ResNet whose bottleneck 3x3 conv is grouped.

Parameter names are ResNet's (``layer1.0.conv2.weight`` ...), so MMDetection's ResNeXt
detectors and the ``open-mmlab://resnext101_32x4d`` ImageNet weights load as they are.
"""
from __future__ import annotations

import math

from torch import nn

from detforge.models.layers import build_norm_layer
from detforge.registry import BACKBONES, BuildError

from .resnet import Bottleneck, ResNet

__all__ = ['ResNeXt', 'ResNeXtBottleneck']


class ResNeXtBottleneck(Bottleneck):
    """Bottleneck with a grouped 3x3 conv of ``width`` channels.

    ``width = floor(planes * base_width / base_channels) * groups`` (e.g. 128 in the first
    stage of a 32x4d model), or ``planes`` when ``groups == 1`` (then it is ResNet's block).
    """

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None, style: str = 'pytorch',
                 with_cp: bool = False, norm_cfg: dict = dict(type='BN'), groups: int = 1,
                 base_width: int = 4, base_channels: int = 64):
        super().__init__(inplanes, planes, stride, dilation, downsample, style, with_cp, norm_cfg)
        width = planes if groups == 1 else math.floor(planes * base_width / base_channels) * groups
        conv1_stride, conv2_stride = (1, stride) if style == 'pytorch' else (stride, 1)
        # replace the convs and norms that see ``width`` channels; the names stay ResNet's
        self.conv1 = nn.Conv2d(inplanes, width, 1, conv1_stride, bias=False)
        self.add_module(self.norm1_name, build_norm_layer(norm_cfg, width, postfix=1)[1])
        self.conv2 = nn.Conv2d(width, width, 3, conv2_stride, padding=dilation,
                               dilation=dilation, groups=groups, bias=False)
        self.add_module(self.norm2_name, build_norm_layer(norm_cfg, width, postfix=2)[1])
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)


@BACKBONES.register_module()
class ResNeXt(ResNet):
    """ResNeXt-50/101/152 (``type='ResNeXt', depth=101, groups=32, base_width=4``).

    Every other argument is :class:`ResNet`'s.
    """

    arch_settings = {
        50: (ResNeXtBottleneck, (3, 4, 6, 3)),
        101: (ResNeXtBottleneck, (3, 4, 23, 3)),
        152: (ResNeXtBottleneck, (3, 8, 36, 3)),
    }

    def __init__(self, groups: int = 1, base_width: int = 4, **kwargs):
        for name, value in (('groups', groups), ('base_width', base_width)):
            if not isinstance(value, int) or value < 1:
                raise BuildError(f'ResNeXt {name} must be a positive int, got {value!r}',
                                 key_path=[name])
        # make_res_layer runs inside ResNet.__init__ and needs these; plain attributes may be
        # set on a Module before its __init__
        object.__setattr__(self, 'groups', groups)
        object.__setattr__(self, 'base_width', base_width)
        object.__setattr__(self, 'base_channels', kwargs.get('base_channels', 64))
        super().__init__(**kwargs)

    def make_res_layer(self, block, inplanes, planes, num_blocks, stride, dilation, style,
                       with_cp, norm_cfg):
        """ResNet's stage with grouped blocks: ``num_blocks`` blocks, the first strided."""
        extra = dict(groups=self.groups, base_width=self.base_width,
                     base_channels=self.base_channels)
        downsample = None
        if stride != 1 or inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                build_norm_layer(norm_cfg, planes * block.expansion)[1])
        layers = [block(inplanes, planes, stride, dilation, downsample, style, with_cp, norm_cfg,
                        **extra)]
        for _ in range(1, num_blocks):
            layers.append(block(planes * block.expansion, planes, 1, dilation, None, style,
                                with_cp, norm_cfg, **extra))
        return nn.Sequential(*layers)
