# RetinaNet-R50-FPN laid out as torchvision's `retinanet_resnet50_fpn_v2`, so that its weights
# load after `detforge convert torchvision-retinanet SRC DST` and give torchvision's detections
# when both get the same pixels (tests/test_zoo_torchvision_v2.py: seeded random models, a
# BCCD image at 480x640 and a batch of 416x554 + 300x400). What v2 changes from v1
# (retinanet_r50_fpn_tv.py, whose conventions stay: anchors, batch-shape steps, 91 classes,
# per-image loss normaliser, low-quality tie-break, 1000 candidates / 300 detections):
#   - ResNet-50 with plain BatchNorm2d (eps 1e-5), not FrozenBatchNorm2d with eps 0;
#   - P6 from C5 (torchvision's LastLevelP6P7(2048, 256)), ReLU before P7;
#   - GroupNorm(32) after each of the head's tower convs (the convs lose their bias);
#   - the box loss is GIoU on decoded boxes (torchvision's `_loss_type = "giou"`).
# Divergence: torchvision trains with its batch norms in train mode, frozen layers (stem and
# layer1) included (they stop only the gradients); here the frozen stages' norms stay in eval.
_base_ = './retinanet_r50_fpn_tv.py'
model = dict(
    backbone=dict(norm_cfg=dict(_delete_=True, type='BN', requires_grad=True), norm_eval=False),
    neck=dict(add_extra_convs='on_input', relu_before_extra_convs=True),
    bbox_head=dict(
        norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),
        reg_decoded_bbox=True,
        loss_bbox=dict(_delete_=True, type='GIoULoss', loss_weight=1.0)))
