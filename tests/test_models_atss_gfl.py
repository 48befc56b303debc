"""ATSSAssigner on hand-worked cases; QFL, DFL and the integral decoding against their formulas;
the heads' settings checked at build time."""
import math

import pytest
import torch

from detforge.models.dense_heads.atss_head import ATSSHead, anchor_centerness
from detforge.models.dense_heads.gfl_head import GFLHead, Integral
from detforge.models.losses.gfocal_loss import (DistributionFocalLoss, QualityFocalLoss,
                                                distribution_focal_loss, quality_focal_loss)
from detforge.models.task_modules.atss_assigner import ATSSAssigner
from detforge.registry import BuildError


def boxes(*rows):
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


# ---------------------------------------------------------------------------- ATSSAssigner
def test_mean_plus_std_threshold_keeps_only_the_outstanding_candidate():
    # gt [0, 0, 10, 10]; level 0: 10x10 anchors centred 0, 10, 20, 30 px to the right of the
    # gt's centre; level 1: 20x20 anchors. topk=2 takes anchors {0, 1} and {4, 5}, whose IoUs
    # are 1, 0, 0.25, 0: mean 0.3125, unbiased std 0.4732, threshold 0.7857 -> anchor 0 only.
    anchors = boxes([0, 0, 10, 10], [10, 0, 20, 10], [20, 0, 30, 10], [30, 0, 40, 10],
                    [0, 0, 20, 20], [20, 0, 40, 20])
    result = ATSSAssigner(topk=2).assign(anchors, [4, 2], boxes([0, 0, 10, 10]), gt_labels=torch.tensor([2]))
    assert result.gt_inds.tolist() == [1, 0, 0, 0, 0, 0]
    assert result.labels.tolist() == [2, -1, -1, -1, -1, -1]
    assert result.max_overlaps[0] == pytest.approx(1.0)
    # the std is the unbiased one (as torch.std and MMDetection): IoUs 1, 0.818, 0, 0, 0 give a
    # threshold of 0.364 + 0.502 = 0.866 (0.813 with the biased std would admit anchor 1)
    anchors = boxes([0, 0, 10, 10], [1, 0, 11, 10], [40, 0, 50, 10], [60, 0, 70, 10], [80, 0, 90, 10])
    assert ATSSAssigner(topk=5).assign(anchors, [5], boxes([0, 0, 10, 10])).gt_inds.tolist() == [1, 0, 0, 0, 0]


def test_candidates_are_the_topk_closest_on_every_level():
    # distances to the gt's centre (5, 5): level 0 -> 0, 1, 2; level 1 -> 10, 20. With topk=1 the
    # candidates are anchor 0 (level 0) and anchor 3 (level 1), not anchor 1 although it is closer
    anchors = boxes([0, 0, 10, 10], [1, 0, 11, 10], [2, 0, 12, 10], [10, 0, 20, 10], [20, 0, 30, 10])
    assigner = ATSSAssigner(topk=1)
    dist = assigner._centre_distances(anchors, boxes([0, 0, 10, 10]))
    assert assigner._topk_per_level(dist, [3, 2]).reshape(-1).tolist() == [0, 3]
    # two candidates a > b: mean + std = (a + b) / 2 + (a - b) / sqrt(2) > a, so none is positive
    result = assigner.assign(anchors, [3, 2], boxes([0, 0, 10, 10]))
    assert result.gt_inds.tolist() == [0, 0, 0, 0, 0]
    # with topk=3 level 0 gives IoUs 1, 0.818, 0.667 and level 1 gives 0, 0: mean 0.497, std 0.462
    # -> threshold 0.959: anchor 0 only
    assert ATSSAssigner(topk=3).assign(anchors, [3, 2], boxes([0, 0, 10, 10])).gt_inds.tolist() == [1, 0, 0, 0, 0]


def test_a_candidate_centre_on_the_box_edge_is_not_positive():
    # gt [0, 0, 10, 2] (thin); anchors A (centre y=0: on the top edge), B (centre inside), C-E far.
    # IoUs 1/3, 1/3, 0, 0, 0: threshold 0.133 + 0.183 = 0.316 passes A and B; A's centre is not
    # more than 0.01 px inside the box
    anchors = boxes([0, -3, 10, 3], [0, -2, 10, 4], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10])
    result = ATSSAssigner(topk=5).assign(anchors, [5], boxes([0, 0, 10, 2]))
    assert result.gt_inds.tolist() == [0, 1, 0, 0, 0]


def test_ties_threshold_is_inclusive_and_the_first_gt_wins():
    # gt [0, 0, 20, 20]: anchors 0 and 1 are equally far from its centre and overlap it equally
    # (IoU 0.25): std 0, so the threshold equals their IoU and both are positive (>=)
    anchors = boxes([0, 0, 10, 10], [10, 10, 20, 20], [40, 40, 50, 50])
    result = ATSSAssigner(topk=2).assign(anchors, [3], boxes([0, 0, 20, 20]))
    assert result.gt_inds.tolist() == [1, 1, 0]
    # two identical gts: each positive anchor goes to the first (torch.max keeps the first)
    result = ATSSAssigner(topk=2).assign(anchors, [3], boxes([0, 0, 20, 20], [0, 0, 20, 20]))
    assert result.gt_inds.tolist() == [1, 1, 0]
    # two gts for which anchor 0 is positive (thresholds 0.632 and 0.828 from IoUs 0.694, 0, 0
    # and 0.909, 0, 0): it goes to the one it overlaps more, the second
    anchors = boxes([0, 0, 10, 10], [50, 50, 60, 60], [100, 100, 110, 110])
    result = ATSSAssigner(topk=3).assign(anchors, [3], boxes([0, 0, 12, 12], [0, 0, 10, 11]))
    assert result.gt_inds.tolist() == [2, 0, 0]


def test_no_gt_and_ignored_boxes():
    anchors = boxes([0, 0, 10, 10], [10, 0, 20, 10])
    assert ATSSAssigner(topk=1).assign(anchors, [2], boxes()).gt_inds.tolist() == [0, 0]
    # anchor 1 lies on an ignored box: ignored (-1), though still a (far) candidate. IoUs 1, 0,
    # 0.667, 0: threshold 0.417 + 0.5 -> anchor 0 only
    anchors = boxes([0, 0, 10, 10], [10, 0, 20, 10], [2, 0, 12, 10], [40, 0, 50, 10])
    result = ATSSAssigner(topk=4, ignore_iof_thr=0.5).assign(
        anchors, [4], boxes([0, 0, 10, 10]), gt_bboxes_ignore=boxes([10, 0, 20, 10]))
    assert result.gt_inds.tolist() == [1, -1, 0, 0]


def test_assigner_refuses_ddod_alpha():
    with pytest.raises(BuildError, match='alpha'):
        ATSSAssigner(topk=9, alpha=0.8)


# ---------------------------------------------------------------------------- GFL losses
def test_quality_focal_loss_matches_its_formula():
    pred = torch.tensor([[0.3, -1.2, 2.0], [-0.5, 0.1, 0.7]])
    label = torch.tensor([1, 3])  # the second sample is background
    score = torch.tensor([0.6, 0.0])
    beta = 2.0
    expected = torch.zeros(2)
    for i in range(2):
        for c in range(3):
            s = 1 / (1 + math.exp(-pred[i, c].item()))
            y = score[i].item() if label[i] == c else 0.0
            expected[i] += -abs(y - s) ** beta * ((1 - y) * math.log(1 - s) + y * math.log(s))
    torch.testing.assert_close(quality_focal_loss(pred, label, score, beta), expected)
    loss = QualityFocalLoss(beta=beta, loss_weight=0.5)(pred, (label, score), weight=torch.tensor([1.0, 2.0]),
                                                          avg_factor=4.0)
    torch.testing.assert_close(loss, 0.5 * (expected[0] + 2 * expected[1]) / 4, rtol=1e-5, atol=0)


def test_distribution_focal_loss_matches_its_formula():
    pred = torch.tensor([[0.1, 0.5, -0.3, 1.0], [2.0, -1.0, 0.0, 0.3]])
    target = torch.tensor([1.25, 2.9])
    logp = pred.log_softmax(-1)
    expected = torch.stack([-(0.75 * logp[0, 1] + 0.25 * logp[0, 2]), -(0.1 * logp[1, 2] + 0.9 * logp[1, 3])])
    torch.testing.assert_close(distribution_focal_loss(pred, target), expected)
    torch.testing.assert_close(DistributionFocalLoss(loss_weight=0.25)(pred, target), 0.25 * expected.mean())


def test_integral_is_the_expected_bin():
    reg_max = 4
    integral = Integral(reg_max)
    logits = torch.zeros(1, 4 * (reg_max + 1))
    logits[0, 3] = 50.0                       # left: all mass on bin 3
    logits[0, 5:10] = 0.0                     # top: uniform -> 2
    logits[0, 10 + 1] = logits[0, 10 + 2] = 50.0  # right: half on 1, half on 2 -> 1.5
    logits[0, 15 + 4] = 50.0                  # bottom: bin 4
    torch.testing.assert_close(integral(logits), torch.tensor([[3.0, 2.0, 1.5, 4.0]]))
    assert 'project' in integral.state_dict()  # saved, as MMDetection's checkpoints hold it


def test_gfl_decoding_is_distance_times_stride_from_the_anchor_centre():
    head = GFLHead(num_classes=2, in_channels=8, feat_channels=32, stacked_convs=1, reg_max=4,
                   norm_cfg=dict(type='GN', num_groups=8),
                   test_cfg=dict(nms_pre=10, score_thr=0.0, nms=dict(type='nms', iou_threshold=0.5), max_per_img=10))
    logits = torch.full((1, 20), -50.0)
    for side, bin_ in enumerate((1, 2, 3, 0)):
        logits[0, side * 5 + bin_] = 50.0
    # level 1 (stride 16): distances 16, 32, 48, 0 from the anchor centre (40, 40)
    box = head.decode_level(boxes([0, 0, 80, 80]), logits, 1, max_shape=(1000, 1000))
    torch.testing.assert_close(box, boxes([40 - 16, 40 - 32, 40 + 48, 40]))
    clipped = head.decode_level(boxes([0, 0, 80, 80]), logits, 1, max_shape=(30, 70))
    torch.testing.assert_close(clipped, boxes([24, 8, 70, 30]))


def test_atss_centerness_target():
    c = anchor_centerness(boxes([0, 0, 20, 20]), boxes([5, 0, 35, 40]))  # centre (10, 10)
    assert c.item() == pytest.approx(math.sqrt(5 / 25 * 10 / 30))


@pytest.mark.parametrize('head_cls', [ATSSHead, GFLHead])
def test_unknown_train_and_test_cfg_keys_fail_at_build(head_cls):
    with pytest.raises(BuildError, match="'nms_pree'.*did you mean 'nms_pre'"):
        head_cls(num_classes=2, in_channels=32, test_cfg=dict(nms_pree=10, nms=dict(type='nms', iou_threshold=0.5)))
    with pytest.raises(BuildError, match="'asigner'"):
        head_cls(num_classes=2, in_channels=32, train_cfg=dict(asigner=dict(type='ATSSAssigner', topk=9)))
    with pytest.raises(BuildError, match='one anchor per position'):
        head_cls(num_classes=2, in_channels=32, anchor_generator=dict(
            type='AnchorGenerator', ratios=[0.5, 1.0], octave_base_scale=8, scales_per_octave=1, strides=[8, 16]))
