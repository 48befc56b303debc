"""Each loss against its formula, with weights, avg_factor, reduction and loss_weight."""
import math

import pytest
import torch
import torch.nn.functional as F

from detforge.registry import LOSSES
from detforge.structures import bbox_overlaps


def build(**cfg):
    return LOSSES.build(cfg)


def test_focal_loss_matches_its_formula():
    pred = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 0.2, 1.0]])
    labels = torch.tensor([1, 3])  # second sample is background (label == num_classes)
    p = pred.sigmoid()
    target = torch.tensor([[0., 1., 0.], [0., 0., 0.]])
    alpha, gamma = 0.25, 2.0
    expected = torch.where(target == 1, -alpha * (1 - p) ** gamma * p.log(),
                           -(1 - alpha) * p ** gamma * (1 - p).log())
    loss = build(type='FocalLoss', gamma=gamma, alpha=alpha, reduction='none')(pred, labels)
    torch.testing.assert_close(loss, expected)
    # avg_factor divides the sum; a per-sample weight zeroes the background row
    weighted = build(type='FocalLoss', loss_weight=2.0)(pred, labels, weight=torch.tensor([1., 0.]),
                                                        avg_factor=4.0)
    torch.testing.assert_close(weighted, 2.0 * expected[0].sum() / 4.0, rtol=1e-5, atol=0)


def test_focal_loss_with_gamma_zero_and_no_alpha_is_bce():
    pred, labels = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 4, 4])
    one_hot = F.one_hot(labels, 5)[:, :4].float()
    loss = build(type='FocalLoss', gamma=0.0, alpha=-1)(pred, labels)
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(pred, one_hot))


def test_softmax_cross_entropy_with_class_weights():
    pred, labels = torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 1])
    cw = [1.0, 2.0, 0.5, 1.0]
    loss = build(type='CrossEntropyLoss', class_weight=cw, reduction='none')(pred, labels)
    expected = -F.log_softmax(pred, 1)[torch.arange(5), labels] * torch.tensor(cw)[labels]
    torch.testing.assert_close(loss, expected)
    mean = build(type='CrossEntropyLoss', loss_weight=0.5)(pred, labels, avg_factor=10.)
    torch.testing.assert_close(mean, 0.5 * F.cross_entropy(pred, labels, reduction='sum') / 10., rtol=1e-5, atol=0)


def test_sigmoid_cross_entropy_with_background_label():
    pred, labels = torch.randn(3, 2), torch.tensor([0, 1, 2])  # 2 = background: all-zero target
    target = torch.tensor([[1., 0.], [0., 1.], [0., 0.]])
    loss = build(type='CrossEntropyLoss', use_sigmoid=True)(pred, labels)
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(pred, target))


def test_smooth_l1_loss_matches_its_formula():
    pred = torch.tensor([[0.05, 0.3, -0.2, 0.0]])
    loss = build(type='SmoothL1Loss', beta=0.1, reduction='none')(pred, torch.zeros_like(pred))
    torch.testing.assert_close(loss, torch.tensor([[0.5 * 0.05 ** 2 / 0.1, 0.3 - 0.05, 0.2 - 0.05, 0.0]]))


def test_l1_loss_with_weights_and_reduction_override():
    pred, target = torch.tensor([[1., 2.], [3., 4.]]), torch.zeros(2, 2)
    loss = build(type='L1Loss', loss_weight=3.0)
    torch.testing.assert_close(loss(pred, target), torch.tensor(3.0 * 2.5))
    torch.testing.assert_close(loss(pred, target, weight=torch.tensor([[1., 1.], [0., 0.]]),
                                    reduction_override='sum'), torch.tensor(9.0))


def test_giou_and_iou_losses_match_hand_values():
    pred, target = torch.tensor([[0., 0., 2., 2.]]), torch.tensor([[1., 1., 3., 3.]])
    iou = 1 / 7  # intersection 1, union 7
    giou = iou - (9 - 7) / 9  # enclosing box 3x3
    torch.testing.assert_close(build(type='GIoULoss')(pred, target), torch.tensor(1 - giou))
    torch.testing.assert_close(build(type='IoULoss', mode='linear')(pred, target), torch.tensor(1 - iou))
    torch.testing.assert_close(build(type='IoULoss')(pred, target), torch.tensor(-math.log(iou)))


def test_losses_without_positives_are_zero_and_differentiable():
    pred = torch.zeros((0, 4), requires_grad=True)
    for cfg in (dict(type='L1Loss'), dict(type='SmoothL1Loss'), dict(type='GIoULoss')):
        loss = build(**cfg)(pred, torch.zeros((0, 4)), avg_factor=1.0)
        loss.backward()
        assert float(loss.detach()) == 0.0


def test_unknown_reduction_is_rejected():
    with pytest.raises(ValueError, match='reduction'):
        build(type='L1Loss', reduction='average')


# ---------------------------------------------------------------------------- box overlaps
def test_bbox_overlaps_modes():
    a = torch.tensor([[0., 0., 10., 10.]])
    b = torch.tensor([[0., 0., 10., 20.], [20., 20., 30., 30.]])
    torch.testing.assert_close(bbox_overlaps(a, b), torch.tensor([[0.5, 0.0]]))
    torch.testing.assert_close(bbox_overlaps(a, b, mode='iof'), torch.tensor([[1.0, 0.0]]))
    # giou of the disjoint pair: 0 - (900 - 200) / 900
    torch.testing.assert_close(bbox_overlaps(a, b, mode='giou'), torch.tensor([[0.5, -700 / 900]]))
    torch.testing.assert_close(bbox_overlaps(a.expand(2, 4), b, is_aligned=True), torch.tensor([0.5, 0.0]))
    assert bbox_overlaps(a, torch.zeros((0, 4))).shape == (1, 0)
