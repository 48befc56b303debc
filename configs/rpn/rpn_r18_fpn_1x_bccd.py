# The RPN alone with a ResNet-18 backbone on the bundled BCCD data, from scratch, scored by
# proposal recall (AR@100/300/1000; needs the COCO-format BCCD annotations).
_base_ = [
    '../_base_/models/rpn_r50_fpn.py',
    '../_base_/datasets/bccd.py',
    '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py'
]
model = dict(
    backbone=dict(
        depth=18,
        frozen_stages=-1,
        norm_eval=False,
        init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512]))
evaluation = dict(interval=1, metric='proposal')
optimizer = dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001)
optimizer_config = dict(grad_clip=dict(max_norm=35, norm_type=2))
