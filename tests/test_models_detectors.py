"""Detector-level behaviour not covered elsewhere: the RPN trained and scored on its own, the
``with_*`` properties of two-stage detectors, and the 1.x compat RetinaNet's loss settings."""
import copy
import warnings
import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pytest
import torch

from detforge.config import Config
from detforge.evaluation.recalls import eval_recalls
from detforge.registry import DETECTORS

CLASSES = ('RBC', 'WBC', 'Platelets')
H, W = 120, 160


def _narrow(model_cfg, channels=32):
    """ResNet-18 from scratch with a narrow FPN/RPN: the same modules, cheap on a CPU."""
    model = copy.deepcopy(model_cfg)
    model.backbone.update(depth=18, init_cfg=None, frozen_stages=-1, norm_eval=False)
    model.neck.update(in_channels=[64, 128, 256, 512], out_channels=channels)
    model.rpn_head.update(in_channels=channels, feat_channels=channels)
    return model


def _batch(voc_root, names):
    imgs, boxes, labels = [], [], []
    scale = W / 640
    for name in names:
        img = cv2.resize(cv2.imread(str(voc_root / 'JPEGImages' / f'{name}.jpg')), (W, H),
                         interpolation=cv2.INTER_AREA)
        imgs.append(torch.from_numpy(img).permute(2, 0, 1))
        b, l = [], []
        for obj in ET.parse(voc_root / 'Annotations' / f'{name}.xml').getroot().iter('object'):
            bb = obj.find('bndbox')
            b.append([float(bb.find(k).text) * scale for k in ('xmin', 'ymin', 'xmax', 'ymax')])
            l.append(CLASSES.index(obj.find('name').text.strip()))
        boxes.append(torch.tensor(b))
        labels.append(torch.tensor(l))
    metas = [dict(img_shape=(H, W, 3), ori_shape=(480, 640, 3), pad_shape=(128, W, 3),
                  scale_factor=np.full(4, scale, np.float32), flip=False) for _ in names]
    img = torch.zeros(len(names), 3, 128, W, dtype=torch.uint8)
    img[:, :, :H] = torch.stack(imgs)
    return dict(img=img, img_metas=metas, gt_bboxes=boxes, gt_labels=labels)


def test_rpn_trains_alone_and_is_scored_by_proposal_recall(repo_root, bccd_voc_root):
    torch.manual_seed(0)
    cfg = Config.fromfile(str(repo_root / 'configs/rpn/rpn_r18_fpn_1x_bccd.py'))
    rpn = DETECTORS.build(_narrow(cfg.model))
    assert rpn.with_neck and not hasattr(rpn, 'roi_head')
    batch = _batch(bccd_voc_root, ['BloodImage_00000', 'BloodImage_00001'])
    optimizer = torch.optim.AdamW(rpn.parameters(), lr=1e-3, fused=True)
    rpn.train()
    losses = []
    for _ in range(5):
        out = rpn.train_step(batch, optimizer)
        assert set(out['log_vars']) == {'loss_rpn_cls', 'loss_rpn_bbox', 'loss'}
        optimizer.zero_grad()
        out['loss'].backward()
        optimizer.step()
        losses.append(out['log_vars']['loss'])
    assert losses[-1] < losses[0]

    rpn.eval()
    with torch.no_grad():
        proposals = rpn.simple_test(batch['img'], batch['img_metas'], rescale=True)
    max_per_img = cfg.model.test_cfg.rpn.max_per_img
    for props in proposals:
        assert props.dtype == np.float32 and props.shape[1] == 5
        assert 0 < len(props) <= max_per_img
        assert np.all(np.diff(props[:, 4]) <= 0)          # sorted by objectness
        assert props[:, 2].max() <= 640 + 1e-3 and props[:, 3].max() <= 480 + 1e-3  # original px
    gts = [b.numpy() / batch['img_metas'][0]['scale_factor'] for b in batch['gt_bboxes']]
    recalls = eval_recalls(gts, proposals, proposal_nums=[100, 300, 1000], iou_thrs=[0.5])
    assert recalls.shape == (3, 1)
    assert np.all(np.diff(recalls[:, 0]) >= 0)            # AR grows with the proposal budget
    assert recalls[-1, 0] > 0


@pytest.mark.parametrize('config,rpn,roi,shared', [
    ('configs/faster_rcnn/faster_rcnn_r18_fpn_1x_bccd.py', True, True, False),
    ('configs/cascade_rcnn/cascade_rcnn_r18_fpn_1x_bccd.py', True, True, False),
    ('configs/rpn/rpn_r18_fpn_1x_bccd.py', True, False, False),
])
def test_with_properties(repo_root, config, rpn, roi, shared):
    cfg = Config.fromfile(str(repo_root / config))
    det = DETECTORS.build(_narrow(cfg.model))
    assert det.with_neck
    assert det.with_rpn is rpn and (det.rpn_head is not None) is rpn
    assert det.with_roi_head is roi and hasattr(det, 'roi_head') is roi
    assert det.with_shared_head is shared
    if roi:
        assert det.with_bbox


def test_compat_r101_keeps_its_smooth_l1_beta_and_maps_81_classes(repo_root):
    from detforge import compat
    path = repo_root.parent / 'shared' / 'compat' / 'retinanet_r101_fpn_1x.py'
    assert path.is_file(), f'{path} is missing (CI has ../shared beside the repository)'
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        cfg = compat.compat_cfg(Config.fromfile(str(path)))
        det = DETECTORS.build(cfg.model)
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)
    loss_bbox = det.bbox_head.loss_bbox
    assert type(loss_bbox).__name__ == 'SmoothL1Loss' and loss_bbox.beta == pytest.approx(0.11)
    assert det.bbox_head.num_classes == 80                  # 1.x counted the background
    scales = det.bbox_head.anchor_generator.scales
    assert torch.allclose(scales, 4 * torch.tensor([1, 2 ** (1 / 3), 2 ** (2 / 3)]))
    assert det.bbox_head.anchor_generator.strides == [(s, s) for s in (8, 16, 32, 64, 128)]
