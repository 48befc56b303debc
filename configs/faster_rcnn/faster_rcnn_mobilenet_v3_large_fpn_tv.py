# Faster R-CNN with a MobileNetV3-Large FPN laid out as torchvision's
# `fasterrcnn_mobilenet_v3_large_fpn`, so that its weights, converted with
#   detforge convert torchvision-fasterrcnn SRC DST
# give torchvision's proposals and detections when both get the same pixels
# (tests/test_zoo_torchvision_v2.py: a seeded random model, a batch of two BCCD images at
# 416x554 and 300x400). From faster_rcnn_r50_fpn_tv.py (torchvision's RoI conventions, 91
# class slots) it changes:
#   - the backbone: torchvision's mobilenet_v3_large `features`, outputs of block 13 (160
#     channels) and of the last 1x1 conv (960), both at stride 32;
#   - the FPN on those two maps plus a max-pooled third (stride 64), no extra convs;
#   - the RPN: anchors of sizes 32..512 at each of the 3 levels (15 per position), and
#     objectness >= 0.05 kept, in training and testing (torchvision's rpn_score_thresh);
#   - RoIs pooled from the first FPN map only (stride 32): torchvision's MultiScaleRoIAlign
#     reads the maps named '0'..'3', and with both at stride 32 its level mapper puts every
#     RoI on '0'.
# For torchvision's COCO weights use norm_cfg=dict(type='FrozenBN') (it freezes the norms of
# pretrained backbones) and frozen_stages=6 (trainable_backbone_layers=3).
_base_ = './faster_rcnn_r50_fpn_tv.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='MobileNetV3',
        arch='large',
        out_indices=(13, 16),
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        init_cfg=None),
    neck=dict(in_channels=[160, 960], out_channels=256, num_outs=3),
    rpn_head=dict(
        anchor_generator=dict(
            _delete_=True,
            type='AnchorGenerator',
            strides=[32, 32, 64],
            ratios=[0.5, 1.0, 2.0],
            sizes=[[32, 64, 128, 256, 512]] * 3,
            round_base_anchors=True,
            stride_rule='batch_shape')),
    roi_head=dict(bbox_roi_extractor=dict(featmap_strides=[32])),
    # torchvision filters proposals by objectness in training too
    train_cfg=dict(rpn_proposal=dict(score_thr=0.05)),
    test_cfg=dict(rpn=dict(score_thr=0.05)))
