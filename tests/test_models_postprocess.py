"""Post-processing: Soft-NMS (MMCV semantics, hand-computed cases), nms configs of the
heads, min_bbox_size of dense heads."""
import math

import pytest
import torch

from detforge.models.postprocess import nms_from_cfg, soft_nms
from detforge.models.roi_heads.bbox_heads.bbox_head import multiclass_nms
from detforge.models.train_test_cfg import DenseTestConfig, NMSConfig
from detforge.registry import HEADS

# A and B overlap with IoU 50 / 100 = 0.5; C overlaps neither
BOXES = torch.tensor([[0., 0., 10., 10.], [0., 0., 10., 5.], [20., 20., 30., 30.]])
SCORES = torch.tensor([0.9, 0.8, 0.7])


def test_soft_nms_linear_decays_overlaps_above_the_threshold():
    scores, keep = soft_nms(BOXES, SCORES, iou_threshold=0.3, method='linear')
    # A kept; B: 0.8 * (1 - 0.5) = 0.4; C untouched and now above B
    assert keep.tolist() == [0, 2, 1]
    torch.testing.assert_close(scores, torch.tensor([0.9, 0.7, 0.4]))
    _, keep = soft_nms(BOXES, SCORES, iou_threshold=0.6, method='linear')
    assert keep.tolist() == [0, 1, 2]  # IoU 0.5 is not above 0.6: no decay


def test_soft_nms_gaussian_decays_every_overlap():
    scores, keep = soft_nms(BOXES, SCORES, sigma=0.5, method='gaussian')
    assert keep.tolist() == [0, 2, 1]
    torch.testing.assert_close(scores, torch.tensor([0.9, 0.7, 0.8 * math.exp(-0.25 / 0.5)]))


def test_soft_nms_min_score_drops_and_naive_is_hard_nms():
    scores, keep = soft_nms(BOXES, SCORES, iou_threshold=0.3, min_score=0.45, method='linear')
    assert keep.tolist() == [0, 2]
    _, keep = soft_nms(BOXES, SCORES, iou_threshold=0.3, method='naive')
    assert keep.tolist() == [0, 2]
    _, keep = soft_nms(BOXES, SCORES, iou_threshold=0.3, method='linear', max_num=2)
    assert keep.tolist() == [0, 2]


def test_soft_nms_is_per_class_and_class_agnostic_on_request():
    labels = torch.tensor([0, 1, 0])
    cfg = NMSConfig.parse(dict(type='soft_nms', iou_threshold=0.3, method='linear'))
    dets, keep = nms_from_cfg(BOXES, SCORES, labels, cfg)
    assert keep.tolist() == [0, 1, 2]  # B is of another class: not decayed
    torch.testing.assert_close(dets[:, 4], SCORES)
    cfg = NMSConfig.parse(dict(type='soft_nms', iou_threshold=0.3, class_agnostic=True))
    dets, keep = nms_from_cfg(BOXES, SCORES, labels, cfg)
    assert keep.tolist() == [0, 2, 1] and dets[2, 4].item() == pytest.approx(0.4)


def test_multiclass_nms_takes_a_soft_nms_config():
    scores = torch.tensor([[0.9, 0.0, 0.1], [0.8, 0.0, 0.2], [0.7, 0.0, 0.3]])  # last: background
    dets, labels = multiclass_nms(BOXES, scores, 0.05, dict(type='soft_nms', iou_threshold=0.3), 100)
    assert labels.tolist() == [0, 0, 0]
    torch.testing.assert_close(dets[:, 4], torch.tensor([0.9, 0.7, 0.4]))
    dets, _ = multiclass_nms(BOXES, scores, 0.05, dict(type='nms', iou_threshold=0.3), 100)
    assert dets[:, 4].tolist() == pytest.approx([0.9, 0.7])


def _retina_head(**test_cfg):
    torch.manual_seed(0)
    cfg = dict(nms_pre=100, score_thr=0.0, nms=dict(type='nms', iou_threshold=0.5), max_per_img=1000)
    cfg.update(test_cfg)
    return HEADS.build(dict(type='RetinaHead', num_classes=2, in_channels=8, feat_channels=8,
                            stacked_convs=1, test_cfg=cfg)).eval()


def _detect(head):
    torch.manual_seed(1)
    feats = [torch.randn(1, 8, s, s) for s in (16, 8, 4, 2, 1)]
    meta = dict(img_shape=(128, 128, 3), pad_shape=(128, 128, 3), scale_factor=1.0)
    with torch.no_grad():
        return head.simple_test(feats, [meta])[0]


def test_retina_head_honours_min_bbox_size():
    dets, _ = _detect(_retina_head())
    wh = torch.minimum(dets[:, 2] - dets[:, 0], dets[:, 3] - dets[:, 1])
    assert (wh <= 40).any() and (wh > 40).any()
    dets, _ = _detect(_retina_head(min_bbox_size=40))
    wh = torch.minimum(dets[:, 2] - dets[:, 0], dets[:, 3] - dets[:, 1])
    assert len(dets) > 0 and (wh > 40).all()


def test_retina_head_runs_soft_nms():
    hard, _ = _detect(_retina_head())
    soft, _ = _detect(_retina_head(nms=dict(type='soft_nms', iou_threshold=0.5, min_score=0.0)))
    assert isinstance(_retina_head().test_cfg, DenseTestConfig)
    # soft-NMS keeps (decayed) what hard NMS suppresses, and the best detection is the same
    assert len(soft) > len(hard)
    torch.testing.assert_close(soft[0], hard[0])
    assert (soft[1:, 4] <= soft[:-1, 4] + 1e-6).all()
