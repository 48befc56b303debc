"""RetinaNet-R18 learns: it overfits 4 BCCD images (loss falls 5x within 200 steps) and then
detects their boxes."""
import time
import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pytest
import torch

from detforge.config import Config
from detforge.models.builder import build_detector
from detforge.structures import bbox_overlaps

CLASSES = ('RBC', 'WBC', 'Platelets')
NAMES = ('BloodImage_00000', 'BloodImage_00001', 'BloodImage_00002', 'BloodImage_00003')
H, W = 120, 160  # a quarter of BCCD's 640x480: small enough for CPU


def make_batch(voc_root):
    imgs, metas, boxes, labels = [], [], [], []
    for name in NAMES:
        img = cv2.imread(str(voc_root / 'JPEGImages' / f'{name}.jpg'))
        sx, sy = W / img.shape[1], H / img.shape[0]
        img = cv2.resize(img, (W, H), interpolation=cv2.INTER_AREA)
        b, l = [], []
        for obj in ET.parse(voc_root / 'Annotations' / f'{name}.xml').findall('object'):
            bb = obj.find('bndbox')
            x1, y1, x2, y2 = (float(bb.find(k).text) for k in ('xmin', 'ymin', 'xmax', 'ymax'))
            b.append([x1 * sx, y1 * sy, x2 * sx, y2 * sy])
            l.append(CLASSES.index(obj.find('name').text.strip()))
        imgs.append(torch.from_numpy(img.transpose(2, 0, 1).copy()))
        boxes.append(torch.tensor(b, dtype=torch.float32))
        labels.append(torch.tensor(l))
        metas.append(dict(filename=name, ori_shape=(480, 640, 3), img_shape=(H, W, 3), pad_shape=(128, W, 3),
                          scale_factor=np.array([sx, sy, sx, sy], np.float32), flip=False))
    batch = torch.zeros((len(NAMES), 3, 128, W), dtype=torch.uint8)
    for i, img in enumerate(imgs):
        batch[i, :, :H] = img
    return dict(img=batch, img_metas=metas, gt_bboxes=boxes, gt_labels=labels)


@pytest.mark.slow
def test_retinanet_r18_overfits_four_bccd_images(repo_root, bccd_voc_root):
    torch.manual_seed(0)
    cfg = Config.fromfile(str(repo_root / 'configs/retinanet/retinanet_r18_fpn_1x_bccd.py'))
    # a narrower head than the config (64 channels, 2 convs): the method is unchanged, and a
    # step is dominated by the ResNet-18's convolutions
    cfg.model.bbox_head.update(feat_channels=64, stacked_convs=2)
    model = build_detector(cfg.model).train()
    batch = make_batch(bccd_voc_root)
    # fused AdamW: torch's default CPU AdamW loops over the parameters in Python (~30% of a step)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4, fused=True)
    start = time.perf_counter()
    losses = []
    for step in range(200):
        out = model.train_step(batch, optimizer)
        optimizer.zero_grad()
        out['loss'].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 35)
        optimizer.step()
        losses.append(out['log_vars']['loss'])
        if step >= 20 and np.mean(losses[-5:]) < losses[0] / 8:
            break
    print(f'{len(losses)} steps, loss {losses[0]:.3f} -> {np.mean(losses[-5:]):.3f}, '
          f'{time.perf_counter() - start:.1f} s')
    assert np.mean(losses[-5:]) < losses[0] / 5

    model.eval()
    with torch.no_grad():
        results = model.simple_test(batch['img'], batch['img_metas'], rescale=False)
    recalls = []
    for result, gt, gt_labels in zip(results, batch['gt_bboxes'], batch['gt_labels']):
        dets = np.vstack(result)
        labels = np.concatenate([np.full(len(r), i) for i, r in enumerate(result)])
        keep = dets[:, 4] > 0.3
        iou = bbox_overlaps(gt, torch.from_numpy(dets[keep, :4]))
        same_class = torch.from_numpy(labels[keep])[None, :] == gt_labels[:, None]
        found = ((iou > 0.5) & same_class).any(dim=1)
        recalls.append(found.float().mean().item())
    print('recall per image', recalls)
    assert np.mean(recalls) > 0.75
