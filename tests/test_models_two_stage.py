"""RPN, RoI heads, Faster R-CNN and Cascade R-CNN: behaviour of the parts and overfitting."""
import copy

import numpy as np
import pytest
import torch

from detforge.config import Config
from detforge.registry import DETECTORS, HEADS, ROI_EXTRACTORS

BCCD_CLASSES = ('RBC', 'WBC', 'Platelets')


# ----------------------------------------------------------------------------- RoI extractor
def _extractor(**kw):
    return ROI_EXTRACTORS.build(dict(type='SingleRoIExtractor', out_channels=8,
                                     roi_layer=dict(type='RoIAlign', output_size=7,
                                                    sampling_ratio=0),
                                     featmap_strides=[4, 8, 16, 32], **kw))


def _square_rois(sides):
    sides = torch.tensor(sides, dtype=torch.float32)
    return torch.stack([torch.zeros_like(sides), torch.zeros_like(sides),
                        torch.zeros_like(sides), sides, sides], 1)


def test_roi_level_follows_box_scale_with_finest_scale_56():
    # scale < 112 -> stride 4, < 224 -> 8, < 448 -> 16, larger -> 32
    rois = _square_rois([16, 111, 112, 223, 224, 447, 448, 2000])
    assert _extractor().map_roi_levels(rois, 4).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_torchvision_level_mapping_agrees_with_multiscale_roi_align():
    from torchvision.ops.poolers import LevelMapper
    rois = _square_rois(torch.linspace(4, 900, 500).tolist())
    mapper = LevelMapper(k_min=2, k_max=5)
    ours = _extractor(level_mapping='torchvision').map_roi_levels(rois, 4)
    assert torch.equal(ours, mapper([rois[:, 1:]]))


def test_each_roi_is_pooled_from_its_level():
    ext = _extractor()
    feats = [torch.full((1, 8, 640 // s, 640 // s), float(s)) for s in (4, 8, 16, 32)]
    out = ext(feats, _square_rois([20, 150, 300, 600]))
    assert out.shape == (4, 8, 7, 7)
    assert out.mean(dim=(1, 2, 3)).tolist() == [4., 8., 16., 32.]


# ----------------------------------------------------------------------------- RoI head sampling
def _faster_cfg(num_classes=3):
    cfg = Config.fromfile('configs/_base_/models/faster_rcnn_r50_fpn.py')
    model = copy.deepcopy(cfg.model)
    model.backbone.update(depth=18, init_cfg=None, frozen_stages=-1, norm_eval=False)
    model.neck.in_channels = [64, 128, 256, 512]
    model.roi_head.bbox_head.num_classes = num_classes
    return model


def test_roi_sampler_takes_512_rois_at_most_a_quarter_positive_with_gts_added():
    model = _faster_cfg()
    head = HEADS.build(dict(model.roi_head, train_cfg=model.train_cfg.rcnn,
                            test_cfg=model.test_cfg.rcnn))
    torch.manual_seed(0)
    gts = torch.tensor([[50., 50., 150., 150.], [200., 100., 300., 220.]])
    # 400 proposals near the GTs (positives) and 1600 far from them (negatives)
    near = gts.repeat(200, 1) + torch.randn(400, 4) * 3
    far = torch.rand(1600, 2) * 50 + 350
    far = torch.cat([far, far + 40], 1)
    res = head.assign_and_sample(head.bbox_assigner, head.bbox_sampler, [torch.cat([near, far])],
                                 [gts], [torch.tensor([0, 2])])[0]
    assert len(res.pos_inds) == 128 and len(res.neg_inds) == 512 - 128
    assert res.pos_is_gt.sum() <= 2
    assert set(res.pos_gt_labels.tolist()) <= {0, 2}
    # few positives: all of them (the two GTs included) and negatives fill the rest
    res = head.assign_and_sample(head.bbox_assigner, head.bbox_sampler, [far], [gts],
                                 [torch.tensor([0, 2])])[0]
    assert len(res.pos_inds) == 2 and res.pos_is_gt.tolist() == [1, 1]
    assert len(res.neg_inds) == 510


# ----------------------------------------------------------------------------- RPN proposals
def _rpn_head(**test_cfg):
    cfg = dict(_faster_cfg().rpn_head)
    cfg['test_cfg'] = dict(dict(nms_pre=1000, max_per_img=1000, nms=dict(type='nms',
                                iou_threshold=0.7), min_bbox_size=0), **test_cfg)
    return HEADS.build(cfg)


@pytest.mark.parametrize('head_key', ['rpn_head', 'retina'])
def test_a_dense_head_refuses_gts_as_proposals(head_key):
    from detforge.registry import BuildError
    model = _faster_cfg()
    sampler = dict(model.train_cfg.rpn.sampler, add_gt_as_proposals=True)  # no anchor slot for a gt
    if head_key == 'rpn_head':
        cfg = dict(model.rpn_head, train_cfg=dict(model.train_cfg.rpn, sampler=sampler))
    else:
        cfg = dict(type='RetinaHead', num_classes=3, in_channels=8, feat_channels=8, stacked_convs=1,
                   loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True),  # a loss that samples
                   train_cfg=dict(assigner=model.train_cfg.rpn.assigner, sampler=sampler))
    with pytest.raises(BuildError) as info:
        HEADS.build(cfg)
    assert 'set add_gt_as_proposals=False' in str(info.value)
    assert 'train_cfg.sampler.add_gt_as_proposals' in str(info.value)
    HEADS.build(dict(cfg, train_cfg=dict(cfg['train_cfg'], sampler=dict(sampler, add_gt_as_proposals=False))))


def _level_outputs(head, sizes, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    cls = [torch.randn(batch, 3, h, w, generator=g) for h, w in sizes]
    reg = [torch.randn(batch, 12, h, w, generator=g) * 0.1 for h, w in sizes]
    return cls, reg


def test_rpn_keeps_nms_pre_per_level_and_max_per_img_per_image():
    sizes = [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    metas = [dict(img_shape=(64, 64, 3))] * 2
    # IoU threshold 1: nothing is suppressed, so the counts are the selection's alone
    head = _rpn_head(nms_pre=20, max_per_img=1000, nms=dict(type='nms', iou_threshold=1.0))
    cls, reg = _level_outputs(head, sizes)
    props = head.get_bboxes(cls, reg, metas)
    per_level = [min(20, h * w * 3) for h, w in sizes]
    assert [len(p) for p in props] == [sum(per_level)] * 2
    head = _rpn_head(nms_pre=20, max_per_img=30)
    props = head.get_bboxes(cls, reg, metas)
    assert all(len(p) <= 30 for p in props)
    assert all(torch.all(p[:-1, 4] >= p[1:, 4]) for p in props)


def test_rpn_nms_does_not_suppress_across_levels():
    head = _rpn_head(nms_pre=1000, max_per_img=1000)
    # one position per level and anchors of the same size on every level, zero deltas: the
    # 3 boxes (one per ratio, IoU < 0.7 with each other) repeat identically on 5 levels
    head.prior_generator = type(head.prior_generator)(strides=[4, 8, 16, 32, 64],
                                                      ratios=[0.5, 1.0, 2.0], sizes=[[32]] * 5)
    cls, reg = _level_outputs(head, [(1, 1)] * 5, batch=1)
    reg = [torch.zeros_like(r) for r in reg]
    props = head.get_bboxes(cls, reg, [dict(img_shape=(256, 256, 3))])[0]
    assert len(props) == 5 * 3
    assert len(torch.unique(props[:, :4], dim=0)) == 3


@pytest.mark.parametrize('best_first', [True, False])
def test_rpn_ranks_by_logit_where_float32_sigmoids_tie(best_first):
    head = _rpn_head(nms_pre=1000, max_per_img=1000)
    # 32 px anchors 4 px apart on one level (IoU > 0.7 with the next); the 4 of positions 8..11
    # have logits above 17, whose sigmoids are all 1.0 in float32: only the logits say which
    # box is best (and suppresses its neighbours)
    head.prior_generator = type(head.prior_generator)(strides=[4], ratios=[1.0], sizes=[[32]])
    top = torch.tensor([30., 22., 21., 20.] if best_first else [20., 21., 22., 30.])
    logits = torch.cat([torch.full((8,), -10.), top])
    props = head.get_bboxes([logits.view(1, 1, 1, 12)], [torch.zeros(1, 4, 1, 12)],
                            [dict(img_shape=(200, 200, 3))])[0]
    best = int(logits.argmax())
    assert props[0, :4].tolist() == [best * 4 - 16, -16 + 16, best * 4 + 16, 16]  # y clipped
    assert props[0, 4].item() == 1.0  # scored by its probability


def test_rpn_proposals_of_a_float64_model_are_float64_and_autocast_ones_float32():
    head = _rpn_head(nms=dict(type='nms', iou_threshold=1.0))  # nothing suppressed
    # one level, 70 positions along x: anchor corners near x = 1100 are not float32 numbers
    head.prior_generator = type(head.prior_generator)(strides=[16], ratios=[0.5, 1.0, 2.0],
                                                      sizes=[[37]])
    meta = dict(img_shape=(4000, 4000, 3))
    cls, _ = _level_outputs(head, [(1, 70)], batch=1)
    reg = [torch.zeros(1, 12, 1, 70, dtype=torch.float64)]  # zero deltas: proposals = anchors
    props = head.get_bboxes([cls[0].double()], reg, [meta])[0]
    assert props.dtype == torch.float64 and len(props) == 70 * 3
    base = head.prior_generator.base_anchors[0].double()  # (3, 4)
    shift_x = torch.arange(70, dtype=torch.float64) * 16
    shifts = torch.stack([shift_x, torch.zeros(70, dtype=torch.float64)] * 2, 1)
    anchors = (shifts[:, None] + base[None]).reshape(-1, 4).clamp(0, 4000)  # sums in float64
    nearest = torch.cdist(props[:, :4], anchors, p=float('inf')).min(1).values
    assert nearest.max() < 1e-9  # float32 anchors are up to 5e-5 px away here
    with torch.autocast('cpu', dtype=torch.bfloat16):  # a bf16 model's outputs: float32 boxes
        props = head.get_bboxes([cls[0].bfloat16()], [reg[0].bfloat16()], [meta])[0]
    assert props.dtype == torch.float32


# ----------------------------------------------------------------------------- cascade
def _cascade_cfg():
    cfg = Config.fromfile('configs/_base_/models/cascade_rcnn_r50_fpn.py')
    model = copy.deepcopy(cfg.model)
    model.backbone.update(depth=18, init_cfg=None, frozen_stages=-1, norm_eval=False)
    model.neck.in_channels = [64, 128, 256, 512]
    for head in model.roi_head.bbox_head:
        head.num_classes = 3
    return model


def test_cascade_stage_boxes_are_previous_boxes_decoded_with_previous_deltas():
    torch.manual_seed(0)
    model = DETECTORS.build(_cascade_cfg()).eval()
    for head in model.roi_head.bbox_head:   # make the deltas visible
        torch.nn.init.normal_(head.fc_reg.weight, 0, 0.05)
    img = torch.randint(0, 255, (1, 3, 128, 160), dtype=torch.uint8)
    metas = [dict(img_shape=(128, 160, 3), scale_factor=np.ones(4, np.float32))]
    with torch.no_grad():
        x = model.extract_feat(model.preprocess(img, metas))
        proposals = torch.tensor([[10., 10., 60., 50.], [30., 40., 120., 100.]])
        model.roi_head.simple_test_bboxes(x, metas, [proposals], model.roi_head.test_cfg)
        rois = model.roi_head.last_stage_rois
        for i in range(2):
            head = model.roi_head.bbox_head[i]
            deltas = model.roi_head._bbox_forward(i, x, rois[i])['bbox_pred']
            expected = head.bbox_coder.decode(rois[i][:, 1:], deltas, max_shape=(128, 160))
            torch.testing.assert_close(rois[i + 1][:, 1:], expected)
            assert not torch.allclose(rois[i + 1], rois[i])
    assert [head.bbox_coder.stds for head in model.roi_head.bbox_head] == [
        (0.1, 0.1, 0.2, 0.2), (0.05, 0.05, 0.1, 0.1), (0.033, 0.033, 0.067, 0.067)]


def test_refine_bboxes_drops_gt_proposals_and_applies_deltas():
    head = HEADS.build(dict(_cascade_cfg().roi_head.bbox_head[0]))
    rois = torch.tensor([[0, 10., 10., 50., 50.], [0, 20., 20., 60., 80.],
                         [0, 0., 0., 30., 30.], [1, 5., 5., 25., 45.]])
    deltas = torch.tensor([[0.5, 0., 0., 0.]] * 4)          # x shift of 0.5 * 0.1 * width
    pos_is_gts = [torch.tensor([1, 0], dtype=torch.uint8), torch.tensor([], dtype=torch.uint8)]
    metas = [dict(img_shape=(100, 100, 3))] * 2
    refined = head.refine_bboxes(rois, torch.zeros(4, dtype=torch.long), deltas, pos_is_gts,
                                 metas)
    assert [len(r) for r in refined] == [2, 1]
    torch.testing.assert_close(refined[0], torch.tensor([[22., 20., 62., 80.], [1.5, 0., 31.5, 30.]]))
    torch.testing.assert_close(refined[1], torch.tensor([[6., 5., 26., 45.]]))


def test_cascade_losses_are_weighted_per_stage():
    torch.manual_seed(0)
    model = DETECTORS.build(_cascade_cfg())
    img = torch.randint(0, 255, (1, 3, 128, 160), dtype=torch.uint8)
    metas = [dict(img_shape=(128, 160, 3), pad_shape=(128, 160, 3),
                  scale_factor=np.ones(4, np.float32))]
    gts = dict(gt_bboxes=[torch.tensor([[20., 20., 80., 90.]])], gt_labels=[torch.tensor([1])])
    model.eval()   # fixed batch-norm statistics: the two passes see the same features
    torch.manual_seed(1)
    weighted = model.forward_train(img, metas, **gts)
    model.roi_head.stage_loss_weights = [1, 1, 1]
    torch.manual_seed(1)
    plain = model.forward_train(img, metas, **gts)
    assert {f's{i}.{k}' for i in range(3) for k in ('loss_cls', 'loss_bbox', 'acc')} | \
        {'loss_rpn_cls', 'loss_rpn_bbox'} == set(weighted)
    for i, w in enumerate([1, 0.5, 0.25]):
        for k in ('loss_cls', 'loss_bbox'):
            torch.testing.assert_close(weighted[f's{i}.{k}'], plain[f's{i}.{k}'] * w)
        assert weighted[f's{i}.acc'] == plain[f's{i}.acc']   # accuracies are not weighted
