"""FCOS-R50-FPN equals torchvision's ``fcos_resnet50_fpn`` once converted.

A randomly initialised torchvision model (seeded) is saved, converted with
``detforge convert torchvision-fcos`` and loaded into ``configs/fcos/fcos_r50_fpn_tv.py``.
Both see the same BCCD image at several sizes, some not multiples of the largest stride (128):
torchvision pads them to multiples of 32 and derives each level's stride from the padded size,
which the tv config reproduces (``stride_rule='batch_shape'``).

Known divergences (not exercised here): torchvision's GIoU loss is averaged over the positives,
ours (MMDetection's) weighted by the centerness targets; torchvision's regress ranges exclude
their ends and break ties between boxes of areas within float32 rounding of ``1e8 - area``
(a few px²) by order, ours compare the areas exactly.
"""
import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pytest
import torch
from torch import nn
from torchvision.ops import generalized_box_iou_loss

from detforge.cli import main as cli_main
from detforge.config import Config
from detforge.converters import torchvision_fcos
from detforge.models.builder import build_detector
from detforge.registry import DetforgeError

torchvision_detection = pytest.importorskip('torchvision.models.detection')

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
BCCD_CLASSES = ('RBC', 'WBC', 'Platelets')


def load_bccd(voc_root, h, w, name='BloodImage_00000'):
    """The image resized to (h, w), normalised as torchvision does (RGB, ImageNet), and its
    boxes (xyxy, resized) and torchvision labels (1-based)."""
    img = cv2.imread(str(voc_root / 'JPEGImages' / f'{name}.jpg'))
    sy, sx = h / img.shape[0], w / img.shape[1]
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    boxes, labels = [], []
    for obj in ET.parse(voc_root / 'Annotations' / f'{name}.xml').findall('object'):
        bb = obj.find('bndbox')
        x1, y1, x2, y2 = (float(bb.find(k).text) for k in ('xmin', 'ymin', 'xmax', 'ymax'))
        boxes.append([x1 * sx, y1 * sy, x2 * sx, y2 * sy])
        labels.append(BCCD_CLASSES.index(obj.find('name').text.strip()) + 1)
    rgb = img[:, :, ::-1].astype(np.float32) / 255.
    x = torch.from_numpy(((rgb - MEAN) / STD).transpose(2, 0, 1).copy())
    return x, torch.tensor(boxes, dtype=torch.float32), torch.tensor(labels)


def pad_batch(xs):
    """Images padded (zeros, bottom/right) to the batch's largest size rounded up to 32, and
    their metas, as detforge's collate makes them."""
    hp = -(-max(x.shape[1] for x in xs) // 32) * 32
    wp = -(-max(x.shape[2] for x in xs) // 32) * 32
    batch = torch.zeros((len(xs), 3, hp, wp))
    metas = []
    for i, x in enumerate(xs):
        h, w = x.shape[1:]
        batch[i, :, :h, :w] = x
        metas.append(dict(img_shape=(h, w, 3), ori_shape=(h, w, 3), pad_shape=(hp, wp, 3),
                          batch_input_shape=(hp, wp), scale_factor=1.0, flip=False))
    return batch, metas


@pytest.fixture(scope='module')
def models(tmp_path_factory, repo_root):
    torch.manual_seed(0)
    tv = torchvision_detection.fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91,
                                                 image_mean=[0., 0., 0.], image_std=[1., 1., 1.])
    tv.transform.resize = lambda image, target=None: (image, target)  # we feed every size as it is
    tv.detections_per_img = 100000  # keep every survivor of NMS, the coarse levels included
    # A fresh head scores every point alike: give it weights whose scores depend on the image
    # and that pass torchvision's 0.2 threshold on sqrt(class * centerness)
    with torch.no_grad():
        for m in tv.head.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.02)
                nn.init.normal_(m.bias, std=0.02)
            elif isinstance(m, nn.GroupNorm):
                nn.init.normal_(m.weight, 1.0, 0.1)
                nn.init.normal_(m.bias, 0.0, 0.1)
        nn.init.normal_(tv.head.classification_head.cls_logits.weight, std=0.01)
        tv.head.classification_head.cls_logits.bias.fill_(-1.5)
        nn.init.normal_(tv.head.regression_head.bbox_reg.weight, std=0.01)
        tv.head.regression_head.bbox_reg.bias.fill_(1.0)
    tmp = tmp_path_factory.mktemp('tv_fcos')
    src, dst = tmp / 'tv.pth', tmp / 'ours.pth'
    torch.save(tv.state_dict(), src)
    assert cli_main(['convert', 'torchvision-fcos', str(src), str(dst)]) == 0

    cfg = Config.fromfile(str(repo_root / 'configs/fcos/fcos_r50_fpn_tv.py'))
    cfg.model.backbone.norm_cfg.eps = 1e-5  # torchvision's BatchNorm2d when built without weights
    cfg.model.test_cfg.max_per_img = 0  # all
    ours = build_detector(cfg.model)
    ckpt = torch.load(dst, map_location='cpu', weights_only=True)
    ours.load_state_dict(ckpt['state_dict'], strict=True)
    assert len(ckpt['meta']['CLASSES']) == 91
    return tv, ours


def _flatten_result(per_class):
    boxes = np.concatenate([r for r in per_class])
    labels = np.concatenate([np.full(len(r), i) for i, r in enumerate(per_class)])
    return boxes[:, :4], boxes[:, 4], labels


@pytest.mark.parametrize('sizes', [[(128, 256)], [(100, 150)], [(97, 203)],
                                   [(97, 203), (130, 171)]], ids=str)
def test_inference_equals_torchvision(models, bccd_voc_root, sizes):
    """One image at a size, or a batch of two of different odd sizes (padded to one batch
    shape on both sides)."""
    tv, ours = models
    tv.eval()
    ours.eval()
    xs = [load_bccd(bccd_voc_root, h, w, f'BloodImage_0000{i}')[0]
          for i, (h, w) in enumerate(sizes)]
    batch, metas = pad_batch(xs)
    with torch.no_grad():
        refs = tv(xs)
        results = ours(img=[batch], img_metas=[metas], return_loss=False)
    for i, (ref, result) in enumerate(zip(refs, results)):
        boxes, scores, labels = _flatten_result(result)
        assert len(ref['scores']) >= 100, 'the comparison needs detections'
        # the coarsest levels are compared too: some boxes are larger than P5's range
        assert (ref['boxes'][:, 2:] - ref['boxes'][:, :2]).max() > 100
        assert len(scores) == len(ref['scores'])
        # matched as sets: detections of equal scores (e.g. points of the zero padding) come
        # out of either NMS in any order
        ref_boxes, ref_scores = ref['boxes'].numpy(), ref['scores'].numpy()
        box_dist = np.abs(boxes[:, None] - ref_boxes[None]).max(-1)
        same = ((labels[:, None] == ref['labels'].numpy()[None])
                & (np.abs(scores[:, None] - ref_scores[None]) <= 1e-4) & (box_dist <= 1e-2))
        # the figures: each detection against the nearest of the same label on the other side
        dist = np.where(labels[:, None] == ref['labels'].numpy()[None], box_dist, np.inf)
        nearest = dist.argmin(1)
        print(f'fcos {sizes} image {i}: {len(scores)} detections, max box diff '
              f'{dist[np.arange(len(dist)), nearest].max():.2e} px, max score diff '
              f'{np.abs(scores - ref_scores[nearest]).max():.2e}')
        assert same.any(1).all() and same.any(0).all(), f'{(~same.any(1)).sum()} detections differ'


def test_training_targets_and_losses_equal_torchvision(models, bccd_voc_root):
    """A batch of two images of different, odd sizes: the same positives matched to the same
    boxes, and the same classification and centerness losses; the GIoU loss equals torchvision's
    once averaged over the positives (its convention) instead of centerness-weighted (ours)."""
    tv, ours = models
    tv.train()
    for m in tv.modules():  # our tv config keeps batch norm frozen
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    ours.train()
    samples = [load_bccd(bccd_voc_root, 100, 150, 'BloodImage_00001'),
               load_bccd(bccd_voc_root, 161, 203, 'BloodImage_00002')]
    xs, gt_boxes, gt_labels = zip(*samples)
    captured = {}
    compute_loss = tv.head.compute_loss

    def capture(targets, head_outputs, anchors, matched_idxs):
        captured['matched'] = torch.stack(matched_idxs)
        return compute_loss(targets, head_outputs, anchors, matched_idxs)
    tv.head.compute_loss = capture
    try:
        ref = tv(list(xs), [dict(boxes=b, labels=l) for b, l in zip(gt_boxes, gt_labels)])
    finally:
        del tv.head.compute_loss
    batch, metas = pad_batch(xs)
    losses = ours(img=batch, img_metas=metas, gt_bboxes=list(gt_boxes), gt_labels=list(gt_labels))

    head = ours.bbox_head
    feats = ours.extract_feat(batch)
    cls_scores, bbox_preds, _ = head(feats)
    points = head.mlvl_priors([s.shape[-2:] for s in cls_scores], metas, batch.device)
    t = head.get_targets(points, list(gt_boxes), list(gt_labels))
    assert (t['gt_inds'] >= 0).sum() > 20
    torch.testing.assert_close(t['gt_inds'], captured['matched'], rtol=0, atol=0)

    rel = {name: abs(float(losses[name]) - float(ref[tv_name])) / abs(float(ref[tv_name]))
           for name, tv_name in (('loss_cls', 'classification'), ('loss_centerness', 'bbox_ctrness'))}
    print(f"fcos losses at batch 2: {int((t['gt_inds'] >= 0).sum())} positives, "
          + ', '.join(f'{k} relative diff {v:.1e}' for k, v in rel.items()))
    torch.testing.assert_close(losses['loss_cls'], ref['classification'], rtol=1e-4, atol=0)
    torch.testing.assert_close(losses['loss_centerness'], ref['bbox_ctrness'], rtol=1e-4, atol=0)
    pos = t['gt_inds'] >= 0
    pred = torch.cat([b.permute(0, 2, 3, 1).reshape(2, -1, 4) for b in bbox_preds], 1)[pos]
    pts = t['points'][None].expand(2, -1, -1)[pos]
    giou_mean = generalized_box_iou_loss(head.bbox_coder.decode(pts, pred),
                                         head.bbox_coder.decode(pts, t['bbox_targets'][pos]), reduction='mean')
    torch.testing.assert_close(giou_mean, ref['bbox_regression'], rtol=1e-4, atol=0)
    assert not torch.allclose(losses['loss_bbox'], ref['bbox_regression'], rtol=1e-3)  # the convention differs


def test_converter_maps_the_towers_and_rejects_unknown_keys():
    keys = {'head.classification_head.conv.3.weight': torch.zeros(1),
            'head.regression_head.conv.10.bias': torch.zeros(1),
            'backbone.fpn.extra_blocks.p6.weight': torch.zeros(1)}
    assert set(torchvision_fcos.convert_state_dict(keys)) == {
        'bbox_head.cls_convs.1.conv.weight', 'bbox_head.reg_convs.3.gn.bias', 'neck.fpn_convs.3.conv.weight',
        *(f'bbox_head.scales.{i}.scale' for i in range(5))}
    with pytest.raises(DetforgeError, match='roi_heads'):
        torchvision_fcos.convert_state_dict({'roi_heads.box_head.fc6.weight': torch.zeros(1)})
