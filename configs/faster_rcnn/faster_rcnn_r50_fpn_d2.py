# Faster R-CNN R50-FPN laid out as Detectron2's COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml,
# so that its checkpoints, converted with
#   detforge convert detectron2 model_final.pkl faster_rcnn_d2.pth --config faster_rcnn_R_50_FPN_1x.yaml
# give Detectron2's detections (benchmarks/check_d2_parity.py; docs/detectron2.md). What
# differs from configs/faster_rcnn/faster_rcnn_r50_fpn_1x_coco.py (MMDetection):
#   - input: BGR minus the Caffe mean, std 1 (MODEL.PIXEL_MEAN/STD), short side 800 (max 1333)
#     resized with Pillow (_base_/datasets/coco_detection_d2.py);
#   - ResNet with the stride on the 1x1 conv (RESNETS.STRIDE_IN_1X1, MSRA weights) and frozen
#     batch norm (eps 1e-5); FPN top-down upsampling by 2, P6 by max-pooling P5;
#   - box deltas dw, dh are clamped from above only (Box2BoxTransform's scale_clamp);
#   - RoIs go to FPN levels by ROIPooler's rule (canonical 224 px at level 4, eps 1e-8);
#   - after rescaling to the original image, boxes are clipped and the empty ones dropped
#     (detector_postprocess);
#   - training: RPN low-quality matches keep the anchor's own best gt with no IoU floor.
# Same as MMDetection's: anchors 32..512 px x 3 ratios at offset 0, RPN 1000 best per level
# then NMS 0.7 and 1000 per image at test, RoIAlign aligned=True sampling_ratio=0, 2 x 1024
# FC, box coder weights (10, 10, 5, 5) ~ stds (0.1, 0.1, 0.2, 0.2), score 0.05, NMS 0.5, 100.
_base_ = [
    '../_base_/models/faster_rcnn_r50_fpn.py',
    '../_base_/datasets/coco_detection_d2.py',
    '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py'
]
model = dict(
    data_preprocessor=dict(mean=[103.530, 116.280, 123.675], std=[1.0, 1.0, 1.0], to_rgb=False),
    backbone=dict(
        style='caffe',
        norm_cfg=dict(type='FrozenBN', requires_grad=False),
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint='open-mmlab://detectron2/resnet50_caffe')),
    neck=dict(upsample_cfg=dict(scale_factor=2, mode='nearest')),
    rpn_head=dict(
        # Detectron2's DefaultAnchorGenerator: one size per level (so the size-major order is
        # MMDetection's too), offset 0
        anchor_generator=dict(
            _delete_=True,
            type='AnchorGenerator',
            strides=[4, 8, 16, 32, 64],
            ratios=[0.5, 1.0, 2.0],
            scale_major=False,
            sizes=[[32], [64], [128], [256], [512]]),
        bbox_coder=dict(clamp_shrink=False)),
    roi_head=dict(
        bbox_roi_extractor=dict(
            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0, aligned=True),
            level_mapping='detectron2'),
        bbox_head=dict(bbox_coder=dict(clamp_shrink=False))),
    train_cfg=dict(rpn=dict(assigner=dict(min_pos_iou=0.0, low_quality_gt='best'))),
    test_cfg=dict(
        rpn=dict(nms_pre=1000, max_per_img=1000, nms=dict(type='nms', iou_threshold=0.7),
                 min_bbox_size=0),
        rcnn=dict(score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5), max_per_img=100,
                  clip_rescaled=True)))
