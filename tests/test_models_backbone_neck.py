"""ResNet (torchvision-compatible keys, styles, freezing, norms, pretrained weights) and FPN."""
import pytest
import torch
import torchvision
from torch import nn

from detforge.models.backbones.resnet import ResNet
from detforge.models.layers import build_norm_layer
from detforge.models.necks.fpn import FPN
from detforge.models.pretrained import load_pretrained_state_dict
from detforge.registry import BACKBONES, BuildError, DetforgeError


@pytest.mark.parametrize('depth', [18, 50])
def test_resnet_keys_equal_torchvision_and_outputs_match(depth):
    tv = getattr(torchvision.models, f'resnet{depth}')().eval()
    ours = ResNet(depth, norm_eval=True).eval()
    tv_keys = {k for k in tv.state_dict() if not k.startswith('fc.')}
    assert set(ours.state_dict()) == tv_keys
    ours.load_state_dict({k: v for k, v in tv.state_dict().items() if not k.startswith('fc.')})
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        outs = ours(x)
        ref = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        for i, layer in enumerate([tv.layer1, tv.layer2, tv.layer3, tv.layer4]):
            ref = layer(ref)
            torch.testing.assert_close(outs[i], ref)
    expansion = 4 if depth == 50 else 1
    assert [o.shape[1] for o in outs] == [64 * expansion * 2 ** i for i in range(4)]
    assert [o.shape[-1] for o in outs] == [24, 12, 6, 3]


def test_caffe_style_strides_the_first_1x1_conv():
    pytorch, caffe = ResNet(50, style='pytorch'), ResNet(50, style='caffe')
    assert pytorch.layer2[0].conv1.stride == (1, 1) and pytorch.layer2[0].conv2.stride == (2, 2)
    assert caffe.layer2[0].conv1.stride == (2, 2) and caffe.layer2[0].conv2.stride == (1, 1)
    assert caffe(torch.randn(1, 3, 64, 64))[1].shape[-1] == 8


def test_frozen_stages_and_norm_eval():
    net = ResNet(18, frozen_stages=1, norm_eval=True)
    net.train()
    assert not any(p.requires_grad for p in net.conv1.parameters())
    assert not any(p.requires_grad for p in net.layer1.parameters())
    assert all(p.requires_grad for p in net.layer2.parameters())
    assert not net.layer3[0].bn1.training  # norm_eval keeps batch norm on running statistics
    train_bn = ResNet(18, norm_eval=False).train()
    assert train_bn.layer3[0].bn1.training


def test_out_indices_select_stages():
    outs = ResNet(18, out_indices=(1, 3))(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [128, 512]


def test_group_norm_and_frozen_bn_options():
    gn = ResNet(18, norm_cfg=dict(type='GN', num_groups=8))
    assert isinstance(gn.layer1[0].gn1, nn.GroupNorm) and gn.layer1[0].gn1.num_groups == 8
    frozen = ResNet(18, norm_cfg=dict(type='FrozenBN'))
    assert isinstance(frozen.bn1, torchvision.ops.FrozenBatchNorm2d)
    assert frozen(torch.randn(1, 3, 32, 32))[0].shape == (1, 64, 8, 8)
    _, bn = build_norm_layer(dict(type='BN', requires_grad=False), 8)
    assert not any(p.requires_grad for p in bn.parameters())
    with pytest.raises(BuildError, match='num_groups'):
        build_norm_layer(dict(type='GN'), 8)


def test_bad_depth_names_the_key():
    with pytest.raises(BuildError, match='depth'):
        BACKBONES.build(dict(type='ResNet', depth=42))


def test_pretrained_from_a_local_torchvision_file(tmp_path):
    tv = torchvision.models.resnet18()
    path = tmp_path / 'resnet18.pth'
    torch.save(tv.state_dict(), path)
    net = ResNet(18, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    net.init_weights()
    torch.testing.assert_close(net.layer4[1].conv2.weight, tv.layer4[1].conv2.weight)
    legacy = ResNet(18, pretrained=str(path))
    legacy.init_weights()
    torch.testing.assert_close(legacy.conv1.weight, tv.conv1.weight)


def test_torchvision_uri_uses_the_hub_cache(tmp_path, monkeypatch):
    """torchvision://resnet18 resolves to torchvision's URL; a file placed in the torch.hub
    cache under that name is used without downloading."""
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path))
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    (tmp_path / 'checkpoints').mkdir()
    torch.save({'conv1.weight': torch.ones(64, 3, 7, 7)}, tmp_path / 'checkpoints' / url.rsplit('/', 1)[1])
    state = load_pretrained_state_dict('torchvision://resnet18')
    assert state['conv1.weight'].sum() == 64 * 3 * 49


def test_unreachable_weights_explain_how_to_proceed(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError('network is unreachable')

    monkeypatch.setattr(torch.hub, 'download_url_to_file', offline)
    with pytest.raises(DetforgeError, match='model.pretrained=None') as info:
        load_pretrained_state_dict('torchvision://resnet50')
    assert str(tmp_path / 'checkpoints') in str(info.value)


# ---------------------------------------------------------------------------- FPN
FEATS = [torch.randn(1, c, s, s) for c, s in ((8, 32), (16, 16), (32, 8), (64, 4))]


@pytest.mark.parametrize('mode', [False, True, 'on_input', 'on_lateral', 'on_output'])
def test_fpn_extra_levels(mode):
    """P6 comes from the source the mode names (True = 'on_input', as MMDetection 2.x), or
    from max-pooling P5 without extra convs; P7 from P6."""
    torch.manual_seed(0)
    fpn = FPN([8, 16, 32, 64], 16, num_outs=5, start_level=1, add_extra_convs=mode)
    outs = fpn(FEATS)
    assert [o.shape[-1] for o in outs] == [16, 8, 4, 2, 1]
    assert all(o.shape[1] == 16 for o in outs)
    p5 = outs[2]
    if not mode:
        assert len(fpn.fpn_convs) == 3
        torch.testing.assert_close(outs[3], p5[..., ::2, ::2])
        torch.testing.assert_close(outs[4], outs[3][..., ::2, ::2])
        return
    source = {True: FEATS[-1], 'on_input': FEATS[-1], 'on_output': p5,
              'on_lateral': fpn.lateral_convs[-1](FEATS[-1])}[mode]
    torch.testing.assert_close(outs[3], fpn.fpn_convs[3](source))
    torch.testing.assert_close(outs[4], fpn.fpn_convs[4](outs[3]))


def test_fpn_relu_before_extra_convs_changes_p7_only():
    torch.manual_seed(0)
    a = FPN([8, 16, 32, 64], 16, num_outs=5, start_level=1, add_extra_convs='on_output')
    b = FPN([8, 16, 32, 64], 16, num_outs=5, start_level=1, add_extra_convs='on_output',
            relu_before_extra_convs=True)
    b.load_state_dict(a.state_dict())
    oa, ob = a(FEATS), b(FEATS)
    for i in range(4):
        torch.testing.assert_close(oa[i], ob[i])
    torch.testing.assert_close(ob[4], b.fpn_convs[4](torch.relu(ob[3])))
    assert not torch.allclose(oa[4], ob[4])


def test_fpn_end_level_and_top_down_sum():
    fpn = FPN([8, 16, 32, 64], 16, num_outs=2, start_level=0, end_level=1)
    outs = fpn(FEATS)
    assert len(outs) == 2
    lat0, lat1 = fpn.lateral_convs[0](FEATS[0]), fpn.lateral_convs[1](FEATS[1])
    expected_p2 = fpn.fpn_convs[0](lat0 + nn.functional.interpolate(lat1, size=(32, 32), mode='nearest'))
    torch.testing.assert_close(outs[0], expected_p2)
    with pytest.raises(BuildError, match='num_outs'):
        FPN([8, 16, 32, 64], 16, num_outs=3, end_level=1)
