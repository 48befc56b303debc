"""ResNet backbone (He et al.), with torchvision's parameter names.

The state dict uses torchvision's keys (``conv1``, ``bn1``, ``layer1.0.conv1`` ...,
``layer1.0.downsample.0``), so torchvision's ImageNet checkpoints load as they are.
"""
from __future__ import annotations

import logging
from typing import Sequence

import torch
import torch.utils.checkpoint as cp
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from detforge.registry import BACKBONES, BuildError
from detforge.models.layers import build_norm_layer
from detforge.models.weight_init import INITIALIZERS
from detforge.models.pretrained import load_pretrained_state_dict

__all__ = ['ResNet', 'BasicBlock', 'Bottleneck']

logger = logging.getLogger(__name__)


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34)."""
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None, style: str = 'pytorch', with_cp: bool = False,
                 norm_cfg: dict = dict(type='BN')):
        super().__init__()
        self.norm1_name, norm1 = build_norm_layer(norm_cfg, planes, postfix=1)
        self.norm2_name, norm2 = build_norm_layer(norm_cfg, planes, postfix=2)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.add_module(self.norm1_name, norm1)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.add_module(self.norm2_name, norm2)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.with_cp = with_cp

    @property
    def last_norm(self) -> nn.Module:
        return getattr(self, self.norm2_name)

    def _residual(self, x: Tensor) -> Tensor:
        out = self.relu(getattr(self, self.norm1_name)(self.conv1(x)))
        out = getattr(self, self.norm2_name)(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        out += identity  # in place: the norm's backward does not need its output
        return out

    def forward(self, x: Tensor) -> Tensor:
        if self.with_cp and x.requires_grad:
            out = cp.checkpoint(self._residual, x, use_reentrant=False)
        else:
            out = self._residual(x)
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 → 3x3 → 1x1 with 4x channel expansion (ResNet-50/101/152).

    ``style='pytorch'`` strides the 3x3 conv (torchvision, "ResNet v1.5"); ``'caffe'`` strides
    the first 1x1 conv (the original Caffe models, Detectron's ``R-50.pkl``).
    """
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None, style: str = 'pytorch', with_cp: bool = False,
                 norm_cfg: dict = dict(type='BN')):
        super().__init__()
        conv1_stride, conv2_stride = (1, stride) if style == 'pytorch' else (stride, 1)
        self.norm1_name, norm1 = build_norm_layer(norm_cfg, planes, postfix=1)
        self.norm2_name, norm2 = build_norm_layer(norm_cfg, planes, postfix=2)
        self.norm3_name, norm3 = build_norm_layer(norm_cfg, planes * self.expansion, postfix=3)
        self.conv1 = nn.Conv2d(inplanes, planes, 1, conv1_stride, bias=False)
        self.add_module(self.norm1_name, norm1)
        self.conv2 = nn.Conv2d(planes, planes, 3, conv2_stride, padding=dilation, dilation=dilation, bias=False)
        self.add_module(self.norm2_name, norm2)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.add_module(self.norm3_name, norm3)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.with_cp = with_cp

    @property
    def last_norm(self) -> nn.Module:
        return getattr(self, self.norm3_name)

    def _residual(self, x: Tensor) -> Tensor:
        out = self.relu(getattr(self, self.norm1_name)(self.conv1(x)))
        out = self.relu(getattr(self, self.norm2_name)(self.conv2(out)))
        out = getattr(self, self.norm3_name)(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        out += identity  # in place: the norm's backward does not need its output
        return out

    def forward(self, x: Tensor) -> Tensor:
        if self.with_cp and x.requires_grad:
            out = cp.checkpoint(self._residual, x, use_reentrant=False)
        else:
            out = self._residual(x)
        return self.relu(out)


@BACKBONES.register_module()
class ResNet(nn.Module):
    """ResNet backbone returning the outputs of the stages in ``out_indices``.

    Args:
        depth: 18, 34, 50, 101 or 152.
        in_channels: input channels.
        base_channels: channels of the first stage (before expansion).
        num_stages: stages to build, 1 to 4.
        strides, dilations: per stage.
        out_indices: stages whose outputs are returned (0-based); stage ``i`` has stride
            ``2 ** (i + 2)`` and ``base_channels * 2 ** i * expansion`` channels.
        style: ``'pytorch'`` (stride on the 3x3 conv) or ``'caffe'`` (stride on the 1x1 conv).
        frozen_stages: freeze the stem and stages ``1..frozen_stages`` (``-1``: nothing, ``0``:
            the stem only): no gradients, norm layers in eval mode.
        norm_cfg: norm layer config, e.g. ``dict(type='BN', requires_grad=True)``,
            ``dict(type='GN', num_groups=32)``, ``dict(type='FrozenBN')``.
        norm_eval: keep batch-norm layers in eval mode (running statistics) while training.
        with_cp: gradient checkpointing inside blocks (less memory, more time).
        zero_init_residual: start each block as the identity (last norm weight 0).
        pretrained: a checkpoint URI (deprecated; same as ``init_cfg=dict(type='Pretrained',
            checkpoint=...)``).
        init_cfg: ``dict(type='Pretrained', checkpoint='torchvision://resnet50')``, loaded by
            :meth:`init_weights`.
    """

    arch_settings = {
        18: (BasicBlock, (2, 2, 2, 2)),
        34: (BasicBlock, (3, 4, 6, 3)),
        50: (Bottleneck, (3, 4, 6, 3)),
        101: (Bottleneck, (3, 4, 23, 3)),
        152: (Bottleneck, (3, 8, 36, 3)),
    }

    def __init__(self, depth: int, in_channels: int = 3, stem_channels: int | None = None,
                 base_channels: int = 64, num_stages: int = 4, strides: Sequence[int] = (1, 2, 2, 2),
                 dilations: Sequence[int] = (1, 1, 1, 1), out_indices: Sequence[int] = (0, 1, 2, 3),
                 style: str = 'pytorch', deep_stem: bool = False, avg_down: bool = False,
                 frozen_stages: int = -1, conv_cfg: dict | None = None,
                 norm_cfg: dict = dict(type='BN', requires_grad=True), norm_eval: bool = True,
                 dcn: dict | None = None, stage_with_dcn=(False, False, False, False),
                 plugins=None, with_cp: bool = False, zero_init_residual: bool = True,
                 pretrained: str | None = None, init_cfg: dict | None = None):
        super().__init__()
        if depth not in self.arch_settings:
            raise BuildError(f'ResNet depth must be one of {sorted(self.arch_settings)}, got {depth!r}',
                             key_path=['depth'])
        if not 1 <= num_stages <= 4:
            raise BuildError(f'num_stages must be 1..4, got {num_stages}', key_path=['num_stages'])
        if style not in ('pytorch', 'caffe'):
            raise BuildError(f"style must be 'pytorch' or 'caffe', got {style!r}", key_path=['style'])
        if max(out_indices) >= num_stages:
            raise BuildError(f'out_indices {tuple(out_indices)} refer to stages beyond num_stages='
                             f'{num_stages}', key_path=['out_indices'])
        unsupported = [name for name, value in (('dcn', dcn), ('plugins', plugins),
                                                ('deep_stem', deep_stem), ('avg_down', avg_down),
                                                ('conv_cfg', conv_cfg)) if value]
        if unsupported:
            raise BuildError(f'ResNet option {unsupported[0]} is not supported by detforge',
                             key_path=[unsupported[0]])
        if pretrained is not None:
            if init_cfg is not None:
                raise BuildError('give either pretrained or init_cfg, not both', key_path=['pretrained'])
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        self.init_cfg = init_cfg
        self.depth = depth
        self.out_indices = tuple(out_indices)
        self.style = style
        self.frozen_stages = frozen_stages
        self.norm_cfg = norm_cfg
        self.norm_eval = norm_eval
        self.zero_init_residual = zero_init_residual
        block, stage_blocks = self.arch_settings[depth]
        stem_channels = stem_channels or base_channels

        self.conv1 = nn.Conv2d(in_channels, stem_channels, 7, stride=2, padding=3, bias=False)
        self.norm1_name, norm1 = build_norm_layer(norm_cfg, stem_channels, postfix=1)
        self.add_module(self.norm1_name, norm1)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        self.res_layers = []
        inplanes = stem_channels
        for i in range(num_stages):
            planes = base_channels * 2 ** i
            layer = self.make_res_layer(block, inplanes, planes, stage_blocks[i], strides[i],
                                        dilations[i], style, with_cp, norm_cfg)
            inplanes = planes * block.expansion
            name = f'layer{i + 1}'
            self.add_module(name, layer)
            self.res_layers.append(name)
        self.feat_dim = inplanes
        self._default_init()
        self._freeze_stages()

    @staticmethod
    def make_res_layer(block, inplanes, planes, num_blocks, stride, dilation, style, with_cp, norm_cfg):
        downsample = None
        if stride != 1 or inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                build_norm_layer(norm_cfg, planes * block.expansion)[1])
        layers = [block(inplanes, planes, stride, dilation, downsample, style, with_cp, norm_cfg)]
        for _ in range(1, num_blocks):
            layers.append(block(planes * block.expansion, planes, 1, dilation, None, style, with_cp, norm_cfg))
        return nn.Sequential(*layers)

    @property
    def norm1(self) -> nn.Module:
        return getattr(self, self.norm1_name)

    # ------------------------------------------------------------------ weights
    def _default_init(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, (_BatchNorm, nn.GroupNorm)) and m.affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)) and getattr(m.last_norm, 'weight', None) is not None:
                    nn.init.zeros_(m.last_norm.weight)

    def init_weights(self) -> None:
        """Load the pretrained weights of ``init_cfg`` (``fc.*`` and a ``backbone.`` prefix are
        handled); a no-op without one."""
        cfg = self.init_cfg
        if isinstance(cfg, (list, tuple)):  # other types are applied by models.weight_init
            cfg = next((c for c in cfg if c.get('type') == 'Pretrained'), None)
        if not cfg or cfg.get('type') in INITIALIZERS:
            return
        if cfg.get('type') != 'Pretrained' or 'checkpoint' not in cfg:
            raise BuildError(f"ResNet init_cfg must be dict(type='Pretrained', checkpoint=...), got {cfg!r}",
                             cfg, key_path=['init_cfg'])
        state = load_pretrained_state_dict(cfg['checkpoint'])
        prefix = cfg.get('prefix')
        if prefix is None and any(k.startswith('backbone.') for k in state):
            prefix = 'backbone'
        if prefix:
            p = prefix.rstrip('.') + '.'
            state = {k[len(p):]: v for k, v in state.items() if k.startswith(p)}
        state = {k: v for k, v in state.items() if not k.startswith('fc.')}
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith('num_batches_tracked')]
        if missing or unexpected:
            logger.warning('loading %s into ResNet: missing keys %s; unexpected keys %s',
                           cfg['checkpoint'], missing[:10], unexpected[:10])

    # ------------------------------------------------------------------ freezing
    def _freeze_stages(self) -> None:
        if self.frozen_stages >= 0:
            for m in (self.conv1, self.norm1):
                m.eval()
                for p in m.parameters():
                    p.requires_grad = False
        for i in range(1, self.frozen_stages + 1):
            m = getattr(self, f'layer{i}')
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """``(B, 3, H, W)`` → the outputs of ``out_indices``: stage ``i`` is
        ``(B, C_i, H / 2**(i+2), W / 2**(i+2))`` (rounded up)."""
        x = self.maxpool(self.relu(self.norm1(self.conv1(x))))
        outs = []
        for i, name in enumerate(self.res_layers):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
