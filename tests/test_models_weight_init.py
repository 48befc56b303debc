"""``init_cfg`` on heads and necks: MMCV's Normal, Xavier, Kaiming, Constant and Uniform
initialisers with ``layer``, ``override``, ``bias``/``bias_prob``, checked at build time."""
import copy
import math

import pytest
import torch

from detforge.config import Config
from detforge.models.builder import build_detector
from detforge.registry import BuildError, build_context

RETINA = 'configs/retinanet/retinanet_r18_fpn_1x_bccd.py'
FASTER = 'configs/faster_rcnn/faster_rcnn_r18_fpn_1x_bccd.py'


@pytest.fixture(scope='module')
def retina_cfg(repo_root):
    cfg = Config.fromfile(str(repo_root / RETINA))
    cfg.model.neck.out_channels = 64
    cfg.model.bbox_head.update(in_channels=64, feat_channels=64, stacked_convs=2)
    return cfg.model


def _build(model_cfg, **parts):
    cfg = copy.deepcopy(model_cfg)
    for path, init_cfg in parts.items():
        node = cfg
        for key in path.split('__'):
            node = node[int(key)] if key.isdigit() else node[key]
        node['init_cfg'] = init_cfg
    torch.manual_seed(0)
    return build_detector(cfg)


def test_normal_with_layer_and_override_with_bias_prob(retina_cfg):
    init_cfg = dict(type='Normal', layer='Conv2d', std=0.5,
                    override=dict(type='Normal', name='retina_cls', std=0.02, bias_prob=0.1))
    head = _build(retina_cfg, bbox_head=init_cfg).bbox_head
    for conv in head.cls_convs.modules():
        if isinstance(conv, torch.nn.Conv2d):
            assert conv.weight.std().item() == pytest.approx(0.5, rel=0.1)
            assert (conv.bias == 0).all() if conv.bias is not None else True
    cls = head.retina_cls
    assert cls.weight.std().item() == pytest.approx(0.02, rel=0.1)
    torch.testing.assert_close(cls.bias, torch.full_like(cls.bias, -math.log(0.9 / 0.1)))


def test_constant_uniform_xavier_kaiming_on_the_neck(retina_cfg):
    fpn = _build(retina_cfg, neck=dict(type='Constant', layer='Conv2d', val=0.25, bias=1.0)).neck
    convs = [m for m in fpn.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all((c.weight == 0.25).all() and (c.bias == 1).all() for c in convs)
    fpn = _build(retina_cfg, neck=dict(type='Uniform', layer='Conv2d', a=2, b=3)).neck
    w = torch.cat([c.weight.flatten() for c in fpn.modules() if isinstance(c, torch.nn.Conv2d)])
    assert w.min() >= 2 and w.max() <= 3
    fpn = _build(retina_cfg, neck=dict(type='Xavier', layer='Conv2d', gain=2.0)).neck
    conv = fpn.fpn_convs[0].conv if hasattr(fpn.fpn_convs[0], 'conv') else fpn.fpn_convs[0]
    fan_in, fan_out = conv.weight[0].numel(), conv.weight.shape[0] * conv.weight[0, 0].numel()
    assert conv.weight.std().item() == pytest.approx(2.0 * math.sqrt(2 / (fan_in + fan_out)), rel=0.1)
    fpn = _build(retina_cfg, neck=dict(type='Kaiming', layer='Conv2d', mode='fan_in')).neck
    conv = fpn.fpn_convs[0].conv if hasattr(fpn.fpn_convs[0], 'conv') else fpn.fpn_convs[0]
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / conv.weight[0].numel()), rel=0.1)


def test_inner_init_cfg_wins_and_init_weights_keeps_it(repo_root):
    """A roi_head init_cfg then its bbox_head's: the inner one wins on the layers both touch,
    and training's init_weights() (the parts' own defaults first) keeps both."""
    cfg = Config.fromfile(str(repo_root / FASTER)).model
    cfg.backbone.init_cfg = None
    model = _build(cfg, roi_head=dict(type='Constant', layer='Linear', val=0.5),
                   roi_head__bbox_head=dict(type='Constant', val=0.0, bias=0.5,
                                            override=dict(name='fc_cls')),
                   rpn_head=dict(type='Constant', layer='Conv2d', val=0.125))
    for m in (model, ):
        m.init_weights()
        head = m.roi_head.bbox_head
        assert (head.fc_cls.weight == 0).all() and (head.fc_cls.bias == 0.5).all()
        assert (head.fc_reg.weight == 0.5).all()            # only the roi_head's cfg
        assert (m.rpn_head.rpn_cls.weight == 0.125).all()  # RPNHead.init_weights re-inits: kept


@pytest.mark.parametrize('init_cfg,message', [
    (dict(type='Gaussian', layer='Conv2d'), "unknown init_cfg type 'Gaussian'"),
    (dict(type='Normal', layer='Conv2d', sigma=1), "does not take \\['sigma'\\]"),
    (dict(type='Normal', std=1), "needs layer="),
    (dict(type='Normal', layer='Conv2d', override=dict(name='no_such_conv')),
     "'no_such_conv'"),
    (dict(type='Pretrained', checkpoint='x.pth'), "'Pretrained' is loaded for model.backbone"),
])
def test_bad_init_cfg_is_a_build_error_naming_the_key(retina_cfg, init_cfg, message):
    with pytest.raises(BuildError, match=message) as info, \
            build_context('model', filename='my_config.py'):
        _build(retina_cfg, bbox_head=init_cfg)
    assert 'model.bbox_head.init_cfg' in str(info.value)
