# RetinaNet with a ResNet-18 backbone on the bundled BCCD blood-cell data (3 classes): the
# README demo. Trained from scratch: no pretrained weights, so nothing to download.
_base_ = [
    '../_base_/models/retinanet_r50_fpn.py',
    '../_base_/datasets/bccd.py',
    '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py'
]
model = dict(
    backbone=dict(
        depth=18,
        frozen_stages=-1,  # from scratch every stage must learn,
        norm_eval=False,   # and batch norm must use (and update) batch statistics
        init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512]),
    bbox_head=dict(num_classes=3))
# batch 4 on one device: half the 2-GPU x 8 learning rate, a short warmup, gradient clipping
optimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001)
optimizer_config = dict(_delete_=True, grad_clip=dict(max_norm=35, norm_type=2))
lr_config = dict(warmup_iters=100, warmup_ratio=0.001)
