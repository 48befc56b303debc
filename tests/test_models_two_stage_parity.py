"""Faster R-CNN equals torchvision's ``fasterrcnn_resnet50_fpn`` when given its weights.

A randomly initialised (seeded) torchvision model is converted with
``detforge convert torchvision-fasterrcnn``'s key mapping and loaded into the model of
``configs/faster_rcnn/faster_rcnn_r50_fpn_tv.py``; on one BCCD image (halved to 320x240 to
keep the test fast; torchvision's resize is told to keep that size) both give the same
proposals, detections and - with sampling made deterministic by sampling every candidate -
the same training losses.
"""
import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from detforge.config import Config
from detforge.converters.torchvision_fasterrcnn import convert_state_dict
from detforge.registry import DETECTORS

H, W = 240, 320
BCCD_CLASSES = ('RBC', 'WBC', 'Platelets')


def _load_image(voc_root, name='BloodImage_00000'):
    img = cv2.imread(str(voc_root / 'JPEGImages' / f'{name}.jpg'))           # BGR 480x640
    img = cv2.resize(img, (W, H), interpolation=cv2.INTER_AREA)
    root = ET.parse(voc_root / 'Annotations' / f'{name}.xml').getroot()
    boxes, labels = [], []
    for obj in root.iter('object'):
        bb = obj.find('bndbox')
        boxes.append([float(bb.find(k).text) for k in ('xmin', 'ymin', 'xmax', 'ymax')])
        labels.append(BCCD_CLASSES.index(obj.find('name').text))
    boxes = torch.tensor(boxes) * 0.5
    return img, boxes, torch.tensor(labels)


@pytest.fixture(scope='module')
def models():
    torch.manual_seed(0)
    tv = torchvision.models.detection.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, min_size=H, max_size=W, box_score_thresh=0.0)
    cfg = Config.fromfile('configs/faster_rcnn/faster_rcnn_r50_fpn_tv.py')
    cfg.model.test_cfg.rcnn.score_thr = 0.0
    ours = DETECTORS.build(cfg.model)
    missing, unexpected = ours.load_state_dict(convert_state_dict(tv.state_dict()), strict=True)
    assert not missing and not unexpected
    return tv.eval(), ours.eval()


@pytest.fixture(scope='module')
def sample(bccd_voc_root):
    img, boxes, labels = _load_image(bccd_voc_root)
    rgb = torch.from_numpy(img[:, :, ::-1].copy()).permute(2, 0, 1).float() / 255
    batch = torch.zeros(1, 3, 256, 320, dtype=torch.uint8)          # padded to 32 as collate does
    batch[0, :, :H] = torch.from_numpy(img).permute(2, 0, 1)
    meta = dict(img_shape=(H, W, 3), ori_shape=(H, W, 3), pad_shape=(256, 320, 3),
                scale_factor=np.ones(4, np.float32), flip=False,
                img_norm_cfg=dict(mean=np.array([123.675, 116.28, 103.53], np.float32),
                                  std=np.array([58.395, 57.12, 57.375], np.float32),
                                  to_rgb=True))
    return dict(rgb=rgb, batch=batch, metas=[meta], boxes=boxes, labels=labels)


def test_converted_checkpoint_loads_strictly(models):
    tv, ours = models
    assert ours.roi_head.bbox_head.fc_cls.out_features == 91
    # torchvision's background row 0 is our last row
    torch.testing.assert_close(ours.roi_head.bbox_head.fc_cls.weight[-1],
                               tv.roi_heads.box_predictor.cls_score.weight[0])
    torch.testing.assert_close(ours.roi_head.bbox_head.fc_reg.weight[:4],
                               tv.roi_heads.box_predictor.bbox_pred.weight[4:8])


@torch.no_grad()
def test_same_proposals_and_detections_in_eval_mode(models, sample):
    tv, ours = models
    images, _ = tv.transform([sample['rgb']])
    assert tuple(images.image_sizes[0]) == (H, W)
    tv_feats = tv.backbone(images.tensors)
    tv_props = tv.rpn(images, tv_feats)[0][0]
    tv_dets = tv.roi_heads(tv_feats, [tv_props], images.image_sizes)[0][0]

    # our uint8 -> normalised path agrees with torchvision's to float rounding ...
    torch.testing.assert_close(ours.preprocess(sample['batch'], sample['metas']),
                               images.tensors, rtol=0, atol=1e-5)
    # ... which a random-weight ResNet-50 amplifies, so the model is fed the same floats
    x = ours.extract_feat(images.tensors)
    for ours_level, tv_level in zip(x, tv_feats.values()):
        torch.testing.assert_close(ours_level, tv_level, rtol=1e-5, atol=1e-5)
    props = ours.rpn_head.simple_test_rpn(x, sample['metas'])[0]
    assert props.shape == (tv_props.shape[0], 5)
    torch.testing.assert_close(props[:100, :4], tv_props[:100], rtol=0, atol=1e-3)

    dets, labels = ours.roi_head.simple_test_bboxes(x, sample['metas'], [props],
                                                    ours.roi_head.test_cfg)
    dets, labels = dets[0], labels[0]
    assert len(dets) == len(tv_dets['boxes']) == 100
    torch.testing.assert_close(dets[:, 4], tv_dets['scores'], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(dets[:, :4], tv_dets['boxes'], rtol=0, atol=1e-3)
    assert torch.equal(labels + 1, tv_dets['labels'])


def _bn_eval(model):
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def test_same_losses_in_train_mode_when_every_candidate_is_sampled(models, sample):
    tv, ours = models
    # sampling everything makes the loss independent of the random draw
    tv.rpn.fg_bg_sampler.batch_size_per_image = 10 ** 7
    tv.roi_heads.fg_bg_sampler.batch_size_per_image = 10 ** 7
    ours.rpn_head.sampler.num = 10 ** 7
    ours.roi_head.bbox_sampler.num = 10 ** 7
    tv.train(), ours.train()
    _bn_eval(tv), _bn_eval(ours)
    try:
        tv_losses = tv([sample['rgb']], [dict(boxes=sample['boxes'],
                                              labels=sample['labels'] + 1)])
        images, _ = tv.transform([sample['rgb']])
        losses = ours(images.tensors, sample['metas'], gt_bboxes=[sample['boxes']],
                      gt_labels=[sample['labels']])
    finally:
        tv.eval(), ours.eval()
    pairs = dict(loss_objectness='loss_rpn_cls', loss_rpn_box_reg='loss_rpn_bbox',
                 loss_classifier='loss_cls', loss_box_reg='loss_bbox')
    for tv_name, name in pairs.items():
        torch.testing.assert_close(losses[name], tv_losses[tv_name], rtol=1e-4, atol=0,
                                   msg=f'{name} vs {tv_name}')
