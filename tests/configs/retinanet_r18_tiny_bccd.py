# The README demo model (RetinaNet, ResNet-18 FPN, BCCD) shrunk for tests: 213x160 input,
# batch 2, no loader workers, a few iterations. The tests point the annotation files at a
# subset of a few images with --cfg-options.
_base_ = '../../configs/retinanet/retinanet_r18_fpn_1x_bccd.py'
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', img_scale=(213, 160), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='Pad', size_divisor=32),
    dict(type='DefaultFormatBundle'),
    dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels']),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='MultiScaleFlipAug',
        img_scale=(213, 160),
        flip=False,
        transforms=[
            dict(type='Resize', keep_ratio=True),
            dict(type='RandomFlip'),
            dict(type='Normalize', **img_norm_cfg),
            dict(type='Pad', size_divisor=32),
            dict(type='ImageToTensor', keys=['img']),
            dict(type='Collect', keys=['img']),
        ]),
]
data = dict(
    samples_per_gpu=2,
    workers_per_gpu=0,
    train=dict(pipeline=train_pipeline),
    val=dict(pipeline=test_pipeline),
    test=dict(pipeline=test_pipeline))
lr_config = dict(policy='step', warmup='linear', warmup_iters=2, warmup_ratio=0.1, step=[2])
runner = dict(type='EpochBasedRunner', max_epochs=1)
log_config = dict(interval=1, hooks=[dict(type='TextLoggerHook')])
# untrained scores sit near the focal-loss prior (0.01): keep them so COCO AP is computed
model = dict(test_cfg=dict(score_thr=0.0, max_per_img=20))
