"""CSPNeXt, the backbone of RTMDet (Lyu et al., "RTMDet: An Empirical Study of Designing
Real-Time Object Detectors", 2022), with MMDetection 3.x's parameter names."""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from detforge.models.csp_layers import CSPLayer, DepthwiseSeparableConvModule, SPPBottleneck
from detforge.models.layers import ConvModule
from detforge.registry import BACKBONES, BuildError

__all__ = ['CSPNeXt']


@BACKBONES.register_module()
class CSPNeXt(nn.Module):
    """A 3-conv stem (stride 2) and 4 (``'P5'``) or 5 (``'P6'``) stages, each a stride-2 conv,
    an SPP block on the last stage, and a :class:`CSPLayer` of large-kernel blocks with channel
    attention. Output ``i`` (0 = stem) has stride ``2 ** (i + 1)``.

    Args:
        arch: ``'P5'`` or ``'P6'``.
        deepen_factor: blocks per stage are ``max(round(n * deepen_factor), 1)``.
        widen_factor: channels are ``int(c * widen_factor)`` (tiny: 0.375, s: 0.5, m: 0.75).
        out_indices: outputs to return (0 = stem, 1..4 the stages).
        frozen_stages: freeze the stem and stages ``1..frozen_stages`` (``-1``: nothing).
        use_depthwise: depthwise-separable convs for the downsampling and the blocks' first conv.
        expand_ratio: hidden channels of each CSP layer, as a fraction of its output.
        arch_ovewrite: replace the architecture table (MMDetection's spelling).
        spp_kernal_sizes: SPP max-pool kernels (MMDetection's spelling).
        channel_attention: per-channel re-weighting in each CSP layer.
        conv_cfg, norm_cfg, act_cfg: of every conv (default BN momentum 0.03, eps 0.001; SiLU).
        norm_eval: keep batch norms in eval mode while training.
        init_cfg: accepted for MMDetection configs; the layers keep PyTorch's default init.
    """

    # in_channels, out_channels, num_blocks, add_identity, use_spp
    arch_settings = {
        'P5': [[64, 128, 3, True, False], [128, 256, 6, True, False], [256, 512, 6, True, False],
               [512, 1024, 3, False, True]],
        'P6': [[64, 128, 3, True, False], [128, 256, 6, True, False], [256, 512, 6, True, False],
               [512, 768, 3, True, False], [768, 1024, 3, False, True]],
    }

    def __init__(self, arch: str = 'P5', deepen_factor: float = 1.0, widen_factor: float = 1.0,
                 out_indices: Sequence[int] = (2, 3, 4), frozen_stages: int = -1, use_depthwise: bool = False,
                 expand_ratio: float = 0.5, arch_ovewrite: list | None = None,
                 spp_kernal_sizes: Sequence[int] = (5, 9, 13), channel_attention: bool = True,
                 conv_cfg: dict | None = None, norm_cfg: dict = dict(type='BN', momentum=0.03, eps=0.001),
                 act_cfg: dict = dict(type='SiLU'), norm_eval: bool = False, init_cfg=None):
        super().__init__()
        if arch not in self.arch_settings:
            raise BuildError(f"CSPNeXt arch must be 'P5' or 'P6', got {arch!r}", key_path=['arch'])
        setting = arch_ovewrite or self.arch_settings[arch]
        if not set(out_indices) <= set(range(len(setting) + 1)):
            raise BuildError(f'out_indices {tuple(out_indices)} must be in 0..{len(setting)}',
                             key_path=['out_indices'])
        if frozen_stages not in range(-1, len(setting) + 1):
            raise BuildError(f'frozen_stages must be in -1..{len(setting)}, got {frozen_stages}',
                             key_path=['frozen_stages'])
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.init_cfg = init_cfg
        kw = dict(norm_cfg=norm_cfg, act_cfg=act_cfg)
        stem = int(setting[0][0] * widen_factor)
        self.stem = nn.Sequential(ConvModule(3, stem // 2, 3, stride=2, padding=1, **kw),
                                  ConvModule(stem // 2, stem // 2, 3, padding=1, **kw),
                                  ConvModule(stem // 2, stem, 3, padding=1, **kw))
        # MMDetection computes the stem width as int(c * widen_factor // 2): the same for c = 64
        self.layers = ['stem']
        down = DepthwiseSeparableConvModule if use_depthwise else ConvModule
        for i, (c_in, c_out, num_blocks, add_identity, use_spp) in enumerate(setting):
            c_in, c_out = int(c_in * widen_factor), int(c_out * widen_factor)
            stage = [down(c_in, c_out, 3, stride=2, padding=1, conv_cfg=conv_cfg, **kw)]
            if use_spp:
                stage.append(SPPBottleneck(c_out, c_out, kernel_sizes=spp_kernal_sizes, conv_cfg=conv_cfg, **kw))
            stage.append(CSPLayer(c_out, c_out, num_blocks=max(round(num_blocks * deepen_factor), 1),
                                  add_identity=add_identity, use_depthwise=use_depthwise, use_lk_block=True,
                                  expand_ratio=expand_ratio, channel_attention=channel_attention,
                                  conv_cfg=conv_cfg, **kw))
            self.add_module(f'stage{i + 1}', nn.Sequential(*stage))
            self.layers.append(f'stage{i + 1}')
        self._freeze_stages()

    def init_weights(self) -> None:
        pass  # layers are initialised when built

    def _freeze_stages(self) -> None:
        for name in self.layers[:self.frozen_stages + 1]:
            m = getattr(self, name)
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
        """``(B, 3, H, W)`` → the outputs of ``out_indices``; output ``i`` is
        ``(B, C_i, H / 2 ** (i + 1), W / 2 ** (i + 1))`` (rounded up)."""
        outs = []
        for i, name in enumerate(self.layers):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
