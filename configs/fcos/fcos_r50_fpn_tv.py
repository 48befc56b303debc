# FCOS-R50-FPN laid out as torchvision's `fcos_resnet50_fpn`, so that its weights load after
# `detforge convert torchvision-fcos SRC DST`:
#   - COCO's 91 class slots (torchvision keeps the gaps of the original category ids);
#   - P6 from P5 with a ReLU before P7 (torchvision's LastLevelP6P7(256, 256));
#   - points at the top-left corner of each stride cell (offset 0), each level's stride taken
#     as padded input // feature size (torchvision's AnchorGenerator), distances through a
#     ReLU times the level's size 8..128 (norm_on_bbox), centerness on the regression tower,
#     biased GroupNorm tower convs, no per-level scale (the converter sets them to 1);
#   - centre sampling radius 1.5, GIoU loss;
#   - inference: sqrt(class score * centerness) thresholded at 0.2 and ranked (1000 per
#     level), NMS 0.6, 100 detections per image;
#   - frozen batch norm with eps=0 as torchvision's COCO_V1 checkpoint uses it; for a model
#     built with weights=None torchvision uses BatchNorm2d (eps=1e-5): set norm_cfg.eps=1e-5.
# Training losses differ in one convention: torchvision's GIoU loss is averaged over the
# positives, MMDetection's (ours) is weighted by the centerness targets (see docs/models.md).
model = dict(
    type='FCOS',
    backbone=dict(
        type='ResNet',
        depth=50,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='FrozenBN', eps=0.0, requires_grad=False),
        norm_eval=True,
        style='pytorch',
        init_cfg=None),
    neck=dict(
        type='FPN',
        in_channels=[256, 512, 1024, 2048],
        out_channels=256,
        start_level=1,
        add_extra_convs='on_output',
        num_outs=5,
        relu_before_extra_convs=True),
    bbox_head=dict(
        type='FCOSHead',
        num_classes=91,
        in_channels=256,
        stacked_convs=4,
        feat_channels=256,
        strides=[8, 16, 32, 64, 128],
        norm_on_bbox=True,
        centerness_on_reg=True,
        center_sampling=True,
        center_sample_radius=1.5,
        conv_bias=True,
        prior_generator=dict(type='MlvlPointGenerator', strides=[8, 16, 32, 64, 128], offset=0.0,
                             stride_rule='batch_shape'),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=1.0),
        loss_centerness=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)),
    test_cfg=dict(nms_pre=1000, score_thr=0.2, nms=dict(type='nms', iou_threshold=0.6),
                  max_per_img=100, score_factor_fusion='geometric_mean'))
