"""Mask R-CNN equals torchvision's ``maskrcnn_resnet50_fpn`` when given its weights.

A randomly initialised (seeded) torchvision model, its class logits scaled (by 0.5: unscaled,
the top scores are within float rounding of each other near 1, and their order would be a
tie-break) so that 100 detections pass torchvision's default score threshold (0.05) with
distinct scores, is converted with
``detforge convert torchvision-maskrcnn``'s key mapping and loaded into the model of
``configs/mask_rcnn/mask_rcnn_r50_fpn_tv.py``. On one PennFudan image resized to 320x240
(torchvision's resize told to keep that size; the sizes where Faster R-CNN parity holds
today) both give the same boxes (1e-2 px), scores (1e-4), labels, 28x28 mask probabilities
(1e-4) and pasted masks (per-instance IoU >= 0.999).

Needs the config's ``clamp_shrink=False`` box coders: random weights predict boxes shrunk past
MMDetection's lower clamp of ``dw``/``dh``, which torchvision does not have.
"""
import cv2
import numpy as np
import pytest
import torch
import torchvision

from detforge.config import Config
from detforge.converters.torchvision_maskrcnn import convert_state_dict
from detforge.registry import DETECTORS
from detforge.structures.bbox import bbox2roi

H, W = 240, 320
LOGIT_SCALE = 0.5  # random logits: scores 0.24..0.31, above 0.05 and far from saturated ties


@pytest.fixture(scope='module')
def models():
    torch.manual_seed(0)
    tv = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, min_size=H, max_size=W)
    with torch.no_grad():
        tv.roi_heads.box_predictor.cls_score.weight.mul_(LOGIT_SCALE)
    cfg = Config.fromfile('configs/mask_rcnn/mask_rcnn_r50_fpn_tv.py')
    ours = DETECTORS.build(cfg.model)
    missing, unexpected = ours.load_state_dict(convert_state_dict(tv.state_dict()), strict=True)
    assert not missing and not unexpected
    return tv.eval(), ours.eval()


@pytest.fixture(scope='module')
def sample(shared_data):
    img = cv2.imread(str(shared_data / 'pennfudan' / 'images' / 'FudanPed00001.jpg'))
    img = cv2.resize(img, (W, H), interpolation=cv2.INTER_AREA)
    rgb = torch.from_numpy(img[:, :, ::-1].copy()).permute(2, 0, 1).float() / 255
    meta = dict(img_shape=(H, W, 3), ori_shape=(H, W, 3), pad_shape=(256, 320, 3),
                scale_factor=np.ones(4, np.float32), flip=False)
    return dict(rgb=rgb, metas=[meta])


def test_converted_mask_branch(models):
    tv, ours = models
    head = ours.roi_head.mask_head
    assert head.conv_logits.out_channels == 90
    torch.testing.assert_close(head.conv_logits.weight[0],
                               tv.roi_heads.mask_predictor.mask_fcn_logits.weight[1])
    torch.testing.assert_close(head.convs[2].conv.weight, tv.roi_heads.mask_head[2][0].weight)


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else np.logical_and(a, b).sum() / union


@torch.no_grad()
def test_same_boxes_scores_and_masks(models, sample):
    tv, ours = models
    images, _ = tv.transform([sample['rgb']])
    assert tuple(images.image_sizes[0]) == (H, W)
    tv_feats = tv.backbone(images.tensors)
    tv_props = tv.rpn(images, tv_feats)[0]
    tv_dets = tv.roi_heads(tv_feats, tv_props, images.image_sizes)[0][0]
    tv_final = tv.transform.postprocess([dict(tv_dets)], images.image_sizes, [(H, W)])[0]
    n = len(tv_dets['boxes'])
    assert 5 <= n <= 100, f'{n} torchvision detections: rescale LOGIT_SCALE'

    metas = sample['metas']
    x = ours.extract_feat(images.tensors)  # the same floats (see the Faster R-CNN parity test)
    props = ours.rpn_head.simple_test_rpn(x, metas)
    dets, labels = ours.roi_head.simple_test_bboxes(x, metas, props, ours.roi_head.test_cfg)
    dets, labels = dets[0], labels[0]
    assert len(dets) == n
    torch.testing.assert_close(dets[:, :4], tv_dets['boxes'], rtol=0, atol=1e-2)
    torch.testing.assert_close(dets[:, 4], tv_dets['scores'], rtol=0, atol=1e-4)
    assert torch.equal(labels + 1, tv_dets['labels'])

    # mask probabilities of each detection's class, before pasting
    logits = ours.roi_head._mask_forward(x, bbox2roi([dets[:, :4]]))
    probs = ours.roi_head.mask_head.mask_probs(logits, labels)
    torch.testing.assert_close(probs, tv_dets['masks'][:, 0], rtol=0, atol=1e-4)

    # pasted into the image and thresholded at 0.5, through the detector's own test path
    bbox_result, segm_result = ours.roi_head.simple_test(x, props, metas, rescale=True)[0]
    tv_masks = (tv_final['masks'][:, 0] >= 0.5).numpy()
    ious = []
    for c, masks in enumerate(segm_result):
        idx = torch.nonzero(labels == c).flatten().tolist()
        assert len(masks) == len(idx) == len(bbox_result[c])
        for i, mask in zip(idx, masks):
            assert mask.shape == (H, W) and mask.dtype == bool
            ious.append(_mask_iou(mask, tv_masks[i]))
    assert len(ious) == n and min(ious) >= 0.999, sorted(ious)[:5]
