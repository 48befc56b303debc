"""Converted torchvision detectors give torchvision's detections and losses at odd image sizes.

``configs/retinanet/retinanet_r50_fpn_tv.py`` and ``configs/faster_rcnn/faster_rcnn_r50_fpn_tv.py``
with a seeded random torchvision model (converted by ``detforge convert``'s key mapping) are
compared with torchvision at the sizes where torchvision's anchor steps are not the
configured strides (``stride_rule='batch_shape'``: padded size // feature size):

- 480x640, a full BCCD image (P6 has 8 rows: 480 // 8 = 60, not 64);
- 800x1066, what torchvision's own resize (min_size 800, max_size 1333) makes of it (padded to
  800x1088: 61 px steps on P6);
- a batch of two images of different sizes (416x554 and 300x400, padded to 416x576).

Both models are fed the same pixels: the image normalised, then resized by torchvision's own
``GeneralizedRCNNTransform.resize`` (bilinear interpolation of the float tensor) where the size
needs it; torchvision's resize is then switched off, so that both see identical tensors
(detforge's ``Resize`` interpolates the uint8 image with OpenCV: other pixels).

detforge's heads get torchvision's FPN features (torchvision's FPN on a cheap stand-in of the
ResNet body), which keeps the test fast and compares what depends on the size: anchors,
decoding, clipping, NMS, RoI pooling, targets and loss normalisers. The converted ResNet-50 and
FPN are compared end to end in test_models_retinanet_parity.py (128x256) and
test_models_two_stage_parity.py (240x320); they are convolutions, the same at any size.

Losses are compared at batch 2 on ground truths that make MMDetection's and torchvision's
rules differ (a duplicated box with another label, a small box inside a large one, and 20
objects in one image against 3 in the other), with the ``_tv`` options; the same losses with
MMDetection's rules are checked to differ, so that the inputs exercise the options.
"""
import contextlib
import copy
import math
from collections import OrderedDict
import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from detforge.config import Config
from detforge.converters.torchvision_fasterrcnn import convert_state_dict as convert_fasterrcnn
from detforge.converters.torchvision_retinanet import convert_state_dict as convert_retinanet
from detforge.models.builder import build_detector
from detforge.models.task_modules import AnchorGenerator, MaxIoUAssigner, padded_batch_shape
from detforge.registry import HEADS, BuildError

torchvision_detection = pytest.importorskip('torchvision.models.detection')
from torchvision.models.detection.image_list import ImageList  # noqa: E402
from torchvision.models.detection.transform import GeneralizedRCNNTransform  # noqa: E402

MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
BCCD_CLASSES = ('RBC', 'WBC', 'Platelets')
BOX_ATOL, SCORE_ATOL = 1e-2, 1e-4          # the tolerances (px, score)
LOSS_RTOL = 1e-4
MEASURED = {}                               # max differences, printed at the end (pytest -s)


# ---------------------------------------------------------------------------- inputs
def bccd(voc_root, name):
    """A BCCD image as a normalised RGB float tensor (3, 480, 640), its boxes and labels."""
    img = cv2.imread(str(voc_root / 'JPEGImages' / f'{name}.jpg'))
    rgb = torch.from_numpy(img[:, :, ::-1].copy()).permute(2, 0, 1).float() / 255
    boxes, labels = [], []
    for obj in ET.parse(voc_root / 'Annotations' / f'{name}.xml').findall('object'):
        bb = obj.find('bndbox')
        boxes.append([float(bb.find(k).text) for k in ('xmin', 'ymin', 'xmax', 'ymax')])
        labels.append(BCCD_CLASSES.index(obj.find('name').text.strip()))
    return (rgb - MEAN) / STD, torch.tensor(boxes), torch.tensor(labels)


def tv_resize(x, boxes, min_size, max_size=1333):
    """torchvision's own resize of a normalised image (and its boxes)."""
    t = GeneralizedRCNNTransform(min_size, max_size, [0., 0., 0.], [1., 1., 1.]).eval()
    out, target = t.resize(x, dict(boxes=boxes.clone()))
    return out, target['boxes']


def batch_and_metas(images):
    """Zero-padded batch to a multiple of 32 (as detforge's collate and torchvision's
    batch_images) and detforge's metas; every image's pad_shape is the batch's, as collate sets."""
    hp = math.ceil(max(x.shape[1] for x in images) / 32) * 32
    wp = math.ceil(max(x.shape[2] for x in images) / 32) * 32
    batch = images[0].new_zeros(len(images), 3, hp, wp)
    metas = []
    for i, x in enumerate(images):
        h, w = x.shape[1:]
        batch[i, :, :h, :w] = x
        metas.append(dict(img_shape=(h, w, 3), ori_shape=(h, w, 3), pad_shape=(hp, wp, 3),
                          batch_input_shape=(hp, wp), scale_factor=np.ones(4, np.float32),
                          flip=False))
    return batch, metas


@pytest.fixture(scope='module')
def inputs(bccd_voc_root):
    x0, b0, l0 = bccd(bccd_voc_root, 'BloodImage_00000')
    x1, b1, l1 = bccd(bccd_voc_root, 'BloodImage_00001')
    big, _ = tv_resize(x0, b0, 800)
    a, a_boxes = tv_resize(x0, b0, 416)
    b, b_boxes = tv_resize(x1, b1, 300)
    assert tuple(big.shape[1:]) == (800, 1066) and tuple(a.shape[1:]) == (416, 554)
    assert tuple(b.shape[1:]) == (300, 400)
    # ground truths where MMDetection's and torchvision's rules differ: in the second image,
    # boxes each followed by a copy shifted by 2 px and a copy cut to 3/4 of its width, with
    # other labels (a gt's best anchor is also the best, or a better match, of its copy), and 3
    # objects against the first image's 20 (per-image positives counts far apart)
    base = torch.tensor([[20., 20., 120., 90.], [150., 30., 230., 150.], [260., 40., 380., 120.],
                         [30., 160., 90., 280.], [120., 180., 250., 290.], [290., 170., 330., 250.]])
    shifted = base + 2
    cut = base.clone()
    cut[:, 2] = base[:, 0] + 0.75 * (base[:, 2] - base[:, 0])
    b_boxes = torch.stack([base, shifted, cut], 1).reshape(-1, 4)
    b_labels = torch.tensor([0, 2, 1]).repeat(len(base))
    return dict(full=[x0], tv800=[big], batch2=[a, b],
                train=([a, b], [a_boxes, b_boxes], [l0, b_labels]))


class StandInBody(nn.Module):
    """A cheap stand-in for torchvision's ResNet-50 body, with its outputs (C2..C5 or C3..C5 at
    strides 4..32 with its channel counts): an average pooling of the image through a seeded
    1x1 conv, plus a fixed seeded pattern (so that no two positions, the padding included, give
    exactly equal scores: the order of tied boxes in NMS is arbitrary in both libraries).

    Used where the comparison is about what depends on the image size (anchors, decoding,
    clipping, NMS, RoI pooling, targets, normalisers), which the ResNet does not: the converted
    ResNet is compared end to end at 128x256 / 240x320 in the other parity tests."""

    def __init__(self, body):
        super().__init__()
        # torchvision's IntermediateLayerGetter: {'layer2': '0', ...}; layerN has stride
        # 2 ** (N + 1) and 64 * 2 ** (N + 1) channels (256 on layer1)
        self.levels = [(name, int(layer[-1]) + 1) for layer, name in body.return_layers.items()]
        generator = torch.Generator().manual_seed(1)
        self.convs = nn.ModuleList(nn.Conv2d(3, 64 * 2 ** n, 1) for _, n in self.levels)
        with torch.no_grad():
            for conv in self.convs:
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator))
                conv.bias.zero_()

    def forward(self, x):
        out = OrderedDict()
        for (name, n), conv in zip(self.levels, self.convs):
            y = conv(F.avg_pool2d(x, 2 ** n, ceil_mode=True))
            pattern = torch.randn(y.shape[1:], generator=torch.Generator().manual_seed(n))
            out[name] = 3 * (y + pattern).relu()  # about the spread of ResNet features
        return out


@contextlib.contextmanager
def stand_in_body(tv):
    body = tv.backbone.body
    tv.backbone.body = StandInBody(body)
    try:
        yield
    finally:
        tv.backbone.body = body


def no_resize(tv):
    """torchvision's transform keeps the given pixels (they are resized already)."""
    tv.transform.resize = lambda image, target=None: (image, target)
    return tv


def capture(module):
    """A dict that receives ``module``'s last output."""
    store = {}
    module.register_forward_hook(lambda m, i, o: store.__setitem__('out', o))
    return store


def assert_same_anchors(tv, images, feats, ours_anchors):
    """torchvision's anchors for this batch (its AnchorGenerator on the padded batch) equal
    ours: the detections alone may not show it (the shifted anchors of the coarse levels can
    all lose to others in top-k or NMS)."""
    batch, _ = batch_and_metas(images)
    image_list = ImageList(batch, [tuple(x.shape[1:]) for x in images])
    tv_anchors = tv.anchor_generator(image_list, feats)[0]
    assert ours_anchors.shape == tv_anchors.shape
    assert torch.equal(ours_anchors, tv_anchors)


def compare(name, ours_boxes, ours_scores, ours_labels, ref):
    """Same detections (sorted by score): count, labels, boxes within 1e-2 px, scores 1e-4."""
    assert len(ours_scores) == len(ref['scores']) > 20, f'{name}: {len(ours_scores)} vs {len(ref["scores"])}'
    order = torch.argsort(-ours_scores, stable=True)
    ref_order = torch.argsort(-ref['scores'], stable=True)
    box_diff = (ours_boxes[order] - ref['boxes'][ref_order]).abs().max().item()
    score_diff = (ours_scores[order] - ref['scores'][ref_order]).abs().max().item()
    MEASURED[name] = (box_diff, score_diff)
    print(f'{name}: {len(ours_scores)} detections, max box diff {box_diff:.2e} px, '
          f'max score diff {score_diff:.2e}')
    assert torch.equal(ours_labels[order], ref['labels'][ref_order]), name
    assert box_diff <= BOX_ATOL and score_diff <= SCORE_ATOL, name


# ---------------------------------------------------------------------------- RetinaNet
@pytest.fixture(scope='module')
def retinanet(repo_root):
    torch.manual_seed(0)
    tv = torchvision_detection.retinanet_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=91, image_mean=[0., 0., 0.],
        image_std=[1., 1., 1.])
    # a fresh head predicts 0.01 everywhere (below the 0.05 threshold): give it weights whose
    # scores depend on the image, so that there is something to compare
    with torch.no_grad():
        for m in tv.head.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.02)
        nn.init.normal_(tv.head.classification_head.cls_logits.weight, std=0.002)
        nn.init.normal_(tv.head.regression_head.bbox_reg.weight, std=0.002)
        tv.head.classification_head.cls_logits.bias.fill_(-3.0)
    cfg = Config.fromfile(str(repo_root / 'configs/retinanet/retinanet_r50_fpn_tv.py'))
    cfg.model.backbone.norm_cfg.eps = 1e-5  # torchvision's BatchNorm2d when built without weights
    ours = build_detector(cfg.model)
    ours.load_state_dict(convert_retinanet(tv.state_dict()), strict=True)
    return no_resize(tv).eval(), ours.eval(), cfg


@pytest.mark.parametrize('size', ['full', 'tv800', 'batch2'])
@torch.no_grad()
def test_retinanet_detections_equal_torchvision(retinanet, inputs, size):
    tv, ours, _ = retinanet
    images = inputs[size]
    feats = capture(tv.backbone)
    with stand_in_body(tv):
        ref = tv(images)
    _, metas = batch_and_metas(images)
    x = list(feats['out'].values())
    featmap_sizes = [f.shape[-2:] for f in x]
    assert_same_anchors(tv, images, x, ours.bbox_head.get_anchors(featmap_sizes, metas)[0])
    dets = ours.bbox_head.simple_test(x, metas)
    for i, ((det, labels), r) in enumerate(zip(dets, ref)):
        compare(f'retinanet {size} image {i}', det[:, :4], det[:, 4], labels.long(), r)


def _bn_eval(model):
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


@pytest.fixture(scope='module')
def retinanet_train_ref(retinanet, inputs):
    """torchvision's training losses at batch 2 and the FPN features they came from."""
    tv, _, _ = retinanet
    images, boxes, labels = inputs['train']
    tv.train()
    _bn_eval(tv)
    feats = capture(tv.backbone)
    try:
        with stand_in_body(tv), torch.no_grad():
            ref = tv(images, [dict(boxes=b, labels=l) for b, l in zip(boxes, labels)])
    finally:
        tv.eval()
    return ref, list(feats['out'].values())


def _retinanet_losses(retinanet, retinanet_train_ref, inputs, loss_normalization=None,
                      low_quality_gt=None):
    """detforge's training losses at batch 2 on torchvision's features, its head as in the _tv
    config, or with the given normaliser / low-quality tie-break instead."""
    tv, _, cfg = retinanet
    ref, feats = retinanet_train_ref
    images, boxes, labels = inputs['train']
    head_cfg = copy.deepcopy(cfg.model.bbox_head)
    train_cfg = copy.deepcopy(cfg.model.train_cfg)
    if loss_normalization is not None:
        head_cfg.loss_normalization = loss_normalization
    if low_quality_gt is not None:
        train_cfg.assigner.low_quality_gt = low_quality_gt
    head_cfg.update(train_cfg=train_cfg, test_cfg=cfg.model.test_cfg)
    head = HEADS.build(head_cfg)
    head.load_state_dict(tv_head_state(tv), strict=True)
    _, metas = batch_and_metas(images)
    with torch.no_grad():
        losses = head.forward_train(feats, metas, boxes, labels)
    return losses, ref


def tv_head_state(tv):
    state = convert_retinanet(tv.state_dict())
    return {k[len('bbox_head.'):]: v for k, v in state.items() if k.startswith('bbox_head.')}


def test_retinanet_losses_at_batch2_equal_torchvision_with_the_tv_options(retinanet, retinanet_train_ref,
                                                                          inputs):
    losses, ref = _retinanet_losses(retinanet, retinanet_train_ref, inputs)
    MEASURED['retinanet losses batch2'] = (
        (losses['loss_cls'] - ref['classification']).abs().item() / ref['classification'].item(),
        (losses['loss_bbox'] - ref['bbox_regression']).abs().item() / ref['bbox_regression'].item())
    torch.testing.assert_close(losses['loss_cls'], ref['classification'], rtol=LOSS_RTOL, atol=0)
    torch.testing.assert_close(losses['loss_bbox'], ref['bbox_regression'], rtol=LOSS_RTOL, atol=0)


@pytest.mark.parametrize('option', [dict(loss_normalization='batch'), dict(low_quality_gt='last')],
                         ids=['normaliser', 'tie-break'])
def test_retinanet_losses_at_batch2_differ_with_mmdetection_rules(retinanet, retinanet_train_ref, inputs,
                                                                  option):
    """The inputs exercise each option: MMDetection's rule gives other losses."""
    losses, ref = _retinanet_losses(retinanet, retinanet_train_ref, inputs, **option)
    rel = max(abs(losses[k].item() / ref[r].item() - 1)
              for k, r in (('loss_cls', 'classification'), ('loss_bbox', 'bbox_regression')))
    # beyond the tolerance of the parity test above (whose measured difference is ~1e-7)
    assert rel > LOSS_RTOL, f'{option}: losses equal torchvision\'s (rel. diff {rel:.1e})'


def test_batch_shape_stride_rule_steps_as_torchvision():
    """480x640 batch, P2..P6 maps of a stride-4..64 FPN: torchvision steps P6 by 480 // 8 = 60
    rows and 640 // 10 = 64 columns; the fixed rule by 64 in both."""
    kwargs = dict(strides=[4, 8, 16, 32, 64], ratios=[1.0], scales=[8], round_base_anchors=True)
    tv_rule = AnchorGenerator(stride_rule='batch_shape', **kwargs)
    fixed = AnchorGenerator(**kwargs)
    sizes = [(120, 160), (60, 80), (30, 40), (15, 20), (8, 10)]
    assert tv_rule.level_strides(sizes, (480, 640)) == [(4, 4), (8, 8), (16, 16), (32, 32), (64, 60)]
    p6 = tv_rule.grid_priors(sizes, batch_input_shape=(480, 640))[-1]
    # the last row of P6 anchors is centred at y = 7 * 60 = 420 (fixed: 448)
    assert p6[-1].tolist() == [9 * 64 - 256, 420 - 256, 9 * 64 + 256, 420 + 256]
    assert fixed.grid_priors(sizes)[-1][-1, 1].item() == 448 - 256
    with pytest.raises(ValueError, match='batch_input_shape'):
        tv_rule.grid_priors(sizes)
    with pytest.raises(ValueError, match='stride_rule'):
        AnchorGenerator(stride_rule='torchvision', **kwargs)


def test_per_image_loss_normalization_needs_an_unsampled_loss():
    with pytest.raises(BuildError, match='per_image'):
        HEADS.build(dict(type='AnchorHead', num_classes=2, in_channels=8, loss_normalization='per_image'))
    with pytest.raises(BuildError, match='loss_normalization'):
        HEADS.build(dict(type='RetinaHead', num_classes=2, in_channels=8, loss_normalization='image'))


def test_low_quality_gt_rules_on_a_tie():
    """Candidate 0 is the best of gt 0 (IoU 0.6) and of gt 1 (IoU 0.3); candidate 1 is the best
    of gt 2 (0.2) but overlaps gt 1 more (0.25)."""
    overlaps = torch.tensor([[0.6, 0.1, 0.0],
                             [0.3, 0.25, 0.0],
                             [0.0, 0.2, 0.1]])
    last = MaxIoUAssigner(0.5, 0.4, low_quality_gt='last')
    best = MaxIoUAssigner(0.5, 0.4, low_quality_gt='best')
    assert last.assign_wrt_overlaps(overlaps).gt_inds.tolist() == [2, 3, 0]
    assert best.assign_wrt_overlaps(overlaps).gt_inds.tolist() == [1, 2, 0]
    # the batched path (two images, the second with one gt fewer) says the same
    priors = torch.tensor([[0., 0., 10., 10.], [20., 0., 30., 10.], [40., 0., 50., 10.]])
    gts = torch.tensor([[0., 0., 10., 10.], [0., 0., 10., 12.], [0., 0., 30., 10.]])
    for assigner in (last, best):
        single = assigner.assign(priors, gts).gt_inds
        batched, _ = assigner.assign_batch(priors, torch.ones(2, 3, dtype=torch.bool), [gts, gts[:2]])
        assert torch.equal(batched[0], single)
        assert torch.equal(batched[1], assigner.assign(priors, gts[:2]).gt_inds)
    with pytest.raises(ValueError, match='low_quality_gt'):
        MaxIoUAssigner(0.5, 0.4, low_quality_gt='first')


# ---------------------------------------------------------------------------- Faster R-CNN
@pytest.fixture(scope='module')
def faster_rcnn(repo_root):
    torch.manual_seed(0)
    tv = torchvision_detection.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, image_mean=[0., 0., 0.], image_std=[1., 1., 1.],
        box_score_thresh=0.0)
    cfg = Config.fromfile(str(repo_root / 'configs/faster_rcnn/faster_rcnn_r50_fpn_tv.py'))
    cfg.model.test_cfg.rcnn.score_thr = 0.0  # random weights score ~1/91: keep every detection
    ours = build_detector(cfg.model)
    ours.load_state_dict(convert_fasterrcnn(tv.state_dict()), strict=True)
    return no_resize(tv).eval(), ours.eval()


@pytest.mark.parametrize('size', ['full', 'tv800', 'batch2'])
@torch.no_grad()
def test_faster_rcnn_proposals_and_detections_equal_torchvision(faster_rcnn, inputs, size):
    tv, ours = faster_rcnn
    images = inputs[size]
    feats, rpn = capture(tv.backbone), capture(tv.rpn)
    with stand_in_body(tv):
        ref = tv(images)
    _, metas = batch_and_metas(images)
    x = list(feats['out'].values())
    assert_same_anchors(tv.rpn, images, x, torch.cat(ours.rpn_head.prior_generator.grid_priors(
        [f.shape[-2:] for f in x], batch_input_shape=padded_batch_shape(metas))))
    props = ours.rpn_head.simple_test_rpn(x, metas)
    for i, (p, tv_p) in enumerate(zip(props, rpn['out'][0])):
        # the same set (proposals of equal scores may come in either order)
        assert p.shape == (len(tv_p), 5)
        dist = (p[:, None, :4] - tv_p[None]).abs().amax(-1)
        diff = max(dist.min(1).values.max().item(), dist.min(0).values.max().item())
        MEASURED[f'faster_rcnn {size} image {i} proposals'] = (diff, float('nan'))
        assert diff <= BOX_ATOL, f'proposals of image {i}: {diff}'
    dets, labels = ours.roi_head.simple_test_bboxes(x, metas, props, ours.roi_head.test_cfg)
    for i, (d, l, r) in enumerate(zip(dets, labels, ref)):
        compare(f'faster_rcnn {size} image {i}', d[:, :4], d[:, 4], l + 1, r)


def test_faster_rcnn_losses_at_batch2_equal_torchvision(faster_rcnn, inputs):
    tv, ours = faster_rcnn
    images, boxes, labels = inputs['train']
    # sampling everything makes the losses independent of the random draw
    tv.rpn.fg_bg_sampler.batch_size_per_image = 10 ** 7
    tv.roi_heads.fg_bg_sampler.batch_size_per_image = 10 ** 7
    ours.rpn_head.sampler.num = 10 ** 7
    ours.roi_head.bbox_sampler.num = 10 ** 7
    tv.train(), ours.train()
    _bn_eval(tv), _bn_eval(ours)
    feats = capture(tv.backbone)
    # detforge's whole training path, on torchvision's FPN features
    ours.extract_feat = lambda img: list(feats['out'].values())
    try:
        with stand_in_body(tv), torch.no_grad():
            ref = tv(images, [dict(boxes=b, labels=l + 1) for b, l in zip(boxes, labels)])
            batch, metas = batch_and_metas(images)
            losses = ours(batch, metas, gt_bboxes=boxes, gt_labels=labels)
    finally:
        tv.eval(), ours.eval()
        del ours.extract_feat
    pairs = dict(loss_objectness='loss_rpn_cls', loss_rpn_box_reg='loss_rpn_bbox',
                 loss_classifier='loss_cls', loss_box_reg='loss_bbox')
    for tv_name, name in pairs.items():
        MEASURED[f'faster_rcnn losses batch2 {name} (rel)'] = (
            abs(losses[name].item() / ref[tv_name].item() - 1), float('nan'))
        torch.testing.assert_close(losses[name], ref[tv_name], rtol=LOSS_RTOL, atol=0,
                                   msg=f'{name} vs {tv_name}')


def teardown_module(module):
    for name, (box, score) in MEASURED.items():
        print(f'MEASURED {name}: {box:.2e} {score:.2e}')
