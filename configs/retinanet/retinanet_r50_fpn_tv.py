# RetinaNet-R50-FPN laid out as torchvision's `retinanet_resnet50_fpn` (v1), so that its
# weights load after `detforge convert torchvision-retinanet SRC DST` and give torchvision's
# detections when both get the same pixels (tests/test_models_torchvision_parity.py: seeded
# random models at 480x640, 800x1066 and a batch of 416x554 + 300x400, measured max difference
# 0 px / 0 score; training losses at batch 2 within 2e-7 relative; 2026-12-04):
#   - anchor steps of padded batch size // feature size per level (stride_rule='batch_shape'),
#     torchvision's rule: 60 px, not 64, on the 8-row P6 map of a 480 px high batch;
#   - low-quality matches keep the anchor's own best gt (low_quality_gt='best'), and each
#     image's losses are divided by its own positives, then averaged (loss_normalization=
#     'per_image'); MMDetection's defaults are the last gt and the batch's positives;
#   - COCO's 91 class slots (torchvision keeps the gaps of the original category ids);
#   - P6 from P5 (not C5) with a ReLU before P7 (torchvision's LastLevelP6P7(256, 256));
#   - anchor sizes 32, 40, 50 ... (torchvision truncates 2**(1/3) multiples to whole pixels)
#     and base anchors rounded to whole pixels;
#   - up to 1000 candidates per level above score 0.05, NMS 0.5, 300 detections per image;
#   - frozen batch norm with eps=0, as torchvision's COCO_V1 checkpoint uses it; for a model
#     built with weights=None torchvision uses BatchNorm2d (eps=1e-5): set norm_cfg.eps=1e-5.
# Images: torchvision normalises RGB with ImageNet mean/std, as our default preprocessor does,
# then resizes the float image (bilinear, recompute_scale_factor) and pads to a multiple of 32.
# This config has no pipeline; detforge's Resize (OpenCV on uint8) makes other pixels: resize as
# torchvision does for bit-comparable output, and use Pad(size_divisor=32). docs/torchvision.md.
_base_ = ['../_base_/models/retinanet_r50_fpn.py']
model = dict(
    backbone=dict(
        frozen_stages=1,
        norm_cfg=dict(type='FrozenBN', eps=0.0, requires_grad=False),
        norm_eval=True,
        init_cfg=None),
    neck=dict(add_extra_convs='on_output', relu_before_extra_convs=True),
    bbox_head=dict(
        num_classes=91,
        anchor_generator=dict(
            _delete_=True,
            type='AnchorGenerator',
            strides=[8, 16, 32, 64, 128],
            ratios=[0.5, 1.0, 2.0],
            sizes=[[int(s * 2 ** (i / 3)) for i in range(3)] for s in (32, 64, 128, 256, 512)],
            round_base_anchors=True,
            stride_rule='batch_shape'),
        # torchvision: each image's losses over its own positives, averaged over the images
        loss_normalization='per_image'),
    # torchvision's Matcher(0.5, 0.4, allow_low_quality_matches=True): an anchor claimed by a
    # gt as its best keeps the gt it overlaps most
    train_cfg=dict(assigner=dict(low_quality_gt='best')),
    test_cfg=dict(nms_pre=1000, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5),
                  max_per_img=300))
