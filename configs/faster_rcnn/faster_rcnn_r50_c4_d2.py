# Faster R-CNN R50-C4 laid out as Detectron2's COCO-Detection/faster_rcnn_R_50_C4_1x.yaml, so
# that its checkpoints, converted with
#   detforge convert detectron2 model_final.pkl faster_rcnn_c4_d2.pth --config faster_rcnn_R_50_C4_1x.yaml
# give Detectron2's detections (benchmarks/check_d2_parity.py; docs/detectron2.md).
# The model is MMDetection's C4 layout (../_base_/models/faster_rcnn_r50_caffe_c4.py: ResNet
# stem..res4 as the backbone, the RPN on res4 (stride 16), RoIs pooled 14x14 from res4, res5
# (stride 2) as the shared head, mean-pooled 7x7 -> box predictor) with Detectron2's
# conventions, as in ./faster_rcnn_r50_fpn_d2.py:
#   - input: BGR minus the Caffe mean, std 1, short side 800 (max 1333), Pillow resize;
#   - frozen batch norm in the backbone and in res5;
#   - anchors 32..512 px x 3 ratios on the one level, size-major (Detectron2's order; the
#     RPN's 15 outputs per position follow it), offset 0;
#   - RoIAlign aligned=True (ROIAlignV2), sampling ratio 0;
#   - dw, dh clamped from above only; RPN 6000 best then NMS 0.7, 1000 per image at test;
#   - boxes clipped to the original image after rescaling, empty ones dropped;
#   - no padding to a multiple of 32: Detectron2's plain ResNet backbone has
#     size_divisibility 0, so a batch is padded to its largest image only (its res4 map of a
#     1067 px wide image is 67 wide, not 68).
_base_ = [
    '../_base_/models/faster_rcnn_r50_caffe_c4.py',
    '../_base_/datasets/coco_detection_d2.py',
    '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py'
]
frozen_bn = dict(type='FrozenBN', requires_grad=False)
model = dict(
    data_preprocessor=dict(mean=[103.530, 116.280, 123.675], std=[1.0, 1.0, 1.0], to_rgb=False),
    backbone=dict(norm_cfg=frozen_bn),
    rpn_head=dict(
        anchor_generator=dict(
            _delete_=True,
            type='AnchorGenerator',
            strides=[16],
            ratios=[0.5, 1.0, 2.0],
            scale_major=False,
            sizes=[[32, 64, 128, 256, 512]]),
        bbox_coder=dict(clamp_shrink=False)),
    roi_head=dict(
        shared_head=dict(norm_cfg=frozen_bn),
        bbox_roi_extractor=dict(
            roi_layer=dict(type='RoIAlign', output_size=14, sampling_ratio=0, aligned=True),
            level_mapping='detectron2'),  # one level: no effect, as translated
        bbox_head=dict(bbox_coder=dict(clamp_shrink=False))),
    train_cfg=dict(
        rpn=dict(assigner=dict(min_pos_iou=0.0, low_quality_gt='best')),
        rpn_proposal=dict(nms_pre=12000, max_per_img=2000, nms=dict(type='nms', iou_threshold=0.7),
                          min_bbox_size=0)),
    test_cfg=dict(
        rpn=dict(nms_pre=6000, max_per_img=1000, nms=dict(type='nms', iou_threshold=0.7),
                 min_bbox_size=0),
        rcnn=dict(score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5), max_per_img=100,
                  clip_rescaled=True)))
optimizer = dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001)
# the pipelines of ../_base_/datasets/coco_detection_d2.py without the padding to 32
img_norm_cfg = dict(mean=[103.530, 116.280, 123.675], std=[1.0, 1.0, 1.0], to_rgb=False)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='ResizeShortestEdge', short_edge_length=(640, 672, 704, 736, 768, 800),
         max_size=1333, sample_style='choice', backend='pillow'),
    dict(type='RandomFlip', flip_ratio=0.5),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='Pad', size_divisor=1),
    dict(type='DefaultFormatBundle'),
    dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels']),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='MultiScaleFlipAug',
        img_scale=(1333, 800),
        flip=False,
        transforms=[
            dict(type='ResizeShortestEdge', short_edge_length=800, max_size=1333,
                 backend='pillow'),
            dict(type='RandomFlip'),
            dict(type='Normalize', **img_norm_cfg),
            dict(type='Pad', size_divisor=1),
            dict(type='ImageToTensor', keys=['img']),
            dict(type='Collect', keys=['img']),
        ])
]
data = dict(train=dict(pipeline=train_pipeline), val=dict(pipeline=test_pipeline),
            test=dict(pipeline=test_pipeline))
