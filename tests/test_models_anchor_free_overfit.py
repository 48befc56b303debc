"""FCOS, ATSS and GFL learn: each (ResNet-18, a narrow head, from scratch) overfits 4 BCCD
images until it finds their boxes again."""
import time

import numpy as np
import pytest
import torch

from detforge.config import Config
from detforge.models.builder import build_detector
from detforge.structures import bbox_overlaps
from test_models_overfit import make_batch

CONFIGS = {
    'fcos': 'configs/fcos/fcos_r18_fpn_gn-head_center-normbbox-centeronreg-giou_ms_9e_bccd320.py',
    'atss': 'configs/atss/atss_r18_fpn_gn-head_ms_9e_bccd320.py',
    'gfl': 'configs/gfl/gfl_r18_fpn_gn-head_ms_9e_bccd320.py',
}


def recall(model, batch, score_thr=0.3):
    """Mean over images of the fraction of boxes found (IoU > 0.5, same class, score > thr)."""
    model.eval()
    with torch.no_grad():
        results = model.simple_test(batch['img'], batch['img_metas'], rescale=False)
    model.train()
    found_per_image = []
    for result, gt, gt_labels in zip(results, batch['gt_bboxes'], batch['gt_labels']):
        dets = np.vstack(result)
        labels = np.concatenate([np.full(len(r), i) for i, r in enumerate(result)])
        keep = dets[:, 4] > score_thr
        iou = bbox_overlaps(gt, torch.from_numpy(dets[keep, :4]))
        same_class = torch.from_numpy(labels[keep])[None, :] == gt_labels[:, None]
        found_per_image.append(((iou > 0.5) & same_class).any(dim=1).float().mean().item())
    return float(np.mean(found_per_image))


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_overfits_four_bccd_images(repo_root, bccd_voc_root, name):
    torch.manual_seed(0)
    cfg = Config.fromfile(str(repo_root / CONFIGS[name]))
    # a narrower head than the config (64 channels, 2 convs): the method is unchanged
    cfg.model.bbox_head.update(feat_channels=64, stacked_convs=2)
    model = build_detector(cfg.model).train()
    batch = make_batch(bccd_voc_root)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4, fused=True)
    start, losses, found = time.perf_counter(), [], 0.0
    for step in range(1, 301):
        out = model.train_step(batch, optimizer)
        optimizer.zero_grad()
        out['loss'].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 35)
        optimizer.step()
        losses.append(out['log_vars']['loss'])
        if step >= 20 and step % 10 == 0:
            found = recall(model, batch)
            if found > 0.8:
                break
    print(f'{name}: {step} steps, loss {losses[0]:.3f} -> {np.mean(losses[-5:]):.3f}, recall {found:.2f}, '
          f'{time.perf_counter() - start:.1f} s')
    assert np.mean(losses[-5:]) < losses[0] / 2
    assert found > 0.8
