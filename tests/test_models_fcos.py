"""FCOS: points, targets (regress ranges, centre sampling, smallest box), centerness, the head's
outputs and build-time checks, and the MMDetection 2.x configs (caffe ResNet, parameter names)."""
import math

import pytest
import torch

from detforge.config import Config
from detforge.models.builder import build_detector
from detforge.models.dense_heads.fcos_head import FCOSHead, centerness_target, fcos_targets
from detforge.models.task_modules.point_generator import MlvlPointGenerator
from detforge.registry import BuildError

NUM_CLASSES = 3


def boxes(*rows):
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


# ---------------------------------------------------------------------------- points
def test_points_sit_at_the_cell_centre_row_major():
    points = MlvlPointGenerator([8, 16], offset=0.5).grid_priors([(2, 3), (1, 2)])
    assert points[0].tolist() == [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]
    assert points[1].tolist() == [[8, 8], [24, 8]]
    corner = MlvlPointGenerator([8], offset=0.0).grid_priors([(1, 2)], with_stride=True)
    assert corner[0].tolist() == [[0, 0, 8, 8], [8, 0, 8, 8]]


def test_batch_shape_stride_rule_follows_torchvision_integer_division():
    gen = MlvlPointGenerator([64, 128], offset=0.0, stride_rule='batch_shape')
    # a 128x160 input: P6 is 2x3 (strides 160 // 3 = 53 across, 64 down), P7 1x2 (80, 128)
    points = gen.grid_priors([(2, 3), (1, 2)], batch_input_shape=(128, 160))
    assert points[0][:, 0].tolist() == [0, 53, 106, 0, 53, 106]
    assert points[0][:, 1].tolist() == [0, 0, 0, 64, 64, 64]
    assert points[1][:, 0].tolist() == [0, 80]
    with pytest.raises(ValueError, match='batch_input_shape'):
        gen.grid_priors([(2, 3), (1, 2)])


# ---------------------------------------------------------------------------- targets
def _targets(points, strides, ranges, gts, labels, radius=None):
    return fcos_targets(torch.tensor(points, dtype=torch.float32), torch.tensor(strides, dtype=torch.float32),
                        torch.tensor(ranges, dtype=torch.float32), gts, labels, NUM_CLASSES, radius)


def test_a_point_regresses_boxes_in_its_level_range_only():
    # the same point (50, 50) on two levels; box [0, 0, 120, 100]: distances 50, 50, 70, 50,
    # largest 70 -> level 2's range (64, 128), not level 1's (-1, 64)
    labels, targets, inds = _targets([(50, 50), (50, 50)], [8, 16], [(-1, 64), (64, 128)],
                                     [boxes([0, 0, 120, 100])], [torch.tensor([2])])
    assert labels.tolist() == [[NUM_CLASSES, 2]]
    assert targets[0, 1].tolist() == [50, 50, 70, 50]
    assert inds.tolist() == [[-1, 0]]
    # both ends of a range are included (MMDetection); torchvision excludes them
    labels, _, _ = _targets([(50, 50)], [8], [(-1, 70)], [boxes([0, 0, 120, 100])], [torch.tensor([1])])
    assert labels.tolist() == [[1]]


def test_the_smallest_box_wins_and_the_first_on_a_tie():
    gts = [boxes([0, 0, 40, 40], [10, 10, 30, 30], [10, 10, 30, 30])]
    labels, targets, inds = _targets([(20, 20), (5, 5)], [8, 8], [(-1, 1e8)] * 2, gts, [torch.tensor([0, 1, 2])])
    assert inds.tolist() == [[1, 0]]
    assert labels.tolist() == [[1, 0]]
    assert targets[0, 0].tolist() == [10, 10, 10, 10]


def test_centre_sampling_keeps_points_near_the_centre_clipped_to_the_box():
    # box [0, 0, 100, 20], centre (50, 10); stride 8, radius 1.5 -> region [38, -2, 62, 22]
    # clipped to the box: [38, 0, 62, 20]
    points = [(40, 10), (60, 10), (70, 10), (50, 1), (37, 10)]
    labels, _, _ = _targets(points, [8] * 5, [(-1, 1e8)] * 5, [boxes([0, 0, 100, 20])], [torch.tensor([0])],
                            radius=1.5)
    assert labels.tolist() == [[0, 0, NUM_CLASSES, 0, NUM_CLASSES]]
    labels, _, _ = _targets(points, [8] * 5, [(-1, 1e8)] * 5, [boxes([0, 0, 100, 20])], [torch.tensor([0])])
    assert labels.tolist() == [[0] * 5]  # without sampling, anywhere inside
    # a narrow box [0, 0, 10, 100] at stride 8: the region x in [-7, 17] is clipped to [0, 10], so
    # a point left of the box is not positive although it is within the radius of the centre
    labels, _, _ = _targets([(-2, 50), (2, 50)], [8, 8], [(-1, 1e8)] * 2, [boxes([0, 0, 10, 100])],
                            [torch.tensor([0])], radius=1.5)
    assert labels.tolist() == [[NUM_CLASSES, 0]]


def test_a_batch_with_different_box_counts_and_an_empty_image():
    points = [(5, 5), (50, 50)]
    gts = [boxes([0, 0, 10, 10], [40, 40, 60, 60]), boxes([45, 45, 55, 55]), boxes()]
    lbl = [torch.tensor([0, 1]), torch.tensor([2]), torch.zeros(0, dtype=torch.long)]
    labels, _, inds = _targets(points, [8, 8], [(-1, 1e8)] * 2, gts, lbl)
    assert labels.tolist() == [[0, 1], [NUM_CLASSES, 2], [NUM_CLASSES, NUM_CLASSES]]
    assert inds.tolist() == [[0, 1], [-1, 0], [-1, -1]]


def test_centerness_target():
    c = centerness_target(boxes([10, 20, 30, 40], [5, 5, 5, 5]))
    torch.testing.assert_close(c, torch.tensor([math.sqrt(10 / 30 * 20 / 40), 1.0]))
    assert centerness_target(boxes()).shape == (0,)


# ---------------------------------------------------------------------------- head
TEST_CFG = dict(nms_pre=100, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5), max_per_img=10)


def _head(**kw):
    return FCOSHead(num_classes=NUM_CLASSES, in_channels=32, feat_channels=32, stacked_convs=1,
                    strides=[8, 16], regress_ranges=[(-1, 64), (64, 1e8)],
                    norm_cfg=dict(type='GN', num_groups=8), test_cfg=TEST_CFG, **kw)


def test_norm_on_bbox_scales_by_the_stride_at_inference_only():
    torch.manual_seed(0)
    head = _head(norm_on_bbox=True)
    x = torch.randn(1, 32, 4, 4)
    head.train()
    _, train_pred, _ = head.forward_single(x, 1)
    head.eval()
    _, test_pred, _ = head.forward_single(x, 1)
    torch.testing.assert_close(test_pred, train_pred * 16)
    assert (train_pred >= 0).all()
    plain = _head()
    plain.eval()
    _, pred, _ = plain.forward_single(x, 1)
    torch.testing.assert_close(pred, plain.scales[1](plain.conv_reg(plain.tower_features(x)[1])).exp())


def test_centerness_reads_the_tower_it_is_told():
    torch.manual_seed(0)
    head = _head(centerness_on_reg=True)
    x = torch.randn(1, 32, 4, 4)
    cls_feat, reg_feat = head.tower_features(x)
    torch.testing.assert_close(head.forward_single(x, 0)[2], head.conv_centerness(reg_feat))
    head.centerness_on_reg = False
    torch.testing.assert_close(head.forward_single(x, 0)[2], head.conv_centerness(cls_feat))


def test_build_time_checks():
    with pytest.raises(BuildError, match='dcn_on_last_conv'):
        _head(dcn_on_last_conv=True)
    with pytest.raises(BuildError, match='regress_ranges'):
        FCOSHead(num_classes=2, in_channels=32, strides=[8, 16, 32])
    with pytest.raises(BuildError, match="'scor_thr'.*did you mean 'score_thr'"):
        FCOSHead(num_classes=2, in_channels=32, test_cfg=dict(scor_thr=0.1, nms=dict(type='nms', iou_threshold=0.5)))
    with pytest.raises(BuildError, match='soft_nms'):
        FCOSHead(num_classes=2, in_channels=32, test_cfg=dict(nms=dict(type='soft_nms', iou_threshold=0.5)))


def test_loss_without_objects_is_zero_for_boxes_and_finite():
    head = _head()
    head.train()
    feats = [torch.randn(2, 32, 8, 8), torch.randn(2, 32, 4, 4)]
    metas = [dict(img_shape=(64, 64, 3), pad_shape=(64, 64, 3), batch_input_shape=(64, 64))] * 2
    losses = head.loss(*head(feats), [boxes(), boxes()], [torch.zeros(0, dtype=torch.long)] * 2, metas)
    assert losses['loss_bbox'] == 0 and losses['loss_centerness'] == 0
    assert torch.isfinite(losses['loss_cls']) and losses['loss_cls'] > 0


# ---------------------------------------------------------------------------- MMDetection 2.x configs
@pytest.mark.parametrize('name, biased', [('fcos_r50_caffe_fpn_gn-head_1x_coco.py', False),
                                          ('fcos_center-normbbox-centeronreg-giou_r50_caffe_fpn_gn-head_1x_coco.py',
                                           True)])
def test_mmdetection_configs_build_with_its_parameter_names(repo_root, name, biased):
    cfg = Config.fromfile(str(repo_root / 'configs/fcos' / name))
    assert cfg.img_norm_cfg.to_rgb is False and cfg.img_norm_cfg.std == [1.0, 1.0, 1.0]  # BGR, caffe
    model = build_detector(cfg.model)
    # caffe style: a stage's stride is on the block's first 1x1 conv
    assert model.backbone.layer2[0].conv1.stride == (2, 2) and model.backbone.layer2[0].conv2.stride == (1, 1)
    keys = set(model.state_dict())
    assert {'bbox_head.conv_cls.weight', 'bbox_head.conv_reg.weight', 'bbox_head.conv_centerness.weight',
            'bbox_head.scales.4.scale', 'bbox_head.cls_convs.3.gn.weight', 'bbox_head.reg_convs.0.conv.weight'} <= keys
    assert ('bbox_head.cls_convs.0.conv.bias' in keys) is biased
    head = model.bbox_head
    assert (head.center_sampling, head.norm_on_bbox, head.centerness_on_reg) == (biased,) * 3


def test_test_time_augmentation_merges_and_maps_flips_back():
    torch.manual_seed(0)
    head = _head()
    head.eval()
    with torch.no_grad():
        head.conv_cls.bias.zero_()  # scores above the threshold
    feats = [torch.randn(1, 32, 8, 8), torch.randn(1, 32, 4, 4)]
    meta = dict(img_shape=(64, 64, 3), pad_shape=(64, 64, 3), batch_input_shape=(64, 64), scale_factor=1.0,
                flip=False)
    flipped = dict(meta, flip=True, flip_direction='horizontal')
    with torch.no_grad():
        single, _ = head.simple_test(feats, [meta])[0]
        merged, _ = head.aug_test([feats, feats], [[meta], [meta]])[0]  # duplicates merge by NMS
        back, _ = head.aug_test([feats], [[flipped]])[0]
    assert len(single) > 0
    by_score = lambda d: d[d[:, 4].argsort(descending=True)]
    torch.testing.assert_close(by_score(merged), by_score(single))
    mirrored = single.clone()
    mirrored[:, 0], mirrored[:, 2] = 64 - single[:, 2], 64 - single[:, 0]
    torch.testing.assert_close(by_score(back), by_score(mirrored))
