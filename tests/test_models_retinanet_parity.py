"""RetinaNet-R50-FPN equals torchvision's ``retinanet_resnet50_fpn`` once converted.

A randomly initialised torchvision model (seeded) is saved, converted with
``detforge convert torchvision-retinanet`` and loaded into
``configs/retinanet/retinanet_r50_fpn_tv.py``; both models then see the same BCCD image at the
same size (128x256, multiples of 128 so that every level's stride is exact in torchvision).
"""
import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from detforge.cli import main as cli_main
from detforge.config import Config
from detforge.converters import torchvision_retinanet
from detforge.models.builder import build_detector
from detforge.models.detectors.base import BaseDetector

import torchvision.models.detection as torchvision_detection  # noqa: E402  (a dependency)

H, W = 128, 256
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
BCCD_CLASSES = ('RBC', 'WBC', 'Platelets')


def load_bccd(voc_root, name='BloodImage_00000'):
    """The image resized to (H, W) as uint8 BGR, and its boxes (xyxy, resized) and labels."""
    img = cv2.imread(str(voc_root / 'JPEGImages' / f'{name}.jpg'))
    sy, sx = H / img.shape[0], W / img.shape[1]
    img = cv2.resize(img, (W, H), interpolation=cv2.INTER_LINEAR)
    boxes, labels = [], []
    for obj in ET.parse(voc_root / 'Annotations' / f'{name}.xml').findall('object'):
        bb = obj.find('bndbox')
        x1, y1, x2, y2 = (float(bb.find(k).text) for k in ('xmin', 'ymin', 'xmax', 'ymax'))
        boxes.append([x1 * sx, y1 * sy, x2 * sx, y2 * sy])
        labels.append(BCCD_CLASSES.index(obj.find('name').text.strip()))
    return img, torch.tensor(boxes, dtype=torch.float32), torch.tensor(labels)


@pytest.fixture(scope='module')
def models(tmp_path_factory, bccd_voc_root, repo_root):
    torch.manual_seed(0)
    tv = torchvision_detection.retinanet_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=91, min_size=H, max_size=W,
        image_mean=[0., 0., 0.], image_std=[1., 1., 1.])  # we feed it normalised tensors
    # A fresh head predicts p=0.01 everywhere (below the 0.05 threshold): give it weights whose
    # scores depend on the image, so that there is something to compare.
    with torch.no_grad():
        for m in tv.head.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.02)
        nn.init.normal_(tv.head.classification_head.cls_logits.weight, std=0.002)
        nn.init.normal_(tv.head.regression_head.bbox_reg.weight, std=0.002)
        tv.head.classification_head.cls_logits.bias.fill_(-4.0)
    tmp = tmp_path_factory.mktemp('tv')
    src, dst = tmp / 'tv.pth', tmp / 'ours.pth'
    torch.save(tv.state_dict(), src)
    assert cli_main(['convert', 'torchvision-retinanet', str(src), str(dst)]) == 0

    cfg = Config.fromfile(str(repo_root / 'configs/retinanet/retinanet_r50_fpn_tv.py'))
    cfg.model.backbone.norm_cfg.eps = 1e-5  # torchvision's BatchNorm2d when built without weights
    ours = build_detector(cfg.model)
    ckpt = torch.load(dst, map_location='cpu', weights_only=True)
    ours.load_state_dict(ckpt['state_dict'], strict=True)
    assert len(ckpt['meta']['CLASSES']) == 91

    img, boxes, labels = load_bccd(bccd_voc_root)
    rgb = img[:, :, ::-1].astype(np.float32) / 255.
    x = torch.from_numpy(((rgb - MEAN) / STD).transpose(2, 0, 1).copy())
    meta = dict(img_shape=(H, W, 3), ori_shape=(H, W, 3), pad_shape=(H, W, 3), scale_factor=1.0,
                flip=False)
    # torchvision's COCO labels start at 1 (0 is its background slot)
    return tv, ours, img, x, meta, boxes, labels + 1


def _flatten_result(per_class):
    boxes = np.concatenate([r for r in per_class])
    labels = np.concatenate([np.full(len(r), i) for i, r in enumerate(per_class)])
    return boxes[:, :4], boxes[:, 4], labels


def test_preprocess_matches_torchvision_normalisation(models):
    _, _, img, x, meta, _, _ = models
    det = BaseDetector()
    ours = det.preprocess(torch.from_numpy(img.transpose(2, 0, 1).copy())[None], [meta])
    torch.testing.assert_close(ours[0], x, rtol=0, atol=1e-5)


def test_inference_equals_torchvision(models):
    tv, ours, _, x, meta, _, _ = models
    tv.eval()
    ours.eval()
    with torch.no_grad():
        ref = tv([x])[0]
        result = ours(img=[x[None]], img_metas=[[dict(meta)]], return_loss=False)[0]
    boxes, scores, labels = _flatten_result(result)
    assert len(ref['scores']) > 50, 'the comparison needs detections'
    assert len(scores) == len(ref['scores'])
    order, ref_order = np.argsort(-scores, kind='stable'), torch.argsort(-ref['scores'], stable=True)
    np.testing.assert_allclose(scores[order], ref['scores'][ref_order].numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(labels[order], ref['labels'][ref_order].numpy())
    np.testing.assert_allclose(boxes[order], ref['boxes'][ref_order].numpy(), rtol=0, atol=1e-3)


def test_training_losses_equal_torchvision(models):
    tv, ours, _, x, meta, boxes, labels = models
    tv.train()
    for m in tv.modules():  # our tv config keeps batch norm frozen (as torchvision's COCO training)
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    ours.train()
    ref = tv([x], [dict(boxes=boxes, labels=labels)])
    losses = ours(img=x[None], img_metas=[dict(meta)], gt_bboxes=[boxes], gt_labels=[labels])
    torch.testing.assert_close(losses['loss_cls'], ref['classification'], rtol=1e-4, atol=0)
    torch.testing.assert_close(losses['loss_bbox'], ref['bbox_regression'], rtol=1e-4, atol=0)


def test_converter_understands_the_pre_0_13_key_layout():
    old = {'head.classification_head.conv.2.weight': torch.zeros(1),
           'backbone.fpn.inner_blocks.1.bias': torch.zeros(1),
           'backbone.fpn.extra_blocks.p7.weight': torch.zeros(1),
           'head.regression_head.conv.6.bias': torch.zeros(1)}
    assert set(torchvision_retinanet.convert_state_dict(old)) == {
        'bbox_head.cls_convs.1.conv.weight', 'neck.lateral_convs.1.conv.bias',
        'neck.fpn_convs.4.conv.weight', 'bbox_head.reg_convs.3.conv.bias'}


def test_converter_rejects_unknown_keys():
    from detforge.registry import DetforgeError
    with pytest.raises(DetforgeError, match='roi_heads'):
        torchvision_retinanet.convert_state_dict({'roi_heads.box_head.fc6.weight': torch.zeros(1)})
