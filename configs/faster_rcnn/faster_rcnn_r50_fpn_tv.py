# Faster R-CNN R50-FPN with torchvision's conventions, so that torchvision's
# `fasterrcnn_resnet50_fpn` weights, converted with
#   detforge convert torchvision-fasterrcnn SRC DST
# give the same proposals and detections as torchvision when both get the same pixels
# (tests/test_models_two_stage_parity.py, tests/test_models_torchvision_parity.py: seeded random
# models at 480x640, 800x1066 and a batch of 416x554 + 300x400; measured max difference
# 3.1e-5 px / 3e-8 score, 2026-12-04), and the same training losses at batch 2 (relative
# difference <= 7e-8) when every candidate is sampled.
# Pixels: torchvision resizes the normalised float image (bilinear, recompute_scale_factor)
# and pads to a multiple of 32; this config has no pipeline, and detforge's Resize (OpenCV on
# uint8) makes other pixels: resize as torchvision does for bit-comparable output and use
# Pad(size_divisor=32). Still different: random sampling draws other samples, and a proposal
# made of a gt box is assigned to that gt (MMDetection) rather than matched by IoU (torchvision),
# which differs only for exactly duplicated gt boxes. See docs/torchvision.md.
# 91 class slots as torchvision's checkpoints: 90 foreground classes (our class k is
# torchvision's label k + 1, i.e. the COCO category id) plus background.
_base_ = '../_base_/models/faster_rcnn_r50_fpn.py'

model = dict(
    backbone=dict(init_cfg=None),
    rpn_head=dict(
        # torchvision rounds its base anchors to whole pixels and steps each level's grid by
        # padded batch size // feature size (60 px on the 8-row P6 of a 480 px batch, not 64)
        anchor_generator=dict(round_base_anchors=True, stride_rule='batch_shape'),
        loss_bbox=dict(_delete_=True, type='SmoothL1Loss', beta=1.0 / 9.0, loss_weight=1.0)),
    roi_head=dict(
        bbox_roi_extractor=dict(
            # MultiScaleRoIAlign: sampling_ratio=2, aligned=False, canonical 224 px at level 4
            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=2, aligned=False),
            finest_scale=56,
            level_mapping='torchvision'),
        bbox_head=dict(
            num_classes=90,
            # torchvision's BoxCoder weights (10, 10, 5, 5)
            bbox_coder=dict(target_stds=[0.1, 0.1, 0.2, 0.2]),
            loss_bbox=dict(_delete_=True, type='SmoothL1Loss', beta=1.0 / 9.0,
                           loss_weight=1.0))),
    train_cfg=dict(
        # torchvision's Matcher(0.7, 0.3, allow_low_quality_matches=True) has no floor, and an
        # anchor claimed by a gt as its best keeps the gt it overlaps most
        rpn=dict(assigner=dict(min_pos_iou=0.0, low_quality_gt='best')),
        rpn_proposal=dict(nms_pre=2000, max_per_img=2000, min_bbox_size=1e-3)),
    test_cfg=dict(
        rpn=dict(nms_pre=1000, max_per_img=1000, min_bbox_size=1e-3),
        rcnn=dict(score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5), max_per_img=100,
                  min_bbox_size=1e-2)))
