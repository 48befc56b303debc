"""CSPNeXt and CSPNeXtPAFPN (RTMDet's backbone and neck): every level's shape and stride, depth
and width factors, MMDetection 3.x parameter names, frozen stages."""
import pytest
import torch

from detforge.models.csp_layers import CSPLayer
from detforge.registry import BACKBONES, NECKS, BuildError

TINY = dict(type='CSPNeXt', arch='P5', deepen_factor=0.167, widen_factor=0.375, expand_ratio=0.5,
            channel_attention=True, out_indices=(0, 1, 2, 3, 4))


def test_every_level_of_the_tiny_backbone():
    torch.manual_seed(0)
    backbone = BACKBONES.build(TINY).eval()
    with torch.no_grad():
        outs = backbone(torch.randn(2, 3, 160, 224))
    # stem stride 2 with 24 channels, then stages of stride 4..32 with 48, 96, 192, 384 channels
    assert [tuple(o.shape) for o in outs] == [(2, 24, 80, 112), (2, 48, 40, 56), (2, 96, 20, 28),
                                             (2, 192, 10, 14), (2, 384, 5, 7)]
    # deepen_factor 0.167: 3 and 6 blocks become round(0.5) = 1 (at least 1)
    csp_layers = [m for m in backbone.modules() if isinstance(m, CSPLayer)]
    assert [len(m.blocks) for m in csp_layers] == [1, 1, 1, 1]
    assert all(m.channel_attention for m in csp_layers)


def test_p6_and_odd_sizes_round_up():
    backbone = BACKBONES.build(dict(type='CSPNeXt', arch='P6', deepen_factor=0.33, widen_factor=0.25,
                                    out_indices=(2, 3, 4, 5))).eval()
    with torch.no_grad():
        outs = backbone(torch.randn(1, 3, 100, 130))
    assert [tuple(o.shape[1:]) for o in outs] == [(64, 13, 17), (128, 7, 9), (192, 4, 5), (256, 2, 3)]


def test_mmdetection_parameter_names():
    keys = set(BACKBONES.build(TINY).state_dict())
    assert {'stem.0.conv.weight', 'stem.2.bn.running_var', 'stage1.0.conv.weight',
            'stage1.1.main_conv.conv.weight', 'stage1.1.short_conv.bn.weight', 'stage1.1.final_conv.conv.weight',
            'stage1.1.blocks.0.conv1.conv.weight', 'stage1.1.blocks.0.conv2.depthwise_conv.conv.weight',
            'stage1.1.blocks.0.conv2.pointwise_conv.bn.bias', 'stage1.1.attention.fc.weight',
            'stage4.1.conv1.conv.weight', 'stage4.1.conv2.bn.weight', 'stage4.2.final_conv.conv.weight'} <= keys
    neck_keys = set(NECKS.build(dict(type='CSPNeXtPAFPN', in_channels=[96, 192, 384], out_channels=96,
                                     num_csp_blocks=1)).state_dict())
    assert {'reduce_layers.0.conv.weight', 'reduce_layers.1.bn.weight', 'top_down_blocks.1.main_conv.conv.weight',
            'downsamples.0.conv.weight', 'bottom_up_blocks.1.blocks.0.conv2.depthwise_conv.conv.weight',
            'out_convs.2.conv.weight'} <= neck_keys
    assert not any('attention' in k for k in neck_keys)  # no channel attention in the neck


def test_neck_keeps_every_level_and_brings_it_to_out_channels():
    torch.manual_seed(0)
    neck = NECKS.build(dict(type='CSPNeXtPAFPN', in_channels=[96, 192, 384], out_channels=96,
                            num_csp_blocks=1)).eval()
    feats = [torch.randn(2, 96, 40, 56), torch.randn(2, 192, 20, 28), torch.randn(2, 384, 10, 14)]
    with torch.no_grad():
        outs = neck(feats)
    assert [tuple(o.shape) for o in outs] == [(2, 96, 40, 56), (2, 96, 20, 28), (2, 96, 10, 14)]
    # every output depends on every input (top-down then bottom-up)
    feats = [f.requires_grad_() for f in feats]
    neck(feats)[0].sum().backward()
    assert all(f.grad.abs().sum() > 0 for f in feats)


def test_frozen_stages_and_bad_arguments():
    backbone = BACKBONES.build(dict(TINY, frozen_stages=1)).train()
    assert not any(p.requires_grad for p in backbone.stem.parameters())
    assert not any(p.requires_grad for p in backbone.stage1.parameters())
    assert all(p.requires_grad for p in backbone.stage2.parameters())
    assert not backbone.stage1.training and backbone.stage2.training
    with pytest.raises(BuildError, match='arch'):
        BACKBONES.build(dict(type='CSPNeXt', arch='P7'))
    with pytest.raises(BuildError, match='out_indices'):
        BACKBONES.build(dict(type='CSPNeXt', out_indices=(2, 5)))
