# RetinaNet R50-FPN laid out as Detectron2's COCO-Detection/retinanet_R_50_FPN_1x.yaml, so that
# its checkpoints, converted with
#   detforge convert detectron2 model_final.pkl retinanet_d2.pth --config retinanet_R_50_FPN_1x.yaml
# give Detectron2's detections (benchmarks/check_d2_parity.py; docs/detectron2.md). What
# differs from configs/retinanet/retinanet_r50_fpn_1x_coco.py (MMDetection):
#   - input: BGR minus the Caffe mean, std 1 (MODEL.PIXEL_MEAN/STD), short side 800 (max 1333)
#     resized with Pillow (_base_/datasets/coco_detection_d2.py);
#   - ResNet with the stride on the 1x1 conv (RESNETS.STRIDE_IN_1X1, MSRA weights) and frozen
#     batch norm (eps 1e-5);
#   - P6 from C5 (LastLevelP6P7 on "res5"), ReLU before P7; top-down upsampling by 2;
#   - anchors 32 * 2^(i/3) px at offset 0, ordered size-major as Detectron2's (scale_major=False:
#     the head's channels keep Detectron2's order);
#   - box deltas dw, dh are clamped from above only (Box2BoxTransform's scale_clamp);
#   - boxes are decoded and suppressed without clipping; after rescaling to the original
#     image they are clipped and the empty ones dropped (detector_postprocess);
#   - training: low-quality matches keep the anchor's own best gt, losses divided by a moving
#     average (momentum 0.9) of the number of positives.
_base_ = [
    '../_base_/models/retinanet_r50_fpn.py',
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
    neck=dict(add_extra_convs='on_input', relu_before_extra_convs=True,
              upsample_cfg=dict(scale_factor=2, mode='nearest')),
    bbox_head=dict(
        anchor_generator=dict(
            _delete_=True,
            type='AnchorGenerator',
            strides=[8, 16, 32, 64, 128],
            ratios=[0.5, 1.0, 2.0],
            scale_major=False,
            sizes=[[x, x * 2 ** (1.0 / 3), x * 2 ** (2.0 / 3)] for x in (32, 64, 128, 256, 512)]),
        bbox_coder=dict(clip_border=False, clamp_shrink=False),
        loss_normalizer_momentum=0.9),
    train_cfg=dict(assigner=dict(low_quality_gt='best')),
    test_cfg=dict(nms_pre=1000, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5),
                  max_per_img=100, clip_rescaled=True))
optimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001)
