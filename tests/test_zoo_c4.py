"""The C4 shared head (``ResLayer``) and MMDetection's Faster R-CNN R50-C4 config."""
import copy

import numpy as np
import pytest
import torch
import torchvision

from detforge.config import Config
from detforge.registry import BuildError, DETECTORS, SHARED_HEADS

C4_CONFIG = 'configs/faster_rcnn/faster_rcnn_r50_caffe_c4_1x_coco.py'


def _random_bn_stats(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def test_res_layer_stage3_is_resnet50_conv5_loaded_from_a_backbone_checkpoint(tmp_path):
    torch.manual_seed(0)
    resnet = torchvision.models.resnet50()
    _random_bn_stats(resnet)
    path = tmp_path / 'resnet50.pth'
    torch.save(resnet.state_dict(), path)          # a whole ImageNet-style ResNet checkpoint
    head = SHARED_HEADS.build(dict(type='ResLayer', depth=50, stage=3, stride=2,
                                   style='pytorch', init_cfg=dict(type='Pretrained',
                                                                  checkpoint=str(path))))
    assert set(head.state_dict()) == {k for k in resnet.state_dict() if k.startswith('layer4.')}
    head.init_weights()
    for key, value in head.state_dict().items():
        assert torch.equal(value, resnet.state_dict()[key]), key
    head.eval(), resnet.eval()
    x = torch.randn(2, 1024, 14, 14)
    with torch.no_grad():
        out = head(x)
        assert out.shape == (2, 2048, 7, 7)
        torch.testing.assert_close(out, resnet.layer4(x))


def test_res_layer_keeps_batch_norm_frozen_in_training_with_norm_eval():
    head = SHARED_HEADS.build(dict(type='ResLayer', depth=50, stage=3, norm_eval=True))
    head.train()
    assert head.training and not any(m.training for m in head.modules()
                                     if isinstance(m, torch.nn.BatchNorm2d))
    head = SHARED_HEADS.build(dict(type='ResLayer', depth=50, stage=3, norm_eval=False)).train()
    assert all(m.training for m in head.modules() if isinstance(m, torch.nn.BatchNorm2d))


@pytest.mark.parametrize('bad, match', [(dict(depth=18), 'depth must be one of 50, 101, 152'),
                                        (dict(depth=50, stage=4), 'stage must be 0..3'),
                                        (dict(depth=50, style='tf'), "style must be")])
def test_res_layer_bad_arguments_are_build_errors(bad, match):
    with pytest.raises(BuildError, match=match):
        SHARED_HEADS.build(dict(type='ResLayer', **bad))


def test_mmdet_c4_config_builds_with_mmdet_names_and_trains_and_tests():
    cfg = Config.fromfile(C4_CONFIG)                # MMDetection's file, unchanged
    model_cfg = copy.deepcopy(cfg.model)
    # few RoIs: conv5 on 14x14 RoIs is the costly part
    model_cfg.train_cfg.rpn_proposal.max_per_img = 8
    model_cfg.train_cfg.rcnn.sampler.num = 4
    model_cfg.test_cfg.rpn.max_per_img = 4
    model_cfg.roi_head.bbox_head.num_classes = 3
    torch.manual_seed(0)
    model = DETECTORS.build(model_cfg)   # the shared head's Pretrained init_cfg is accepted
    keys = model.state_dict().keys()
    assert 'backbone.layer3.5.conv3.weight' in keys and not any(
        k.startswith('backbone.layer4') for k in keys)
    assert 'roi_head.shared_head.layer4.2.bn3.running_var' in keys
    assert model.roi_head.bbox_head.fc_cls.in_features == 2048
    assert model.roi_head.bbox_roi_extractor.roi_layers[0].output_size == (14, 14)

    img = torch.randint(0, 255, (2, 3, 96, 120), dtype=torch.uint8)
    metas = [dict(img_shape=(96, 120, 3), pad_shape=(96, 120, 3), ori_shape=(96, 120, 3),
                  scale_factor=np.ones(4, np.float32))] * 2
    model.train()
    losses = model.forward_train(img, metas, gt_bboxes=[torch.tensor([[10., 10., 60., 50.]]),
                                                        torch.tensor([[30., 20., 110., 90.]])],
                                 gt_labels=[torch.tensor([1]), torch.tensor([2])])
    assert {'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox'} <= set(losses)
    total = sum(v.sum() for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    assert model.roi_head.shared_head.layer4[0].conv2.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        results = model.simple_test(img, metas)
    assert len(results) == 2 and len(results[0]) == 3


def test_avg_pool_box_head_sums_as_mmdetection():
    """The C4 box head averages each (2048, 7, 7) RoI feature with a 7x7 window as
    MMDetection's ``nn.AvgPool2d(roi_feat_size)``: its float32 logits are those of that
    pooling bit for bit (``adaptive_avg_pool2d`` sums in another order; on the MMDetection
    C4 side-by-side the logits then differed by 4e-6). An empty batch gives empty outputs."""
    from detforge.models.roi_heads.bbox_heads.bbox_head import BBoxHead
    torch.manual_seed(0)
    head = BBoxHead(with_avg_pool=True, roi_feat_size=7, in_channels=2048, num_classes=80).eval()
    x = torch.randn(64, 2048, 7, 7) * 3 + 1
    cls, reg = head(x)
    pooled = torch.nn.functional.avg_pool2d(x, 7).flatten(1)
    assert torch.equal(cls, head.fc_cls(pooled)) and torch.equal(reg, head.fc_reg(pooled))
    assert not torch.equal(pooled, torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))
    cls, reg = head(x[:0])
    assert cls.shape == (0, 81) and reg.shape == (0, 320)
