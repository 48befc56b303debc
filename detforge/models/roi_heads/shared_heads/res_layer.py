"""ResLayer: one ResNet stage run on pooled RoI features (the "C4" detectors' RoI head)."""
from __future__ import annotations

import logging

from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from detforge.models.backbones.resnet import Bottleneck, ResNet
from detforge.models.pretrained import load_pretrained_state_dict
from detforge.registry import SHARED_HEADS, BuildError

__all__ = ['ResLayer']

logger = logging.getLogger(__name__)


@SHARED_HEADS.register_module()
class ResLayer(nn.Module):
    """Stage ``stage`` (0-based) of a ResNet of ``depth``, applied to RoI features.

    In Faster R-CNN C4 (MMDetection's ``faster_rcnn_r50_caffe_c4``, Detectron2's ``R50-C4``)
    the backbone stops after stage 2 (``conv4``, stride 16, 1024 channels), RoIs are pooled
    from it at 14x14, and this layer is the ResNet's last stage (``conv5``, ``stage=3``,
    ``stride=2``): ``(n, 1024, 14, 14) -> (n, 2048, 7, 7)``; the ``BBoxHead`` then averages
    it (``with_avg_pool=True``).

    Parameter names are MMDetection's (``layer4.0.conv1.weight`` for ``stage=3``), which are
    also an ImageNet ResNet's, so ``init_cfg=dict(type='Pretrained', checkpoint=...)`` with a
    backbone checkpoint loads the stage's weights from it.

    Args:
        depth: 50, 101 or 152 (the Bottleneck ResNets).
        stage: which stage, 0..3; its input has ``64 * 2**stage * 4 / 2`` channels.
        stride, dilation: of the stage's first block.
        style: ``'pytorch'`` or ``'caffe'`` (where the stride sits in the Bottleneck).
        norm_cfg: norm layers; norm_eval: keep batch norms in eval mode while training.
        with_cp: gradient checkpointing inside blocks.
        init_cfg: ``dict(type='Pretrained', checkpoint=...)`` loaded by :meth:`init_weights`.
    """

    #: apply_init_cfgs lets a ``Pretrained`` init_cfg through to this part's init_weights
    loads_pretrained = True

    def __init__(self, depth: int, stage: int = 3, stride: int = 2, dilation: int = 1,
                 style: str = 'pytorch', norm_cfg: dict = dict(type='BN', requires_grad=True),
                 norm_eval: bool = True, with_cp: bool = False, dcn=None, pretrained=None,
                 init_cfg=None):
        super().__init__()
        if depth not in ResNet.arch_settings or ResNet.arch_settings[depth][0] is not Bottleneck:
            raise BuildError(f'ResLayer depth must be one of 50, 101, 152, got {depth!r}',
                             key_path=['depth'])
        if not 0 <= stage <= 3:
            raise BuildError(f'ResLayer stage must be 0..3, got {stage!r}', key_path=['stage'])
        if style not in ('pytorch', 'caffe'):
            raise BuildError(f"style must be 'pytorch' or 'caffe', got {style!r}",
                             key_path=['style'])
        if dcn is not None:
            raise BuildError('ResLayer option dcn is not supported by detforge', key_path=['dcn'])
        if pretrained is not None:
            if init_cfg is not None:
                raise BuildError('give either pretrained or init_cfg, not both',
                                 key_path=['pretrained'])
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        self.stage = stage
        self.norm_eval = norm_eval
        self.init_cfg = init_cfg
        block, stage_blocks = ResNet.arch_settings[depth]
        planes = 64 * 2 ** stage
        inplanes = 64 * 2 ** (stage - 1) * block.expansion if stage > 0 else 64
        self.in_channels = inplanes
        self.out_channels = planes * block.expansion
        layer = ResNet.make_res_layer(block, inplanes, planes, stage_blocks[stage], stride,
                                      dilation, style, with_cp, norm_cfg)
        self.layer_name = f'layer{stage + 1}'
        self.add_module(self.layer_name, layer)
        self._default_init()

    def _default_init(self) -> None:
        """MMDetection's ResLayer default: Kaiming convs, norms at weight 1 / bias 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, (_BatchNorm, nn.GroupNorm)) and m.affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def init_weights(self) -> None:
        """Load this stage's weights (``layerN.*``) from a ``Pretrained`` init_cfg's checkpoint
        (an ImageNet ResNet, or a detector's with ``prefix='backbone'``)."""
        cfg = self.init_cfg
        if isinstance(cfg, (list, tuple)):
            cfg = next((c for c in cfg if c.get('type') == 'Pretrained'), None)
        if not cfg or cfg.get('type') != 'Pretrained':
            return
        if 'checkpoint' not in cfg:
            raise BuildError("ResLayer init_cfg Pretrained needs checkpoint=...", cfg,
                             key_path=['init_cfg'])
        state = load_pretrained_state_dict(cfg['checkpoint'])
        prefix = cfg.get('prefix')
        if prefix:
            p = prefix.rstrip('.') + '.'
            state = {k[len(p):]: v for k, v in state.items() if k.startswith(p)}
        mine = self.layer_name + '.'
        state = {k: v for k, v in state.items() if k.startswith(mine)}
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith('num_batches_tracked')]
        if missing:
            logger.warning('loading %s into the ResLayer shared head: %d missing keys, e.g. %s',
                           cfg['checkpoint'], len(missing), missing[:5])

    def forward(self, x: Tensor) -> Tensor:
        """RoI features (n, C_in, S, S) -> (n, C_out, S / stride, S / stride)."""
        return getattr(self, self.layer_name)(x)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self
