# Mask R-CNN R50-FPN with torchvision's conventions, so that torchvision's
# `maskrcnn_resnet50_fpn` weights, converted with
#   detforge convert torchvision-maskrcnn SRC DST
# give the same detections and masks as torchvision (tests/test_models_mask_rcnn_parity.py).
# Boxes as in ../faster_rcnn/faster_rcnn_r50_fpn_tv.py (91 class slots: our class k is
# torchvision's label k + 1, the COCO category id); the mask branch pools 14x14 with
# torchvision's MultiScaleRoIAlign settings and pastes masks as its paste_masks_in_image.
_base_ = '../faster_rcnn/faster_rcnn_r50_fpn_tv.py'

model = dict(
    type='MaskRCNN',
    # torchvision's BoxCoder clamps dw, dh from above only (MMDetection: both sides)
    rpn_head=dict(bbox_coder=dict(clamp_shrink=False)),
    roi_head=dict(
        bbox_head=dict(bbox_coder=dict(clamp_shrink=False)),
        mask_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=14, sampling_ratio=2, aligned=False),
            out_channels=256,
            featmap_strides=[4, 8, 16, 32],
            finest_scale=56,
            level_mapping='torchvision'),
        mask_head=dict(
            type='FCNMaskHead',
            num_convs=4,
            in_channels=256,
            conv_out_channels=256,
            num_classes=90,
            paste_mode='torchvision',
            loss_mask=dict(type='CrossEntropyLoss', use_mask=True, loss_weight=1.0))),
    # torchvision's mask targets: soft RoIAlign values (no 0.5 threshold), aligned=False
    train_cfg=dict(rcnn=dict(mask_size=28, mask_target_aligned=False,
                             mask_target_binarize=False)),
    test_cfg=dict(rcnn=dict(mask_thr_binary=0.5)))
