# RTMDet-tiny (MMDetection 3.x's model: CSPNeXt deepen 0.167 / widen 0.375, CSPNeXtPAFPN with 96
# channels, RTMDetSepBNHead with shared convs and per-level batch norms, dynamic soft label
# assignment, quality focal loss, GIoU; configs/_base_/models/rtmdet_tiny.py) on BCCD-320 data
# (trainval -> test, from scratch), AdamW 0.004, flat-then-cosine lr, EMA of the weights, and RTMDet's data recipe
# at 320 px (MMDetection 3.x rtmdet_tiny_8xb32-300e_coco.py with 640 -> 320): CachedMosaic ->
# RandomResize (0.5-2x of 640) -> RandomCrop 320 -> YOLOX HSV -> flip -> CachedMixUp, and for
# the last `stage2_num_epochs` epochs (PipelineSwitchHook) no mosaic/mixup: RandomResize
# (0.5-2x of 320) -> RandomCrop 320 -> HSV -> flip.
# Divergences from 3.x: Pad happens in collate (zeros after normalisation = the mean colour,
# not 114) and after CachedMixUp, so MixUp blends into the unpadded crop; the test pipeline is
# BCCD-320's (short side 320, keep ratio). Hyper-parameters not tuned for BCCD (batch 4 instead
# of 32). Trained on the 2-core CPU: test AP 0.588 (benchmarks/accuracy.md, 2026-12-04).
_base_ = [
    '../_base_/models/rtmdet_tiny.py', '../_base_/datasets/bccd.py',
    '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py'
]
model = dict(bbox_head=dict(num_classes=3))
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='CachedMosaic', img_scale=(320, 320), pad_val=114.0, max_cached_images=20,
         random_pop=False),
    dict(type='RandomResize', scale=(640, 640), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=(320, 320)),
    dict(type='YOLOXHSVRandomAug'),
    dict(type='RandomFlip', flip_ratio=0.5),
    dict(type='CachedMixUp', img_scale=(320, 320), ratio_range=(1.0, 1.0), max_cached_images=10,
         random_pop=False, pad_val=(114, 114, 114), prob=0.5),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='Pad', size=(320, 320)),
    dict(type='DefaultFormatBundle'),
    dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels']),
]
train_pipeline_stage2 = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomResize', scale=(320, 320), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=(320, 320)),
    dict(type='YOLOXHSVRandomAug'),
    dict(type='RandomFlip', flip_ratio=0.5),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='Pad', size=(320, 320)),
    dict(type='DefaultFormatBundle'),
    dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels']),
]
# persistent workers keep the mosaic/mixup caches across epochs (as 3.x's recipe)
data = dict(samples_per_gpu=4, train=dict(pipeline=train_pipeline),
            train_dataloader=dict(persistent_workers=True))
optimizer = dict(_delete_=True, type='AdamW', lr=0.004, weight_decay=0.05,
                 paramwise_cfg=dict(norm_decay_mult=0, bias_decay_mult=0))
optimizer_config = dict(_delete_=True, grad_clip=None)
lr_config = dict(_delete_=True, policy='FlatCosineAnnealing', start_percent=0.5, min_lr_ratio=0.05,
                 warmup='linear', warmup_iters=100, warmup_ratio=0.001)
# 40 epochs: about the CPU time of the RetinaNet-R18 BCCD-320 recipe (benchmarks/accuracy.md)
max_epochs = 40
stage2_num_epochs = 5
runner = dict(type='EpochBasedRunner', max_epochs=max_epochs)
custom_hooks = [
    dict(type='ExpMomentumEMAHook', momentum=0.0002, priority=49),
    dict(type='PipelineSwitchHook', switch_epoch=max_epochs - stage2_num_epochs,
         switch_pipeline=train_pipeline_stage2),
]
evaluation = dict(interval=max_epochs, metric='bbox')
