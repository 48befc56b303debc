# Mask R-CNN R50-FPN laid out as torchvision's `maskrcnn_resnet50_fpn_v2`, so that its weights,
# converted with
#   detforge convert torchvision-maskrcnn SRC DST
# give torchvision's detections and masks (tests/test_zoo_torchvision_v2.py). What v2 changes
# from v1 (mask_rcnn_r50_fpn_tv.py, whose conventions stay: anchors, RoIAlign settings, 91
# class slots, torchvision's mask paste) is what fasterrcnn_resnet50_fpn_v2 changes (see
# ../faster_rcnn/faster_rcnn_r50_fpn_tv_v2.py: BatchNorm ResNet-50 and FPN, two RPN convs, a
# box head of four conv+BN layers and one fc), plus BatchNorm after each of the mask head's
# four convs (MaskRCNNHeads(..., norm_layer=BatchNorm2d); the convs lose their bias).
# Divergence: torchvision trains with its batch norms in train mode, frozen layers included;
# here the frozen stages' norms stay in eval.
_base_ = './mask_rcnn_r50_fpn_tv.py'
model = dict(
    backbone=dict(norm_eval=False),
    neck=dict(norm_cfg=dict(type='BN', requires_grad=True)),
    rpn_head=dict(num_convs=2),
    roi_head=dict(
        bbox_head=dict(
            type='Shared4Conv1FCBBoxHead',
            conv_out_channels=256,
            norm_cfg=dict(type='BN', requires_grad=True)),
        mask_head=dict(norm_cfg=dict(type='BN', requires_grad=True))))
