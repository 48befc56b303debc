"""torchvision's v2 detectors (``retinanet_resnet50_fpn_v2``, ``fasterrcnn_resnet50_fpn_v2``,
``maskrcnn_resnet50_fpn_v2``),
converted by ``detforge convert``'s key mapping into the ``_tv_v2`` configs, give
torchvision's FPN features, proposals and detections on a batch of two BCCD images resized
by torchvision to 416x554 and 300x400 (odd sizes, padded to 416x576; seeded random models).
Faster and Mask R-CNN keep 100 proposals per image on both sides (not 1000): the conv box head
on 1000 RoIs is what would make the test slow. Mask R-CNN v2 also compares each detection's
28x28 mask probabilities and the masks pasted into the image by detforge's own test path.

As in test_models_torchvision_parity.py (whose helpers this reuses), the ResNet-50 body is
replaced on both sides' input by torchvision's output of a cheap stand-in body; what v2 adds
is compared here: the FPN (batch norm in v2 Faster R-CNN, P6 from C5 in v2 RetinaNet, run by
detforge's neck on the same body outputs), the GroupNorm head towers, the two-conv RPN and the
conv+BN box head. The ResNet-50 itself is the v1 one (compared end to end elsewhere); here it
is checked by strict loading of every converted key.
"""
import contextlib

import pytest
import torch
from torch import nn

from detforge.config import Config
from detforge.converters.torchvision_fasterrcnn import convert_state_dict as convert_fasterrcnn
from detforge.converters.torchvision_maskrcnn import convert_state_dict as convert_maskrcnn
from detforge.converters.torchvision_retinanet import convert_state_dict as convert_retinanet
from detforge.models.builder import build_detector
from detforge.structures.bbox import bbox2roi

from test_models_torchvision_parity import (BOX_ATOL, batch_and_metas, capture, compare,
                                            inputs, no_resize, stand_in_body)  # noqa: F401

torchvision_detection = pytest.importorskip('torchvision.models.detection')
FEAT_ATOL = 1e-4
MASK_PROB_ATOL, MASK_IOU_MIN = 1e-4, 0.999


def _random_norms(model, seed=0):
    """Batch/group norms with statistics and affine parameters that are not 0 and 1, so the
    norms' weights matter in the comparison."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                n = m.num_features if isinstance(m, nn.BatchNorm2d) else m.num_channels
                m.weight.copy_(1 + 0.2 * torch.randn(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                    m.running_var.copy_(0.5 + torch.rand(n, generator=g))


def _body_and_fpn(tv, images):
    """torchvision's outputs for ``images`` with the stand-in body: the body's levels and
    the FPN's levels (lists, finest first)."""
    fpn = capture(tv.backbone)
    with stand_in_body(tv):
        body = capture(tv.backbone.body)     # the stand-in, installed by the context
        ref = tv(images)
    return ref, list(body['out'].values()), list(fpn['out'].values())


def _assert_same_features(ours, theirs, name):
    assert len(ours) == len(theirs), name
    diff = max((a - b).abs().max().item() for a, b in zip(ours, theirs))
    print(f'{name}: FPN max diff {diff:.2e}')
    assert all(a.shape == b.shape for a, b in zip(ours, theirs)), name
    assert diff <= FEAT_ATOL, f'{name}: FPN features differ by {diff}'


# ---------------------------------------------------------------------------- RetinaNet v2
@pytest.fixture(scope='module')
def retinanet_v2(repo_root):
    torch.manual_seed(0)
    tv = torchvision_detection.retinanet_resnet50_fpn_v2(
        weights=None, weights_backbone=None, num_classes=91, image_mean=[0., 0., 0.],
        image_std=[1., 1., 1.])
    with torch.no_grad():   # scores that depend on the image (a fresh head says 0.01)
        for m in tv.head.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.02)
        nn.init.normal_(tv.head.classification_head.cls_logits.weight, std=0.01)
        nn.init.normal_(tv.head.regression_head.bbox_reg.weight, std=0.002)
        tv.head.classification_head.cls_logits.bias.fill_(-3.0)
    _random_norms(tv.head)
    cfg = Config.fromfile(str(repo_root / 'configs/retinanet/retinanet_r50_fpn_tv_v2.py'))
    ours = build_detector(cfg.model)
    ours.load_state_dict(convert_retinanet(tv.state_dict()), strict=True)
    return no_resize(tv).eval(), ours.eval()


@torch.no_grad()
def test_retinanet_v2_features_and_detections_equal_torchvision(retinanet_v2, inputs):
    size = 'batch2'
    tv, ours = retinanet_v2
    images = inputs[size]
    ref, body, fpn = _body_and_fpn(tv, images)
    # torchvision returns C3..C5; detforge's neck starts at C3 of C2..C5 (start_level=1)
    c2 = body[0].new_zeros(body[0].shape[0], 256, 1, 1)
    x = ours.neck([c2, *body])
    _assert_same_features(x, fpn, f'retinanet_v2 {size}')
    _, metas = batch_and_metas(images)
    dets = ours.bbox_head.simple_test(list(x), metas)
    for i, ((det, labels), r) in enumerate(zip(dets, ref)):
        compare(f'retinanet_v2 {size} image {i}', det[:, :4], det[:, 4], labels.long(), r)


def test_retinanet_v2_giou_losses_at_batch2_equal_torchvision(retinanet_v2, inputs):
    """torchvision's training losses (focal + GIoU on decoded boxes, each image over its own
    positives) at batch 2, against detforge's head on torchvision's FPN features."""
    tv, ours = retinanet_v2
    images, boxes, labels = inputs['train']
    tv.train()
    for m in tv.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    fpn = capture(tv.backbone)
    try:
        with stand_in_body(tv), torch.no_grad():
            ref = tv(images, [dict(boxes=b, labels=l) for b, l in zip(boxes, labels)])
    finally:
        tv.eval()
    _, metas = batch_and_metas(images)
    with torch.no_grad():
        losses = ours.bbox_head.forward_train(list(fpn['out'].values()), metas, boxes, labels)
    print('retinanet_v2 losses', {k: float(v) for k, v in losses.items()},
          {k: float(v) for k, v in ref.items()})
    torch.testing.assert_close(losses['loss_cls'], ref['classification'], rtol=1e-4, atol=0)
    # GIoU: torchvision's eps is 1e-7, MMDetection's (ours) 1e-6
    torch.testing.assert_close(losses['loss_bbox'], ref['bbox_regression'], rtol=1e-4, atol=0)


# ---------------------------------------------------------------------------- Faster R-CNN v2
@pytest.fixture(scope='module')
def faster_rcnn_v2(repo_root):
    torch.manual_seed(0)
    tv = torchvision_detection.fasterrcnn_resnet50_fpn_v2(
        weights=None, weights_backbone=None, image_mean=[0., 0., 0.], image_std=[1., 1., 1.],
        box_score_thresh=0.0)
    _random_norms(tv.backbone.fpn, 1)
    _random_norms(tv.roi_heads, 2)
    cfg = Config.fromfile(str(repo_root / 'configs/faster_rcnn/faster_rcnn_r50_fpn_tv_v2.py'))
    cfg.model.test_cfg.rcnn.score_thr = 0.0   # random weights score ~1/91: keep everything
    tv.rpn._post_nms_top_n['testing'] = cfg.model.test_cfg.rpn.max_per_img = 100
    ours = build_detector(cfg.model)
    ours.load_state_dict(convert_fasterrcnn(tv.state_dict()), strict=True)
    return no_resize(tv).eval(), ours.eval()


@torch.no_grad()
def test_faster_rcnn_v2_features_proposals_and_detections_equal_torchvision(faster_rcnn_v2,
                                                                            inputs):
    size = 'batch2'
    tv, ours = faster_rcnn_v2
    images = inputs[size]
    rpn = capture(tv.rpn)
    ref, body, fpn = _body_and_fpn(tv, images)
    x = ours.neck(body)
    _assert_same_features(x, fpn, f'faster_rcnn_v2 {size}')
    _, metas = batch_and_metas(images)
    props = ours.rpn_head.simple_test_rpn(list(x), metas)
    for i, (p, tv_p) in enumerate(zip(props, rpn['out'][0])):
        # the same set (proposals of equal scores may come in either order)
        assert p.shape == (len(tv_p), 5)
        dist = (p[:, None, :4] - tv_p[None]).abs().amax(-1)
        diff = max(dist.min(1).values.max().item(), dist.min(0).values.max().item())
        assert diff <= BOX_ATOL, f'proposals of image {i}: {diff}'
    dets, labels = ours.roi_head.simple_test_bboxes(list(x), metas, props, ours.roi_head.test_cfg)
    for i, (d, l, r) in enumerate(zip(dets, labels, ref)):
        compare(f'faster_rcnn_v2 {size} image {i}', d[:, :4], d[:, 4], l + 1, r)


# ---------------------------------------------------------------------------- Mask R-CNN v2
@pytest.fixture(scope='module')
def mask_rcnn_v2(repo_root):
    torch.manual_seed(0)
    tv = torchvision_detection.maskrcnn_resnet50_fpn_v2(
        weights=None, weights_backbone=None, image_mean=[0., 0., 0.], image_std=[1., 1., 1.],
        box_score_thresh=0.0)
    _random_norms(tv.backbone.fpn, 1)
    _random_norms(tv.roi_heads, 2)   # the box head's and the mask head's batch norms
    cfg = Config.fromfile(str(repo_root / 'configs/mask_rcnn/mask_rcnn_r50_fpn_tv_v2.py'))
    cfg.model.test_cfg.rcnn.score_thr = 0.0   # random weights score ~1/91: keep everything
    tv.rpn._post_nms_top_n['testing'] = cfg.model.test_cfg.rpn.max_per_img = 100
    ours = build_detector(cfg.model)
    ours.load_state_dict(convert_maskrcnn(tv.state_dict()), strict=True)
    return no_resize(tv).eval(), ours.eval()


def _capture_roi_heads(tv):
    """torchvision's per-image detections before its transform pastes the masks (which it
    writes into the same dicts): copies, with the 28x28 mask probabilities."""
    store = {}
    tv.roi_heads.register_forward_hook(lambda m, i, o: store.__setitem__(
        'out', [{k: v.clone() for k, v in d.items()} for d in o[0]]))
    return store


def _in_detection_order(segm_result, labels):
    """detforge's per-class mask lists -> bool ``(n, H, W)`` in the detections' order."""
    masks = [None] * len(labels)
    for c, class_masks in enumerate(segm_result):
        idx = torch.nonzero(labels == c).flatten().tolist()
        assert len(idx) == len(class_masks)
        for i, mask in zip(idx, class_masks):
            masks[i] = torch.from_numpy(mask)
    return torch.stack(masks)


@torch.no_grad()
def test_mask_rcnn_v2_detections_and_masks_equal_torchvision(mask_rcnn_v2, inputs):
    size = 'batch2'
    tv, ours = mask_rcnn_v2
    images = inputs[size]
    rpn, heads = capture(tv.rpn), _capture_roi_heads(tv)
    ref, body, fpn = _body_and_fpn(tv, images)
    x = list(ours.neck(body))
    _assert_same_features(x, fpn, f'mask_rcnn_v2 {size}')
    _, metas = batch_and_metas(images)
    props = ours.rpn_head.simple_test_rpn(x, metas)
    for i, (p, tv_p) in enumerate(zip(props, rpn['out'][0])):
        dist = (p[:, None, :4] - tv_p[None]).abs().amax(-1)
        assert p.shape == (len(tv_p), 5)
        assert max(dist.min(1).values.max().item(), dist.min(0).values.max().item()) <= BOX_ATOL
    dets, labels = ours.roi_head.simple_test_bboxes(x, metas, props, ours.roi_head.test_cfg)
    # the masks through the detector's own test path: RoIs, class channel, paste, threshold
    results = ours.roi_head.simple_test(x, props, metas, rescale=True)
    logits = ours.roi_head._mask_forward(x, bbox2roi([d[:, :4] for d in dets]))
    probs = ours.roi_head.mask_head.mask_probs(logits, torch.cat(labels)).split(
        [len(d) for d in dets])
    for i, (d, l, r) in enumerate(zip(dets, labels, ref)):
        name = f'mask_rcnn_v2 {size} image {i}'
        compare(name, d[:, :4], d[:, 4], l + 1, r)
        order = torch.argsort(-d[:, 4], stable=True)
        ref_order = torch.argsort(-r['scores'], stable=True)
        prob_diff = (probs[i][order] - heads['out'][i]['masks'][ref_order, 0]).abs().max().item()
        pasted = _in_detection_order(results[i][1], l)[order]
        tv_pasted = r['masks'][ref_order, 0] >= 0.5
        assert pasted.shape == tv_pasted.shape == (len(d), *images[i].shape[1:])
        union = (pasted | tv_pasted).flatten(1).sum(1)
        iou = torch.where(union > 0, (pasted & tv_pasted).flatten(1).sum(1) / union.clamp(min=1),
                          1.0)
        differing = (pasted ^ tv_pasted).flatten(1).sum(1)
        print(f'{name}: mask probabilities max diff {prob_diff:.2e}; pasted masks: min IoU '
              f'{iou.min().item():.6f}, {int((differing > 0).sum())} of {len(d)} differ, by at '
              f'most {int(differing.max())} px')
        assert prob_diff <= MASK_PROB_ATOL, name
        assert iou.min().item() >= MASK_IOU_MIN, name


# ---------------------------------------------------------------------------- MobileNetV3 FPN
@pytest.fixture(scope='module')
def faster_rcnn_mobilenet(repo_root):
    torch.manual_seed(0)
    # a score threshold and no cap on the count: on a stride-32 map some RoIs pool equal
    # features, and a cut at the 100th detection would fall between equal scores
    tv = torchvision_detection.fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, image_mean=[0., 0., 0.], image_std=[1., 1., 1.],
        box_score_thresh=0.2, box_detections_per_img=10 ** 4)
    _random_norms(tv.backbone, 3)
    with torch.no_grad():
        # objectness around sigmoid(-3.1) = 0.043: most anchors fall under
        # torchvision's rpn_score_thresh 0.05, so the threshold is exercised
        nn.init.normal_(tv.rpn.head.cls_logits.weight, std=0.1)
        tv.rpn.head.cls_logits.bias.fill_(-3.1)
        # class scores that differ between RoIs (a fresh classifier gives ~1/91 everywhere,
        # with float ties deciding which of two boxes is the 100th detection)
        nn.init.normal_(tv.roi_heads.box_predictor.cls_score.weight, std=2.0)
    cfg = Config.fromfile(
        str(repo_root / 'configs/faster_rcnn/faster_rcnn_mobilenet_v3_large_fpn_tv.py'))
    cfg.model.test_cfg.rcnn.update(score_thr=0.2, max_per_img=10 ** 4)
    tv.rpn._post_nms_top_n['testing'] = cfg.model.test_cfg.rpn.max_per_img = 300
    ours = build_detector(cfg.model)
    ours.load_state_dict(convert_fasterrcnn(tv.state_dict()), strict=True)
    return no_resize(tv).eval(), ours.eval()


@torch.no_grad()
def test_faster_rcnn_mobilenet_v3_end_to_end_equals_torchvision(faster_rcnn_mobilenet, inputs):
    """The whole network (MobileNetV3 body included, it is cheap) on a batch of two."""
    tv, ours = faster_rcnn_mobilenet
    images = inputs['batch2']
    fpn, rpn = capture(tv.backbone), capture(tv.rpn)
    ref = tv(images)
    batch, metas = batch_and_metas(images)
    x = ours.extract_feat(batch)
    _assert_same_features(list(x), list(fpn['out'].values()), 'faster_rcnn_mobilenet batch2')
    props = ours.rpn_head.simple_test_rpn(list(x), metas)
    for i, (p, tv_p) in enumerate(zip(props, rpn['out'][0])):
        assert p.shape == (len(tv_p), 5) and 0 < len(tv_p) < 300
        dist = (p[:, None, :4] - tv_p[None]).abs().amax(-1)
        diff = max(dist.min(1).values.max().item(), dist.min(0).values.max().item())
        assert diff <= BOX_ATOL, f'proposals of image {i}: {diff}'
    assert all(bool((p[:, 4] >= 0.05).all()) for p in props)
    dets, labels = ours.roi_head.simple_test_bboxes(list(x), metas, props, ours.roi_head.test_cfg)
    for i, (d, l, r) in enumerate(zip(dets, labels, ref)):
        compare_as_sets(f'faster_rcnn_mobilenet batch2 image {i}', d[:, :4], d[:, 4], l + 1, r)


def compare_as_sets(name, boxes, scores, labels, ref):
    """Same detections as sets: each one on either side has one on the other with the same
    label, a box within 1e-2 px and a score within 1e-4. On a stride-32 map small RoIs in
    the same cells pool the same values, so different boxes get exactly equal scores and
    their order (both sides sort unstably) is arbitrary: ``compare``'s sorted pairing fails
    on them although the sets agree."""
    assert len(scores) == len(ref['scores']) > 20, f'{name}: {len(scores)} vs {len(ref["scores"])}'

    def keys(b, s, l):
        # scaled so that 1e-2 px, 1e-4 score and any label difference are comparable
        return torch.cat([b, s[:, None] * (SCORE_SCALE), l[:, None].float() * 1e6], 1)
    dist = (keys(boxes, scores, labels)[:, None] -
            keys(ref['boxes'], ref['scores'], ref['labels'])[None]).abs().amax(-1)
    diff = max(dist.min(1).values.max().item(), dist.min(0).values.max().item())
    print(f'{name}: {len(scores)} detections, max set distance {diff:.2e} (px; score x100)')
    assert diff <= BOX_ATOL, name


SCORE_SCALE = BOX_ATOL / 1e-4   # a score difference of 1e-4 weighs as 1e-2 px


def test_mobilenet_v3_backbone_loads_torchvision_imagenet_names(tmp_path):
    import torchvision
    from detforge.registry import BACKBONES
    net = torchvision.models.mobilenet_v3_large()
    _random_norms(net, 4)
    path = tmp_path / 'mnv3.pth'
    torch.save(net.state_dict(), path)          # features.* and classifier.*
    # torchvision's classifier network has BatchNorm2d(eps=0.001); its detection models pass
    # their own norm layer (eps 1e-5), as the _tv config does
    ours = BACKBONES.build(dict(type='MobileNetV3', out_indices=(3, 16),
                                norm_cfg=dict(type='BN', eps=1e-3),
                                init_cfg=dict(type='Pretrained', checkpoint=str(path))))
    ours.init_weights()
    ours.eval(), net.eval()
    x = torch.randn(1, 3, 97, 131)
    with torch.no_grad():
        c3, c16 = ours(x)
        torch.testing.assert_close(c16, net.features(x))
        torch.testing.assert_close(c3, net.features[:4](x))
    assert ours.out_channels == [24, 960]


# ---------------------------------------------------------------------------- training losses
def _ellipses(boxes, shape):
    """One filled ellipse inscribed in each box: uint8 ``(n, h, w)`` gt masks."""
    ys, xs = torch.meshgrid(torch.arange(shape[0]) + 0.5, torch.arange(shape[1]) + 0.5,
                            indexing='ij')
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    rx, ry = (boxes[:, 2] - boxes[:, 0]) / 2, (boxes[:, 3] - boxes[:, 1]) / 2
    inside = ((xs - cx[:, None, None]) / rx[:, None, None]) ** 2 + \
        ((ys - cy[:, None, None]) / ry[:, None, None]) ** 2 <= 1
    return inside.to(torch.uint8)


def _two_stage_losses(tv, ours, inputs, stand_in, with_masks=False):
    """torchvision's and detforge's four losses (five with masks: ellipses in the gt boxes)
    at batch 2 on the same features, every candidate sampled (the losses then do not depend
    on the random draw) and 200 proposals per image (not 2000) for speed; batch norms in
    eval mode on both sides."""
    from detforge.structures.masks import BitmapMasks
    images, boxes, labels = inputs['train']
    masks = [_ellipses(b, x.shape[1:]) for b, x in zip(boxes, images)] if with_masks else None
    tv.rpn.fg_bg_sampler.batch_size_per_image = 10 ** 7
    tv.roi_heads.fg_bg_sampler.batch_size_per_image = 10 ** 7
    ours.rpn_head.sampler.num = 10 ** 7
    ours.roi_head.bbox_sampler.num = 10 ** 7
    tv.rpn._post_nms_top_n['training'] = ours.train_cfg.rpn_proposal.max_per_img = 200
    tv.train(), ours.train()
    for m in [*tv.modules(), *ours.modules()]:
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    fpn = capture(tv.backbone)
    ours.extract_feat = lambda img: list(fpn['out'].values())
    try:
        with (stand_in_body(tv) if stand_in else contextlib.nullcontext()), torch.no_grad():
            targets = [dict(boxes=b, labels=l + 1) for b, l in zip(boxes, labels)]
            extra = {}
            if with_masks:
                for target, m in zip(targets, masks):
                    target['masks'] = m
                extra['gt_masks'] = [BitmapMasks(m.numpy(), *m.shape[1:]) for m in masks]
            ref = tv(images, targets)
            batch, metas = batch_and_metas(images)
            losses = ours(batch, metas, gt_bboxes=boxes, gt_labels=labels, **extra)
    finally:
        tv.eval(), ours.eval()
        del ours.extract_feat
    pairs = dict(loss_objectness='loss_rpn_cls', loss_rpn_box_reg='loss_rpn_bbox',
                 loss_classifier='loss_cls', loss_box_reg='loss_bbox')
    if with_masks:
        pairs['loss_mask'] = 'loss_mask'
    for tv_name, name in pairs.items():
        print(f'{name}: {losses[name].item():.7f} torchvision {ref[tv_name].item():.7f}')
        torch.testing.assert_close(losses[name], ref[tv_name], rtol=1e-4, atol=0,
                                   msg=f'{name} vs {tv_name}')


def test_faster_rcnn_v2_losses_at_batch2_equal_torchvision(faster_rcnn_v2, inputs):
    _two_stage_losses(*faster_rcnn_v2, inputs, stand_in=True)


def test_mask_rcnn_v2_losses_at_batch2_equal_torchvision(mask_rcnn_v2, inputs):
    """The mask loss too: torchvision's soft, ``aligned=False`` mask targets (the _tv configs'
    ``mask_target_aligned=False, mask_target_binarize=False``)."""
    _two_stage_losses(*mask_rcnn_v2, inputs, stand_in=True, with_masks=True)


def test_faster_rcnn_mobilenet_v3_losses_at_batch2_equal_torchvision(faster_rcnn_mobilenet,
                                                                     inputs):
    _two_stage_losses(*faster_rcnn_mobilenet, inputs, stand_in=False)


@pytest.mark.parametrize('builder, config', [
    ('fasterrcnn_mobilenet_v3_large_fpn', 'configs/faster_rcnn/faster_rcnn_mobilenet_v3_large_fpn_tv.py'),
    ('fasterrcnn_resnet50_fpn_v2', 'configs/faster_rcnn/faster_rcnn_r50_fpn_tv_v2.py'),
    ('retinanet_resnet50_fpn_v2', 'configs/retinanet/retinanet_r50_fpn_tv_v2.py'),
    ('maskrcnn_resnet50_fpn', 'configs/mask_rcnn/mask_rcnn_r50_fpn_tv.py'),
    ('maskrcnn_resnet50_fpn_v2', 'configs/mask_rcnn/mask_rcnn_r50_fpn_tv_v2.py')])
def test_convert_cli_names_the_config_that_loads_the_result(repo_root, tmp_path, builder, config):
    from detforge.cli import main
    from detforge.engine.checkpoint import load_checkpoint
    tv = getattr(torchvision_detection, builder)(weights=None, weights_backbone=None)
    src, dst = tmp_path / 'tv.pth', tmp_path / 'converted.pth'
    torch.save(tv.state_dict(), src)
    command = 'torchvision-' + builder.split('_')[0]
    assert main(['convert', command, str(src), str(dst)]) == 0
    ckpt = torch.load(dst, weights_only=True)
    assert ckpt['meta']['config'] == config
    model = build_detector(Config.fromfile(str(repo_root / config)).model)
    report = load_checkpoint(model, str(dst), log_report=False)['load_report']
    assert report.ok, report


def test_rpn_head_with_two_convs_has_mmdetection_parameter_names():
    """MMDetection 2.x's RPNHead(num_convs=2) is a Sequential of ConvModules; its checkpoints
    name the convs rpn_conv.0.conv / rpn_conv.1.conv."""
    from detforge.registry import HEADS
    head = HEADS.build(dict(type='RPNHead', in_channels=8, feat_channels=8, num_convs=2))
    assert [k for k in head.state_dict() if k.startswith('rpn_conv.')] == [
        'rpn_conv.0.conv.weight', 'rpn_conv.0.conv.bias', 'rpn_conv.1.conv.weight',
        'rpn_conv.1.conv.bias']
    x = torch.randn(1, 8, 5, 6)
    c0, c1 = head.rpn_conv[0].conv, head.rpn_conv[1].conv
    torch.testing.assert_close(head.forward_single(x)[0],
                               head.rpn_cls(torch.relu(c1(torch.relu(c0(x))))))
