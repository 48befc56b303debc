# Faster R-CNN R50-FPN laid out as torchvision's `fasterrcnn_resnet50_fpn_v2`, so that its
# weights, converted with
#   detforge convert torchvision-fasterrcnn SRC DST
# give torchvision's proposals and detections when both get the same pixels
# (tests/test_zoo_torchvision_v2.py: seeded random models, a BCCD image at 480x640 and a batch
# of 416x554 + 300x400). What v2 changes from v1 (faster_rcnn_r50_fpn_tv.py, whose
# conventions stay: anchors, batch-shape steps, RoIAlign settings, 91 class slots, losses):
#   - ResNet-50 and the FPN with plain BatchNorm2d (the FPN's convs lose their bias);
#   - two 3x3 convs in the RPN head (RPNHead(conv_depth=2));
#   - the box head: four 3x3 conv + BatchNorm + ReLU, then one fc of 1024
#     (FastRCNNConvFCHead((256, 7, 7), [256] * 4, [1024], norm_layer=BatchNorm2d)).
# Divergence: torchvision trains with its batch norms in train mode, frozen layers included;
# here the frozen stages' norms stay in eval.
_base_ = './faster_rcnn_r50_fpn_tv.py'
model = dict(
    backbone=dict(norm_eval=False),
    neck=dict(norm_cfg=dict(type='BN', requires_grad=True)),
    rpn_head=dict(num_convs=2),
    roi_head=dict(
        bbox_head=dict(
            type='Shared4Conv1FCBBoxHead',
            conv_out_channels=256,
            norm_cfg=dict(type='BN', requires_grad=True))))
