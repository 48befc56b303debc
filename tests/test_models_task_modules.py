"""Anchors, assigner, samplers and box coder, against hand-computed values."""
import math

import pytest
import torch

from detforge.models.task_modules.anchor_generator import AnchorGenerator
from detforge.models.task_modules.assign_result import gather_assigned
from detforge.models.task_modules.base_assigner import BaseAssigner
from detforge.models.task_modules.delta_xywh_bbox_coder import DeltaXYWHBBoxCoder
from detforge.models.task_modules.max_iou_assigner import MaxIoUAssigner
from detforge.models.task_modules.samplers import PseudoSampler, RandomSampler
from detforge.registry import BBOX_ASSIGNERS, PRIOR_GENERATORS


# ---------------------------------------------------------------------------- anchors
def test_single_square_anchor_tiles_the_grid_position_major():
    gen = AnchorGenerator(strides=[16], ratios=[1.0], scales=[1.0])
    (anchors,) = gen.grid_priors([(2, 3)])
    assert anchors.shape == (6, 4)
    torch.testing.assert_close(anchors[:4], torch.tensor([
        [-8., -8., 8., 8.], [8., -8., 24., 8.], [24., -8., 40., 8.], [-8., 8., 8., 24.]]))


def test_ratio_is_height_over_width():
    gen = AnchorGenerator(strides=[16], ratios=[0.5], scales=[1.0])
    w, h = 16 / math.sqrt(0.5), 16 * math.sqrt(0.5)
    torch.testing.assert_close(gen.base_anchors[0], torch.tensor([[-w / 2, -h / 2, w / 2, h / 2]]))


def test_retinanet_anchors_count_and_octave_scales():
    gen = PRIOR_GENERATORS.build(dict(type='AnchorGenerator', octave_base_scale=4, scales_per_octave=3,
                                      ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32, 64, 128]))
    assert gen.num_base_anchors == [9] * 5
    sizes = [(16, 32), (8, 16), (4, 8), (2, 4), (1, 2)]  # a 128x256 input
    anchors = gen.grid_priors(sizes)
    assert sum(a.shape[0] for a in anchors) == 9 * (512 + 128 + 32 + 8 + 2)
    # ratio 1 anchors of level 0: sides 32, 32 * 2^(1/3), 32 * 2^(2/3), centred on 0
    square = gen.base_anchors[0][3:6]
    torch.testing.assert_close(square[:, 2] - square[:, 0],
                               torch.tensor([32., 32 * 2 ** (1 / 3), 32 * 2 ** (2 / 3)]))
    torch.testing.assert_close(square[:, :2], -square[:, 2:])


def test_grid_priors_are_cached_per_size():
    gen = AnchorGenerator(strides=[8], ratios=[1.0], scales=[4.0])
    assert gen.grid_priors([(5, 7)])[0] is gen.grid_priors([(5, 7)])[0]
    assert gen.grid_priors([(5, 8)])[0].shape[0] == 40


def test_torchvision_style_sizes_are_rounded():
    gen = AnchorGenerator(strides=[8], ratios=[0.5, 1.0], sizes=[[32, 40]], round_base_anchors=True)
    # ratio 0.5, size 32: w = 45.25, h = 22.63 -> half sides 22.63, 11.31 rounded to 23, 11
    torch.testing.assert_close(gen.base_anchors[0][0], torch.tensor([-23., -11., 23., 11.]))
    torch.testing.assert_close(gen.base_anchors[0][3], torch.tensor([-20., -20., 20., 20.]))


def test_valid_flags_mark_cells_beyond_the_padded_image():
    gen = AnchorGenerator(strides=[8], ratios=[1.0, 2.0], scales=[1.0])
    (flags,) = gen.valid_flags([(4, 4)], pad_shape=(20, 28, 3))
    # ceil(20 / 8) = 3 valid rows, ceil(28 / 8) = 4 valid columns, 2 anchors per cell
    assert flags.shape == (32,)
    assert flags[:24].all() and not flags[24:].any()


def test_center_offset_moves_the_base_anchors():
    gen = AnchorGenerator(strides=[16], ratios=[1.0], scales=[1.0], center_offset=0.5)
    torch.testing.assert_close(gen.base_anchors[0], torch.tensor([[0., 0., 16., 16.]]))


def test_anchor_generator_needs_a_scale_specification():
    with pytest.raises(ValueError, match='scales'):
        AnchorGenerator(strides=[8], ratios=[1.0])


# ---------------------------------------------------------------------------- assigner
GT = torch.tensor([[0., 0., 10., 10.]])


def _assigner(**kw):
    args = dict(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.)
    args.update(kw)
    return BBOX_ASSIGNERS.build(dict(type='MaxIoUAssigner', **args))


def test_assigner_positive_ignored_and_negative_by_iou():
    boxes = torch.tensor([[0., 0., 10., 10.],   # IoU 1.0 -> positive
                          [0., 0., 10., 4.5],   # IoU 0.45 -> between thresholds: ignored
                          [0., 0., 10., 3.0],   # IoU 0.3 -> negative
                          [50., 50., 60., 60.]])  # IoU 0 -> negative
    res = _assigner().assign(boxes, GT, gt_labels=torch.tensor([2]))
    assert res.gt_inds.tolist() == [1, -1, 0, 0]
    assert res.labels.tolist() == [2, -1, -1, -1]
    torch.testing.assert_close(res.max_overlaps, torch.tensor([1.0, 0.45, 0.3, 0.0]))


def test_assigner_without_gt_makes_everything_background():
    boxes = torch.rand(5, 4) * 10
    boxes[:, 2:] += boxes[:, :2]
    res = _assigner().assign(boxes, torch.zeros((0, 4)), gt_labels=torch.zeros(0, dtype=torch.long))
    assert res.num_gts == 0
    assert res.gt_inds.tolist() == [0] * 5
    assert res.labels.tolist() == [-1] * 5


def test_assigner_without_candidates_returns_empty():
    res = _assigner().assign(torch.zeros((0, 4)), GT)
    assert res.gt_inds.numel() == 0 and res.max_overlaps.numel() == 0


def test_candidates_inside_ignore_regions_are_all_ignored():
    boxes = torch.tensor([[0., 0., 10., 10.], [2., 2., 8., 8.]])
    ignore = torch.tensor([[0., 0., 12., 12.]])
    res = _assigner(ignore_iof_thr=0.5).assign(boxes, GT, gt_bboxes_ignore=ignore)
    assert res.gt_inds.tolist() == [-1, -1]


def test_low_quality_match_gives_every_gt_its_best_candidate():
    boxes = torch.tensor([[0., 0., 10., 3.], [0., 0., 10., 1.]])  # IoU 0.3 and 0.1
    assert _assigner().assign(boxes, GT).gt_inds.tolist() == [1, 0]
    assert _assigner(match_low_quality=False).assign(boxes, GT).gt_inds.tolist() == [0, 0]
    assert _assigner(min_pos_iou=0.35).assign(boxes, GT).gt_inds.tolist() == [0, 0]


def test_tied_best_candidates_all_match_with_gt_max_assign_all():
    boxes = torch.tensor([[0., 0., 10., 3.], [0., 7., 10., 10.], [50., 50., 60., 60.]])  # 0.3, 0.3, 0
    assert _assigner().assign(boxes, GT).gt_inds.tolist() == [1, 1, 0]
    assert _assigner(gt_max_assign_all=False).assign(boxes, GT).gt_inds.tolist() == [1, 0, 0]


def test_candidate_best_for_two_gts_goes_to_the_later_one():
    gts = torch.tensor([[0., 0., 10., 10.], [0., 0., 10., 10.5]])
    boxes = torch.tensor([[0., 0., 10., 3.]])  # the only candidate: best for both, IoU < 0.5
    assert _assigner().assign(boxes, gts).gt_inds.tolist() == [2]


def test_negative_range_leaves_zero_iou_candidates_ignored():
    boxes = torch.tensor([[0., 0., 10., 2.], [50., 50., 60., 60.], [0., 0., 10., 10.]])
    res = _assigner(neg_iou_thr=(0.1, 0.4)).assign(boxes, GT)
    assert res.gt_inds.tolist() == [0, -1, 1]


def test_add_gt_puts_the_gts_in_front():
    res = _assigner(match_low_quality=False).assign(torch.tensor([[0., 0., 10., 1.]]), GT,
                                                    gt_labels=torch.tensor([4]))
    res.add_gt_(torch.tensor([4]))
    assert res.gt_inds.tolist() == [1, 0]
    assert res.labels.tolist() == [4, -1]
    torch.testing.assert_close(res.max_overlaps, torch.tensor([1.0, 0.1]))


# ---------------------------------------------------------------------------- samplers
def _random_boxes(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 100
    wh = torch.rand(n, 2, generator=g) * 50 + 1
    return torch.cat([xy, xy + wh], dim=1)


def test_pseudo_sampler_takes_every_positive_and_negative():
    boxes = torch.tensor([[0., 0., 10., 10.], [0., 0., 10., 4.5], [50., 50., 60., 60.]])
    assign = _assigner().assign(boxes, GT, gt_labels=torch.tensor([1]))
    res = PseudoSampler().sample(assign, boxes, GT)
    assert res.pos_inds.tolist() == [0] and res.neg_inds.tolist() == [2]
    torch.testing.assert_close(res.pos_gt_bboxes, GT)
    assert res.pos_assigned_gt_inds.tolist() == [0]
    assert res.pos_gt_labels.tolist() == [1]


def test_random_sampler_bounds_positives_and_adds_gts_as_proposals():
    torch.manual_seed(0)
    gts = _random_boxes(3, seed=1)
    boxes = torch.cat([gts + 1.0, _random_boxes(200)])  # three near-copies of the gts: positives
    labels = torch.tensor([0, 1, 2])
    assign = _assigner(pos_iou_thr=0.7, neg_iou_thr=0.3).assign(boxes, gts, gt_labels=labels)
    sampler = RandomSampler(num=16, pos_fraction=0.25, neg_pos_ub=-1, add_gt_as_proposals=True)
    res = sampler.sample(assign, boxes, gts, labels)
    assert len(res.pos_inds) == 4  # 3 gts + 3 near-copies available, at most 16 * 0.25
    assert len(res.pos_inds) + len(res.neg_inds) == 16
    assert res.bboxes.shape == (16, 4)
    assert int(res.pos_is_gt.sum()) >= 1
    # every positive is matched to a gt it overlaps well
    from detforge.structures import bbox_overlaps
    assert (bbox_overlaps(res.pos_bboxes, res.pos_gt_bboxes, is_aligned=True) > 0.7).all()


def test_random_sampler_neg_pos_upper_bound():
    gts = torch.tensor([[0., 0., 10., 10.]])
    boxes = torch.cat([gts, _random_boxes(100) + 200])
    assign = _assigner().assign(boxes, gts, gt_labels=torch.tensor([0]))
    res = RandomSampler(num=64, pos_fraction=0.5, neg_pos_ub=3, add_gt_as_proposals=False).sample(
        assign, boxes, gts, torch.tensor([0]))
    assert len(res.pos_inds) == 1 and len(res.neg_inds) == 3


# ---------------------------------------------------------------------------- coder
def test_coder_encodes_known_deltas():
    coder = DeltaXYWHBBoxCoder(target_stds=(0.1, 0.1, 0.2, 0.2))
    deltas = coder.encode(torch.tensor([[0., 0., 10., 10.]]), torch.tensor([[5., 0., 15., 20.]]))
    torch.testing.assert_close(deltas, torch.tensor([[0.5 / 0.1, 0.5 / 0.1, 0.0, math.log(2) / 0.2]]))


def test_coder_round_trip():
    coder = DeltaXYWHBBoxCoder(target_means=(0.1, -0.1, 0.0, 0.05), target_stds=(0.1, 0.1, 0.2, 0.2))
    anchors, gts = _random_boxes(50, seed=3), _random_boxes(50, seed=4)
    decoded = coder.decode(anchors, coder.encode(anchors, gts))
    torch.testing.assert_close(decoded, gts, rtol=0, atol=1e-3)


def test_coder_clips_to_the_image_and_limits_growth():
    coder = DeltaXYWHBBoxCoder()
    box = coder.decode(torch.tensor([[0., 0., 10., 10.]]), torch.tensor([[0., 0., 10., 10.]]),
                       max_shape=(100, 80))
    # exp(10) is clamped to 1000/16 = 62.5 times the size: 625 px, then clipped to the image
    torch.testing.assert_close(box, torch.tensor([[0., 0., 80., 100.]]))
    unclipped = DeltaXYWHBBoxCoder(clip_border=False).decode(
        torch.tensor([[0., 0., 10., 10.]]), torch.tensor([[0., 0., 10., 10.]]), max_shape=(100, 80))
    torch.testing.assert_close(unclipped, torch.tensor([[-307.5, -307.5, 317.5, 317.5]]))


def _mmdet_centre_size(boxes):
    """MMDetection 2.28's ``bbox2delta``/``delta2bbox`` spelling: ``(x1 + x2) * 0.5``."""
    return ((boxes[:, 0] + boxes[:, 2]) * 0.5, (boxes[:, 1] + boxes[:, 3]) * 0.5,
            boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])


def test_coder_rounds_as_mmdetection_bit_for_bit():
    """Decoded proposals equal MMDetection's formula exactly in float32 (an ulp apart, equal-
    score proposals swap places and the RoI head sees other boxes), and so do the deltas.
    The boxes are chosen so ``x1 + w / 2`` (torchvision's spelling) rounds differently."""
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(4000, 2, generator=g) * 1000
    boxes = torch.cat([xy, xy + torch.rand(4000, 2, generator=g) * 300 + 1], dim=1)
    deltas = torch.randn(4000, 4, generator=g) * 0.5
    stds = torch.tensor([0.1, 0.1, 0.2, 0.2])
    coder = DeltaXYWHBBoxCoder(target_stds=stds.tolist())
    px, py, pw, ph = _mmdet_centre_size(boxes)
    d = deltas * stds
    gx, gy = px + pw * d[:, 0], py + ph * d[:, 1]
    gw, gh = pw * d[:, 2].exp(), ph * d[:, 3].exp()
    expected = torch.stack([gx - gw * 0.5, gy - gh * 0.5, gx + gw * 0.5, gy + gh * 0.5], -1)
    assert torch.equal(coder.decode(boxes, deltas), expected)
    torchvision_centre = boxes[:, 0] + 0.5 * pw
    assert (torchvision_centre != px).any()  # the inputs do tell the two spellings apart

    targets = _random_boxes(4000, seed=5) * 10
    tx, ty, tw, th = _mmdet_centre_size(targets)
    expected = torch.stack([(tx - px) / pw, (ty - py) / ph, torch.log(tw / pw),
                            torch.log(th / ph)], -1) / stds
    assert torch.equal(coder.encode(boxes, targets), expected)


# ---------------------------------------------------------------------------- batched assignment
def _assign_image_by_image(assigner, priors, valid, gts, ignores):
    """The reference: :meth:`assign` on each image's valid priors, scattered back to ``(B, n)``."""
    gt_inds = torch.full(valid.shape, -1, dtype=torch.long)
    for i, gt in enumerate(gts):
        idx = torch.nonzero(valid[i]).squeeze(-1)
        gt_inds[i, idx] = assigner.assign(priors[idx], gt, ignores[i]).gt_inds
    return gt_inds


@pytest.mark.parametrize('options', [dict(), dict(gt_max_assign_all=False), dict(neg_iou_thr=(0.1, 0.4)),
                                     dict(match_low_quality=False), dict(ignore_iof_thr=0.5),
                                     dict(ignore_iof_thr=0.5, ignore_wrt_candidates=False)])
def test_assign_batch_equals_assign_image_by_image(options):
    priors = torch.cat([AnchorGenerator(strides=[8, 16], ratios=[0.5, 1.0, 2.0], scales=[4]).grid_priors(
        [(8, 8), (4, 4)])[i] for i in range(2)])
    gts = [_random_boxes(5, seed=1) * 0.6, torch.zeros((0, 4)), _random_boxes(2, seed=2) * 0.6,
           torch.tensor([[0., 0., 10., 10.], [0., 0., 10., 10.]])]  # two identical gts: ties
    valid = torch.rand(len(gts), len(priors), generator=torch.Generator().manual_seed(0)) > 0.2
    ignores = [torch.tensor([[30., 30., 60., 60.]]), None, torch.zeros((0, 4)), torch.tensor([[0., 40., 20., 64.]])]
    assigner = _assigner(**options)
    gt_inds, max_overlaps = assigner.assign_batch(priors, valid, gts, ignores)
    expected = _assign_image_by_image(assigner, priors, valid, gts, ignores)
    assert torch.equal(gt_inds, expected)
    assert (gt_inds > 0).any() and (gt_inds == 0).any() and (gt_inds[~valid] == -1).all()
    assert (gt_inds[1][valid[1]] == 0).all() and (max_overlaps[1] == 0).all()  # the image without objects
    # a batch too large for one overlap matrix is assigned image by image, to the same result
    assigner.max_batch_elements = 10
    assert torch.equal(assigner.assign_batch(priors, valid, gts, ignores)[0], expected)


def test_an_assigner_without_its_own_assign_batch_is_run_image_by_image():
    class OnlyAssign(BaseAssigner):  # e.g. a user's assigner ported from MMDetection
        def __init__(self):
            self.inner = _assigner()

        def assign(self, *args):
            return self.inner.assign(*args)

    priors = _random_boxes(60, seed=3)
    gts = [_random_boxes(4, seed=4), torch.zeros((0, 4))]
    valid = torch.ones(2, 60, dtype=torch.bool)
    valid[0, :10] = False
    expected = _assigner().assign_batch(priors, valid, gts)
    got = OnlyAssign().assign_batch(priors, valid, gts)
    assert torch.equal(got[0], expected[0]) and torch.allclose(got[1], expected[1])


def test_gather_assigned_gives_each_candidate_its_gt_value_or_fill():
    gt_inds = torch.tensor([[2, 0, -1, 1], [0, 0, 0, 0]])
    values = [torch.tensor([10, 20]), torch.zeros(0, dtype=torch.long)]
    assert gather_assigned(values, gt_inds, fill=-5).tolist() == [[20, -5, -5, 10], [-5, -5, -5, -5]]
    boxes = gather_assigned([GT, torch.zeros((0, 4))], gt_inds.clamp(max=1))
    assert boxes.shape == (2, 4, 4) and torch.equal(boxes[0, 0], GT[0]) and (boxes[1] == 0).all()


def test_sample_batch_draws_each_image_within_the_random_sampler_budget():
    torch.manual_seed(0)
    gt_inds = torch.randint(-1, 3, (3, 200))
    gt_inds[2] = torch.where(gt_inds[2] > 0, 0, gt_inds[2])  # no positive in image 2
    sampler = RandomSampler(num=32, pos_fraction=0.25, add_gt_as_proposals=False)
    gts = [_random_boxes(2)] * 3
    pos, neg = sampler.sample_batch(gt_inds, torch.zeros(3, 200), _random_boxes(200), gts)
    assert (gt_inds[pos] > 0).all() and (gt_inds[neg] == 0).all()
    assert pos.sum(1).tolist() == [8, 8, 0] and neg.sum(1).tolist() == [24, 24, 32]
    all_pos, all_neg = PseudoSampler().sample_batch(gt_inds, torch.zeros(3, 200), _random_boxes(200), gts)
    assert torch.equal(all_pos, gt_inds > 0) and torch.equal(all_neg, gt_inds == 0)


def test_a_dense_head_runs_an_mmdetection_style_assigner_and_sampler_image_by_image():
    """An assigner and a sampler with only ``assign`` / ``sample`` (not BaseAssigner /
    BaseSampler subclasses, as written for MMDetection 2.x) get the image-by-image batch
    methods when the head is built; the targets equal those of the batched built-ins."""
    from detforge.models.dense_heads import RetinaHead
    from detforge.models.train_test_cfg import DenseTrainConfig

    class OnlyAssign:
        def __init__(self):
            self.inner = _assigner()

        def assign(self, *args):
            return self.inner.assign(*args)

    class OnlySample:
        def sample(self, *args, **kwargs):
            return PseudoSampler().sample(*args, **kwargs)

    def head(assigner, sampler):
        torch.manual_seed(0)
        return RetinaHead(num_classes=2, in_channels=8, feat_channels=8, stacked_convs=1,
                          loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True),
                          train_cfg=DenseTrainConfig(assigner=assigner, sampler=sampler))

    ours, theirs = head(_assigner(), PseudoSampler()), head(OnlyAssign(), OnlySample())
    assert not hasattr(OnlyAssign, 'assign_batch') and callable(theirs.assigner.assign_batch)
    metas = [dict(img_shape=(64, 64, 3), pad_shape=(64, 64, 3), batch_input_shape=(64, 64))] * 2
    anchors, valid = ours.get_anchors([(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)], metas)
    gts, labels = [_random_boxes(3, seed=5) * 0.6, _random_boxes(1, seed=6) * 0.6], [torch.tensor([0, 1, 1]), torch.tensor([0])]
    a = ours.get_targets(anchors, valid, gts, metas, None, labels)
    b = theirs.get_targets(anchors, valid, gts, metas, None, labels)
    assert a.pos.any() and torch.equal(a.labels, b.labels) and torch.equal(a.pos, b.pos)
    assert torch.equal(a.neg, b.neg) and torch.equal(a.bbox_targets, b.bbox_targets)
