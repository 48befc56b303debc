"""OHEMSampler (MMDetection 2.x semantics): within RandomSampler's quotas, the RoIs with the
highest current classification loss are kept."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from detforge.config import Config
from detforge.models.task_modules import AssignResult, OHEMSampler, RoILoss
from detforge.registry import BBOX_SAMPLERS, DETECTORS, HEADS

NUM_CLASSES = 3


def _bbox_head():
    return HEADS.build(dict(type='Shared2FCBBoxHead', in_channels=4, fc_out_channels=8,
                            roi_feat_size=1, num_classes=NUM_CLASSES))


def _hand_scores(rois):
    """Logits made by hand from the boxes: background logit x1 / 10, class-0 logit
    -y1 / 10, others 0. Negatives with small x1 and positives with large y1 are hard."""
    logits = torch.zeros(len(rois), NUM_CLASSES + 1)
    logits[:, NUM_CLASSES] = rois[:, 1] / 10
    logits[:, 0] = -rois[:, 2] / 10
    return logits


def test_ohem_keeps_the_highest_loss_positives_and_negatives_hand_case():
    # 5 positives (labels 0) with y1 = 0, 40, 10, 30, 20 and 6 negatives with x1 = 50, 0, 40,
    # 10, 30, 20; quotas: 2 positives, 4 - 2 = 2 negatives
    pos = torch.tensor([[0., y, 10., y + 10] for y in (0, 40, 10, 30, 20)])
    neg = torch.tensor([[x, 0., x + 10, 10.] for x in (50, 0, 40, 10, 30, 20)])
    boxes = torch.cat([neg[:3], pos, neg[3:]])          # interleave: indices matter
    gt_inds = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0])
    labels = torch.tensor([-1, -1, -1, 0, 0, 0, 0, 0, -1, -1, -1])
    assign = AssignResult(1, gt_inds, torch.ones(11), labels=labels)
    sampler = BBOX_SAMPLERS.build(dict(type='OHEMSampler', num=4, pos_fraction=0.5,
                                       add_gt_as_proposals=False))
    head = _bbox_head()
    res = sampler.sample(assign, boxes, torch.tensor([[0., 0., 10., 10.]]), torch.tensor([0]),
                         roi_loss=RoILoss(_hand_scores, head))
    # hardest positives: y1 = 40 (index 4) and 30 (index 6); negatives: x1 = 0 (index 1),
    # 10 (index 8)
    assert res.pos_inds.tolist() == [4, 6]
    assert res.neg_inds.tolist() == [1, 8]
    # the ranking loss is the head's cross-entropy of each box
    rois = torch.cat([torch.zeros(11, 1), boxes], 1)
    expected = F.cross_entropy(_hand_scores(rois), labels.clamp(min=0).where(
        gt_inds > 0, torch.tensor(NUM_CLASSES)), reduction='none')
    torch.testing.assert_close(RoILoss(_hand_scores, head)(boxes, labels.clamp(min=0).where(
        gt_inds > 0, torch.tensor(NUM_CLASSES))), expected)


def test_ohem_takes_a_group_whole_without_scoring_it_when_it_fits_the_quota():
    calls = []

    def scores(rois):
        calls.append(len(rois))
        return _hand_scores(rois)
    boxes = torch.tensor([[x, 0., x + 10, 10.] for x in range(0, 100, 10)], dtype=torch.float)
    gt_inds = torch.tensor([1, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    assign = AssignResult(1, gt_inds, torch.ones(10), labels=torch.tensor([2] + [-1] * 9))
    sampler = OHEMSampler(num=6, pos_fraction=0.5, add_gt_as_proposals=False)
    res = sampler.sample(assign, boxes, boxes[:1], torch.tensor([2]),
                         roi_loss=RoILoss(scores, _bbox_head()))
    assert res.pos_inds.tolist() == [0]
    assert res.neg_inds.tolist() == [1, 2, 3, 4, 5]       # the 5 smallest x1 of 9
    assert calls == [9]                                    # negatives scored, positive not


def _ohem_faster_cfg():
    cfg = Config.fromfile('configs/faster_rcnn/faster_rcnn_r50_fpn_ohem_1x_coco.py')
    model = copy.deepcopy(cfg.model)
    model.backbone.update(depth=18, init_cfg=None, frozen_stages=-1, norm_eval=False)
    model.neck.in_channels = [64, 128, 256, 512]
    model.roi_head.bbox_head.num_classes = NUM_CLASSES
    # narrow layers keep the test fast; the sampler does not depend on widths
    model.neck.out_channels = model.rpn_head.in_channels = model.rpn_head.feat_channels = 32
    model.roi_head.bbox_roi_extractor.out_channels = model.roi_head.bbox_head.in_channels = 32
    model.roi_head.bbox_head.fc_out_channels = 64
    return model


def test_mmdet_ohem_config_trains_and_its_rois_are_the_hardest_under_the_real_head():
    cfg = _ohem_faster_cfg()
    assert cfg.train_cfg.rcnn.sampler.type == 'OHEMSampler'   # MMDetection's file, unchanged
    torch.manual_seed(0)
    model = DETECTORS.build(cfg)
    sampler = model.roi_head.bbox_sampler
    assert isinstance(sampler, OHEMSampler) and (sampler.num, sampler.pos_fraction) == (512, 0.25)
    img = torch.randint(0, 255, (2, 3, 96, 130), dtype=torch.uint8)
    metas = [dict(img_shape=(96, 130, 3), pad_shape=(96, 130, 3),
                  scale_factor=np.ones(4, np.float32))] * 2
    gt_bboxes = [torch.tensor([[10., 10., 60., 50.]]), torch.tensor([[30., 20., 120., 90.]])]
    gt_labels = [torch.tensor([1]), torch.tensor([2])]
    losses = model.forward_train(img, metas, gt_bboxes=gt_bboxes, gt_labels=gt_labels)
    assert all(torch.isfinite(v).all() for v in losses.values())
    sum(v for k, v in losses.items() if 'loss' in k).backward()

    # the head's choice among many negatives: exactly the top-k by the head's own loss
    head = model.roi_head
    model.eval()
    with torch.no_grad():
        x = model.extract_feat(model.preprocess(img, metas))
        far = torch.rand(800, 2) * 60
        proposals = [torch.cat([far, far + 30], 1)] * 2
        results = head.assign_and_sample(head.bbox_assigner, sampler, proposals, gt_bboxes,
                                         gt_labels, roi_losses=head.roi_losses(x, 2))
        for i, res in enumerate(results):
            boxes = torch.cat([gt_bboxes[i], proposals[i]])
            assigned = head.bbox_assigner.assign(boxes, gt_bboxes[i], None, gt_labels[i])
            negatives = torch.nonzero(assigned.gt_inds == 0).squeeze(1)
            assert len(negatives) > len(res.neg_inds) == 512 - len(res.pos_inds)
            loss = head.roi_losses(x, 2)[i](boxes[negatives],
                                             negatives.new_full((len(negatives),), NUM_CLASSES))
            threshold = loss.topk(len(res.neg_inds)).values[-1]
            chosen = loss[torch.isin(negatives, res.neg_inds)]
            assert len(chosen) == len(res.neg_inds) and bool((chosen >= threshold).all())


def test_ohem_in_every_cascade_stage_trains():
    cfg = Config.fromfile('configs/_base_/models/cascade_rcnn_r50_fpn.py')
    model = copy.deepcopy(cfg.model)
    model.backbone.update(depth=18, init_cfg=None, frozen_stages=-1, norm_eval=False)
    model.neck.in_channels = [64, 128, 256, 512]
    for stage in model.train_cfg.rcnn:
        stage.sampler = dict(type='OHEMSampler', num=64, pos_fraction=0.25)
    torch.manual_seed(0)
    model = DETECTORS.build(model)
    img = torch.randint(0, 255, (1, 3, 96, 128), dtype=torch.uint8)
    metas = [dict(img_shape=(96, 128, 3), pad_shape=(96, 128, 3),
                  scale_factor=np.ones(4, np.float32))]
    losses = model.forward_train(img, metas, gt_bboxes=[torch.tensor([[10., 10., 60., 50.]])],
                                 gt_labels=[torch.tensor([1])])
    assert {'s0.loss_cls', 's2.loss_cls'} <= set(losses)
    assert all(torch.isfinite(v).all() for v in losses.values())


def test_ohem_outside_an_roi_head_says_where_it_belongs():
    sampler = OHEMSampler(num=4, pos_fraction=0.5)
    assign = AssignResult(1, torch.tensor([1, 0]), torch.ones(2), labels=torch.tensor([0, -1]))
    with pytest.raises(TypeError, match='train_cfg.rcnn'):
        sampler.sample(assign, torch.rand(2, 4), torch.rand(1, 4), torch.tensor([0]))
