"""ResNeXt: torchvision's ResNeXt weights give the same features; MMDetection's x101 configs
build with MMDetection's parameter names and the open-mmlab:// ImageNet weights' URL."""
import pytest
import torch
import torchvision

from detforge.config import Config
from detforge.models import build_detector
from detforge.models.builder import build_backbone
from detforge.models.pretrained import resolve_url
from detforge.registry import BuildError


def test_resnext50_32x4d_matches_torchvision():
    torch.manual_seed(0)
    tv = torchvision.models.resnext50_32x4d(weights=None).eval()
    for m in tv.modules():  # non-trivial statistics, so the norms matter
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    ours = build_backbone(dict(type='ResNeXt', depth=50, groups=32, base_width=4,
                               out_indices=(0, 1, 2, 3), style='pytorch')).eval()
    missing, unexpected = ours.load_state_dict(
        {k: v for k, v in tv.state_dict().items() if not k.startswith('fc.')}, strict=True)
    x = torch.randn(2, 3, 96, 80)
    feats = ours(x)
    y = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
    for layer, f in zip((tv.layer1, tv.layer2, tv.layer3, tv.layer4), feats):
        y = layer(y)
        torch.testing.assert_close(f, y, rtol=1e-4, atol=1e-5)


def test_mmdet_x101_config_builds_with_mmdet_names(repo_root):
    cfg = Config.fromfile(str(repo_root / 'configs/faster_rcnn/faster_rcnn_x101_32x4d_fpn_1x_coco.py'))
    assert cfg.model.backbone.init_cfg.checkpoint == 'open-mmlab://resnext101_32x4d'
    assert resolve_url(cfg.model.backbone.init_cfg.checkpoint).endswith('resnext101_32x4d-a5af3160.pth')
    cfg.model.backbone.init_cfg = None
    model = build_detector(cfg.model)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    # MMDetection 2.x's names and shapes for the 32x4d first block and the last stage
    assert shapes['backbone.layer1.0.conv1.weight'] == (128, 64, 1, 1)
    assert shapes['backbone.layer1.0.conv2.weight'] == (128, 4, 3, 3)
    assert shapes['backbone.layer1.0.bn2.weight'] == (128,)
    assert shapes['backbone.layer4.2.conv2.weight'] == (1024, 32, 3, 3)
    assert shapes['backbone.layer4.2.conv3.weight'] == (2048, 1024, 1, 1)
    assert sum(1 for k in shapes if k.startswith('backbone.layer3.')) == 23 * 18 + 6  # 23 blocks of 3 convs + 3 BNs, a downsample


@pytest.mark.parametrize('bad', [dict(groups=0), dict(base_width='4')])
def test_bad_group_options_are_build_errors(bad):
    with pytest.raises(BuildError, match=next(iter(bad))):
        build_backbone(dict(type='ResNeXt', depth=50, **bad))
