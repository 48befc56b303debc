# The README demo: a RetinaNet-R18 on the bundled BCCD blood-cell data (3 classes) that trains
# from scratch in minutes on a laptop CPU. The method is RetinaNet's; the FPN and the head are
# narrower (128 channels instead of 256) and the schedule is 8 epochs (steps at 6 and 7).
# For the full-width model and the 12-epoch recipe see retinanet_r18_fpn_12e_bccd320.py.
_base_ = './retinanet_r18_fpn_1x_bccd.py'
model = dict(
    neck=dict(out_channels=128),
    bbox_head=dict(in_channels=128, feat_channels=128))
lr_config = dict(step=[6, 7])
runner = dict(type='EpochBasedRunner', max_epochs=8)
evaluation = dict(interval=2, metric='bbox')
checkpoint_config = dict(interval=2, max_keep_ckpts=2)
log_config = dict(interval=10)
