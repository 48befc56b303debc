"""torchvision's v2 detectors (``retinanet_resnet50_fpn_v2``, ``fasterrcnn_resnet50_fpn_v2``),
converted by ``detforge convert``'s key mapping into the ``_tv_v2`` configs, give
torchvision's FPN features, proposals and detections on a batch of two BCCD images resized
by torchvision to 416x554 and 300x400 (odd sizes, padded to 416x576; seeded random models).
Faster R-CNN keeps 100 proposals per image on both sides (not 1000): its conv box head on
1000 RoIs is what would make the test slow.

As in test_models_torchvision_parity.py (whose helpers this reuses), the ResNet-50 body is
replaced on both sides' input by torchvision's output of a cheap stand-in body; what v2 adds
is compared here: the FPN (batch norm in v2 Faster R-CNN, P6 from C5 in v2 RetinaNet, run by
detforge's neck on the same body outputs), the GroupNorm head towers, the two-conv RPN and the
conv+BN box head. The ResNet-50 itself is the v1 one (compared end to end elsewhere); here it
is checked by strict loading of every converted key.
"""
import pytest
import torch
from torch import nn

from detforge.config import Config
from detforge.converters.torchvision_fasterrcnn import convert_state_dict as convert_fasterrcnn
from detforge.converters.torchvision_retinanet import convert_state_dict as convert_retinanet
from detforge.models.builder import build_detector

from test_models_torchvision_parity import (BOX_ATOL, batch_and_metas, capture, compare,
                                            inputs, no_resize, stand_in_body)  # noqa: F401

torchvision_detection = pytest.importorskip('torchvision.models.detection')
FEAT_ATOL = 1e-4


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
