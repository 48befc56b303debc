# The README demo: a RetinaNet-R18 on the bundled BCCD blood-cell data (3 classes) that trains
# from scratch in minutes on a laptop CPU. The method is RetinaNet's with the head of detforge's
# BCCD-320 recipe (retinanet_r18_fpn_gn-head_giou_ms_9e_bccd320.py: GroupNorm in the head's
# towers, GIoU loss, multi-scale training); the FPN and the head are narrower (128 channels
# instead of 256) and the schedule is 8 epochs (steps at 6 and 7).
_base_ = './retinanet_r18_fpn_1x_bccd.py'
data = dict(train=dict(pipeline={{_base_.train_pipeline_ms}}))
model = dict(
    neck=dict(out_channels=128),
    bbox_head=dict(
        in_channels=128,
        feat_channels=128,
        norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),
        reg_decoded_bbox=True,
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0)))
lr_config = dict(step=[6, 7])
runner = dict(type='EpochBasedRunner', max_epochs=8)
evaluation = dict(interval=2, metric='bbox')
checkpoint_config = dict(interval=2, max_keep_ckpts=2)
log_config = dict(interval=10)
