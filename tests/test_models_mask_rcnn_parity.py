"""Mask R-CNN equals torchvision's ``maskrcnn_resnet50_fpn`` when given its weights.

A randomly initialised (seeded) torchvision model, its class logits scaled (by 0.5: unscaled,
the top scores are within float rounding of each other near 1, and their order would be a
tie-break) so that 100 detections pass torchvision's default score threshold (0.05) with
distinct scores, is converted with
``detforge convert torchvision-maskrcnn``'s key mapping and loaded into the model of
``configs/mask_rcnn/mask_rcnn_r50_fpn_tv.py``. On one PennFudan image at 320x240 and at 640x480
(torchvision's resize told to keep the size), and at its original 559x536 resized by
torchvision itself to 500x480 and mapped back, both give the same boxes (1e-2 px), scores (1e-4), labels, 28x28 mask probabilities
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

LOGIT_SCALE = 0.5  # random logits: scores 0.24..0.31, above 0.05 and far from saturated ties


# (min_size, max_size, image resize before torchvision): 320x240 and 640x480 given at that
# size; the original 559x536 photo resized by torchvision itself (to 500x480) and mapped back
CASES = {'320x240': (240, 320, (320, 240)), '640x480': (480, 640, (640, 480)),
         'tv_resize': (480, 640, None)}


@pytest.fixture(scope='module', params=list(CASES))
def case(request):
    return request.param


@pytest.fixture(scope='module')
def models(case):
    min_size, max_size, _ = CASES[case]
    torch.manual_seed(0)
    tv = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, min_size=min_size, max_size=max_size)
    with torch.no_grad():
        tv.roi_heads.box_predictor.cls_score.weight.mul_(LOGIT_SCALE)
    cfg = Config.fromfile('configs/mask_rcnn/mask_rcnn_r50_fpn_tv.py')
    ours = DETECTORS.build(cfg.model)
    missing, unexpected = ours.load_state_dict(convert_state_dict(tv.state_dict()), strict=True)
    assert not missing and not unexpected
    return tv.eval(), ours.eval()


@pytest.fixture(scope='module')
def sample(shared_data, case):
    img = cv2.imread(str(shared_data / 'pennfudan' / 'images' / 'FudanPed00001.jpg'))
    size = CASES[case][2]
    if size is not None:
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    rgb = torch.from_numpy(img[:, :, ::-1].copy()).permute(2, 0, 1).float() / 255
    return dict(rgb=rgb, ori_shape=img.shape)


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
    ori_h, ori_w = sample['ori_shape'][:2]
    h, w = images.image_sizes[0]
    pad_h, pad_w = images.tensors.shape[-2:]
    # torchvision maps boxes back with original / resized ratios; ours divides by resized /
    # original (the same up to float rounding)
    metas = [dict(img_shape=(h, w, 3), ori_shape=(ori_h, ori_w, 3), pad_shape=(pad_h, pad_w, 3),
                  scale_factor=np.array([w / ori_w, h / ori_h] * 2, np.float32), flip=False,
                  batch_input_shape=(pad_h, pad_w))]
    tv_feats = tv.backbone(images.tensors)
    tv_props = tv.rpn(images, tv_feats)[0]
    tv_dets = tv.roi_heads(tv_feats, tv_props, images.image_sizes)[0][0]
    tv_final = tv.transform.postprocess([dict(tv_dets)], images.image_sizes, [(ori_h, ori_w)])[0]
    n = len(tv_dets['boxes'])
    assert 5 <= n <= 100, f'{n} torchvision detections: rescale LOGIT_SCALE'

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
    print(f'mask_rcnn {tuple(images.image_sizes[0])}: {n} detections, max box diff '
          f"{(dets[:, :4] - tv_dets['boxes']).abs().max().item():.2e} px, max score diff "
          f"{(dets[:, 4] - tv_dets['scores']).abs().max().item():.2e}, mask probabilities "
          f"{(probs - tv_dets['masks'][:, 0]).abs().max().item():.2e}")
    torch.testing.assert_close(probs, tv_dets['masks'][:, 0], rtol=0, atol=1e-4)

    # pasted into the image and thresholded at 0.5, through the detector's own test path
    bbox_result, segm_result = ours.roi_head.simple_test(x, props, metas, rescale=True)[0]
    tv_masks = (tv_final['masks'][:, 0] >= 0.5).numpy()
    flat = np.concatenate([b for b in bbox_result])
    torch.testing.assert_close(torch.from_numpy(np.sort(flat[:, 4])),
                               tv_final['scores'].sort().values, rtol=0, atol=1e-4)
    ious = []
    for c, masks in enumerate(segm_result):
        idx = torch.nonzero(labels == c).flatten().tolist()
        assert len(masks) == len(idx) == len(bbox_result[c])
        for i, mask in zip(idx, masks):
            assert mask.shape == (ori_h, ori_w) and mask.dtype == bool
            ious.append(_mask_iou(mask, tv_masks[i]))
    print(f'mask_rcnn pasted masks ({ori_h}x{ori_w}): min IoU {min(ious):.6f}, '
          f'{sum(iou < 1 for iou in ious)} of {n} not identical')
    assert len(ious) == n and min(ious) >= 0.999, sorted(ious)[:5]
