"""Faster R-CNN and Cascade R-CNN (ResNet-18, from scratch) overfit 4 BCCD images: the loss
falls 5x and the boxes are found again.

Kept cheap for CI (each case ~15 s on 2 free cores): a quarter of BCCD's 640x480, FPN/RPN/RoI
features 64 channels wide, 1024 -> 256 fc units, 128 sampled RoIs per image, fused AdamW
(SGD at lr 0.02 from scratch diverges on 4 images). The losses are the configs' own.
"""
import copy
import time
import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pytest
import torch

from detforge.config import Config
from detforge.registry import DETECTORS
from detforge.structures.bbox import bbox_overlaps

BCCD_CLASSES = ('RBC', 'WBC', 'Platelets')
H, W = 120, 160  # a quarter of BCCD's 480x640
SCALE = W / 640


def _batch(voc_root, names):
    imgs, boxes, labels = [], [], []
    for name in names:
        img = cv2.resize(cv2.imread(str(voc_root / 'JPEGImages' / f'{name}.jpg')), (W, H),
                         interpolation=cv2.INTER_AREA)
        imgs.append(torch.from_numpy(img).permute(2, 0, 1))
        root = ET.parse(voc_root / 'Annotations' / f'{name}.xml').getroot()
        b, l = [], []
        for obj in root.iter('object'):
            bb = obj.find('bndbox')
            b.append([float(bb.find(k).text) * SCALE for k in ('xmin', 'ymin', 'xmax', 'ymax')])
            l.append(BCCD_CLASSES.index(obj.find('name').text))
        boxes.append(torch.tensor(b))
        labels.append(torch.tensor(l))
    metas = [dict(img_shape=(H, W, 3), ori_shape=(H, W, 3), pad_shape=(H + 8, W, 3),
                  scale_factor=np.ones(4, np.float32), flip=False) for _ in names]
    img = torch.zeros(len(names), 3, H + 8, W, dtype=torch.uint8)
    img[:, :, :H] = torch.stack(imgs)
    return img, metas, boxes, labels


def _model(base):
    model = copy.deepcopy(Config.fromfile(base).model)
    model.backbone.update(depth=18, init_cfg=None, frozen_stages=-1, norm_eval=False)
    model.neck.update(in_channels=[64, 128, 256, 512], out_channels=64)
    model.rpn_head.update(in_channels=64, feat_channels=64)
    model.roi_head.bbox_roi_extractor.out_channels = 64
    heads = model.roi_head.bbox_head
    for head in heads if isinstance(heads, list) else [heads]:
        head.update(num_classes=3, in_channels=64, fc_out_channels=256)
    rcnn = model.train_cfg.rcnn
    for stage in rcnn if isinstance(rcnn, list) else [rcnn]:
        stage.sampler.num = 128
    # fewer proposals and RoIs keep the test fast; the method is unchanged
    model.train_cfg.rpn_proposal.update(nms_pre=500, max_per_img=300)
    return DETECTORS.build(model)


def _overfit(model, batch, max_iters, lr=2e-3):
    """AdamW with a 5-iteration warm-up and a linear decay over ``max_iters``; stops early
    once the loss of the last 3 iterations is 6x below that of the first 3."""
    img, metas, boxes, labels = batch
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4, fused=True)
    model.train()
    history = []
    for it in range(max_iters):
        for group in optimizer.param_groups:
            group['lr'] = lr * min(1.0, (it + 1) / 5) * (1 - it / max_iters)
        out = model.train_step(dict(img=img, img_metas=metas, gt_bboxes=boxes,
                                    gt_labels=labels), optimizer)
        optimizer.zero_grad()
        out['loss'].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 35)
        optimizer.step()
        history.append(out['loss'].item())
        if it >= 20 and np.mean(history[-3:]) < np.mean(history[:3]) / 6:
            break
    return history


def _recall(model, batch, score_thr=0.3, iou_thr=0.5):
    img, metas, boxes, labels = batch
    model.eval()
    with torch.no_grad():
        results = model.simple_test(img, metas, rescale=True)
    found = total = 0
    for result, gt, gt_labels in zip(results, boxes, labels):
        for cls, dets in enumerate(result):
            dets = torch.from_numpy(dets[dets[:, 4] > score_thr, :4])
            gt_c = gt[gt_labels == cls]
            total += len(gt_c)
            if len(dets) and len(gt_c):
                found += int((bbox_overlaps(gt_c, dets).max(1).values >= iou_thr).sum())
    return found / total


@pytest.mark.parametrize('base,iters', [
    ('configs/_base_/models/faster_rcnn_r50_fpn.py', 100),
    ('configs/_base_/models/cascade_rcnn_r50_fpn.py', 100),
])
def test_overfits_four_bccd_images(bccd_voc_root, base, iters):
    torch.manual_seed(0)
    batch = _batch(bccd_voc_root, [f'BloodImage_{i:05d}' for i in (0, 1, 2, 3)])
    model = _model(base)
    start = time.perf_counter()
    history = _overfit(model, batch, iters)
    elapsed = time.perf_counter() - start
    first, last = np.mean(history[:3]), np.mean(history[-3:])
    recall = _recall(model, batch)
    print(f'{base}: loss {first:.3f} -> {last:.3f} in {len(history)} iters, {elapsed:.1f} s, '
          f'recall@0.5 {recall:.2f}')
    assert last < first / 5
    assert recall > 0.5
