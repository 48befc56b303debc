"""MobileNetV3 backbone (Howard et al., 2019): torchvision's network and parameter names."""
from __future__ import annotations

import logging
from typing import Sequence

from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from detforge.models.layers import build_norm_layer
from detforge.models.pretrained import load_pretrained_state_dict
from detforge.registry import BACKBONES, BuildError

__all__ = ['MobileNetV3']

logger = logging.getLogger(__name__)


@BACKBONES.register_module()
class MobileNetV3(nn.Module):
    """The ``features`` of torchvision's ``mobilenet_v3_large`` / ``mobilenet_v3_small``, built
    by torchvision (its blocks, squeeze-excitation and hard-swish as they are) with detforge's
    norm layers; returns the outputs of the ``features`` indices in ``out_indices``.

    Parameter names are torchvision's (``features.4.block.2.fc1.weight``), so its ImageNet
    weights load with ``init_cfg=dict(type='Pretrained',
    checkpoint='torchvision://mobilenet_v3_large')`` and its detection models' after
    ``detforge convert torchvision-fasterrcnn`` (``backbone.body.N`` -> ``backbone.features.N``).

    torchvision's ``fasterrcnn_mobilenet_v3_large_fpn`` uses ``out_indices=(13, 16)``: the
    last block (160 channels) and the final 1x1 conv (960 channels), both at stride 32 — the
    outputs of its two last "stages" (a stage ends before each block of stride 2).

    Args:
        arch: ``'large'`` or ``'small'``.
        out_indices: indices into ``features`` (0-based) whose outputs are returned.
        norm_cfg: the norm layers (torchvision's detection models: ``BN`` with eps 1e-5
            when built without weights, ``FrozenBN`` with pretrained ones).
        frozen_stages: ``features[0..frozen_stages]`` get no gradients and keep their norms
            in eval mode (``-1``: none). torchvision's ``trainable_backbone_layers=3`` on
            the large model freezes ``features[:7]``: ``frozen_stages=6``.
        norm_eval: keep every batch norm in eval mode while training.
        init_cfg: ``dict(type='Pretrained', checkpoint=...)``, loaded by :meth:`init_weights`.
    """

    def __init__(self, arch: str = 'large', out_indices: Sequence[int] = (13, 16),
                 norm_cfg: dict = dict(type='BN', requires_grad=True), frozen_stages: int = -1,
                 norm_eval: bool = False, pretrained: str | None = None, init_cfg=None):
        super().__init__()
        import torchvision.models as tvm
        if arch not in ('large', 'small'):
            raise BuildError(f"MobileNetV3 arch must be 'large' or 'small', got {arch!r}",
                             key_path=['arch'])
        build_norm_layer(norm_cfg, 8)   # a bad norm_cfg fails here with its key path

        def norm_layer(channels):
            return build_norm_layer(norm_cfg, channels)[1]
        net = getattr(tvm, f'mobilenet_v3_{arch}')(weights=None, norm_layer=norm_layer)
        self.features = net.features
        num = len(self.features)
        if not out_indices or not all(0 <= i < num for i in out_indices):
            raise BuildError(f'MobileNetV3-{arch} out_indices must be in 0..{num - 1}, got '
                             f'{tuple(out_indices)}', key_path=['out_indices'])
        if not -1 <= frozen_stages < num:
            raise BuildError(f'frozen_stages must be in -1..{num - 1}, got {frozen_stages}',
                             key_path=['frozen_stages'])
        if pretrained is not None:
            if init_cfg is not None:
                raise BuildError('give either pretrained or init_cfg, not both',
                                 key_path=['pretrained'])
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        self.arch = arch
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.init_cfg = init_cfg
        self.out_channels = [self.features[i].out_channels for i in self.out_indices]
        self._freeze_stages()

    def init_weights(self) -> None:
        """Load ``init_cfg``'s checkpoint (``features.*``; a classifier is ignored)."""
        cfg = self.init_cfg
        if isinstance(cfg, (list, tuple)):
            cfg = next((c for c in cfg if c.get('type') == 'Pretrained'), None)
        if not cfg or cfg.get('type') != 'Pretrained':
            return
        state = load_pretrained_state_dict(cfg['checkpoint'])
        prefix = cfg.get('prefix')
        if prefix:
            p = prefix.rstrip('.') + '.'
            state = {k[len(p):]: v for k, v in state.items() if k.startswith(p)}
        state = {k: v for k, v in state.items() if k.startswith('features.')}
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith('num_batches_tracked')]
        if missing or unexpected:
            logger.warning('loading %s into MobileNetV3: missing keys %s; unexpected keys %s',
                           cfg['checkpoint'], missing[:10], unexpected[:10])

    def _freeze_stages(self) -> None:
        for block in self.features[:self.frozen_stages + 1]:
            block.eval()
            for p in block.parameters():
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
        """``(B, 3, H, W)`` -> the outputs of ``features[i]`` for ``i`` in ``out_indices``."""
        outs = []
        for i, block in enumerate(self.features):
            x = block(x)
            if i in self.out_indices:
                outs.append(x)
            if i >= self.out_indices[-1] and len(outs) == len(self.out_indices):
                break
        return tuple(outs)
