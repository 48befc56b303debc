# Mask R-CNN R50-FPN laid out as Detectron2's COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml,
# so that its checkpoints, converted with
#   detforge convert detectron2 model_final.pkl mask_rcnn_d2.pth --config mask_rcnn_R_50_FPN_1x.yaml
# give Detectron2's detections and masks (benchmarks/check_d2_parity.py; docs/detectron2.md).
# Boxes: ../faster_rcnn/faster_rcnn_r50_fpn_d2.py (the same YAML chain without MASK_ON). The
# mask branch is Detectron2's MaskRCNNConvUpsampleHead: RoIs pooled 14x14 (ROIAlignV2 =
# aligned RoIAlign, sampling ratio 0) from P2-P5 by ROIPooler's level rule, 4 x (3x3 conv 256
# + ReLU), 2x2 deconv + ReLU, a 1x1 conv per class -> 28x28 logits. At test the RoIs are the
# final detections (clipped to the network input), the mask of the detected class goes
# through a sigmoid and is pasted into the original image at the rescaled, clipped box by
# bilinear grid_sample at pixel centres, then thresholded at 0.5 (Detectron2's
# paste_masks_in_image: the same paste as MMDetection 2.x's, paste_mode='mmdet').
_base_ = '../faster_rcnn/faster_rcnn_r50_fpn_d2.py'
model = dict(
    type='MaskRCNN',
    roi_head=dict(
        mask_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=14, sampling_ratio=0, aligned=True),
            out_channels=256,
            featmap_strides=[4, 8, 16, 32],
            level_mapping='detectron2'),
        mask_head=dict(
            type='FCNMaskHead',
            num_convs=4,
            roi_feat_size=14,
            in_channels=256,
            conv_out_channels=256,
            num_classes=80,
            class_agnostic=False,
            paste_mode='mmdet',
            loss_mask=dict(type='CrossEntropyLoss', use_mask=True, loss_weight=1.0))),
    train_cfg=dict(rcnn=dict(mask_size=28)),
    test_cfg=dict(rcnn=dict(mask_thr_binary=0.5)))
# data: as the Faster R-CNN config's (Detectron2's input), with the gt masks for training
# and the masks evaluated too
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='ResizeShortestEdge', short_edge_length=(640, 672, 704, 736, 768, 800),
         max_size=1333, sample_style='choice', backend='pillow'),
    dict(type='RandomFlip', flip_ratio=0.5),
    dict(type='Normalize', mean=[103.530, 116.280, 123.675], std=[1.0, 1.0, 1.0], to_rgb=False),
    dict(type='Pad', size_divisor=32),
    dict(type='DefaultFormatBundle'),
    dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels', 'gt_masks']),
]
data = dict(train=dict(pipeline=train_pipeline))
evaluation = dict(metric=['bbox', 'segm'])
