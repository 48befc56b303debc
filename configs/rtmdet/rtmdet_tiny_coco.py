# RTMDet-tiny on COCO: MMDetection 3.x's rtmdet_tiny_8xb32-300e_coco.py in 2.x form (8 GPUs x 32
# images, AdamW 0.004, 300 epochs: linear warm-up, flat lr to epoch 150 then cosine to 5%; EMA;
# CachedMosaic/CachedMixUp data for 280 epochs, then 20 epochs without them).
# Divergences from 3.x: Pad happens in collate (zeros after normalisation, not 114) and so after
# CachedMixUp; the test image is resized to fit 640x640 and padded to a multiple of 32 (3.x pads
# to 640x640 with 114); 3.x initialises the backbone from its ImageNet CSPNeXt checkpoint
# (init_cfg=dict(type='Pretrained', prefix='backbone.', checkpoint=URL)): not set here.
_base_ = [
    '../_base_/models/rtmdet_tiny.py', '../_base_/datasets/coco_detection.py',
    '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py'
]
# MMDetection 3.x's data_preprocessor: BGR mean/std, no channel swap
img_norm_cfg = dict(mean=[103.53, 116.28, 123.675], std=[57.375, 57.12, 58.395], to_rgb=False)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='CachedMosaic', img_scale=(640, 640), pad_val=114.0, max_cached_images=20,
         random_pop=False),
    dict(type='RandomResize', scale=(1280, 1280), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=(640, 640)),
    dict(type='YOLOXHSVRandomAug'),
    dict(type='RandomFlip', flip_ratio=0.5),
    dict(type='CachedMixUp', img_scale=(640, 640), ratio_range=(1.0, 1.0), max_cached_images=10,
         random_pop=False, pad_val=(114, 114, 114), prob=0.5),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='Pad', size=(640, 640)),
    dict(type='DefaultFormatBundle'),
    dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels']),
]
train_pipeline_stage2 = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomResize', scale=(640, 640), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=(640, 640)),
    dict(type='YOLOXHSVRandomAug'),
    dict(type='RandomFlip', flip_ratio=0.5),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='Pad', size=(640, 640)),
    dict(type='DefaultFormatBundle'),
    dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels']),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='MultiScaleFlipAug', img_scale=(640, 640), flip=False,
         transforms=[
             dict(type='Resize', keep_ratio=True),
             dict(type='RandomFlip'),
             dict(type='Normalize', **img_norm_cfg),
             dict(type='Pad', size_divisor=32),
             dict(type='ImageToTensor', keys=['img']),
             dict(type='Collect', keys=['img']),
         ])
]
data = dict(samples_per_gpu=32, workers_per_gpu=10,
            train=dict(pipeline=train_pipeline),
            val=dict(pipeline=test_pipeline), test=dict(pipeline=test_pipeline),
            train_dataloader=dict(persistent_workers=True))
optimizer = dict(_delete_=True, type='AdamW', lr=0.004, weight_decay=0.05,
                 paramwise_cfg=dict(norm_decay_mult=0, bias_decay_mult=0))
optimizer_config = dict(_delete_=True, grad_clip=None)
lr_config = dict(_delete_=True, policy='FlatCosineAnnealing', start_percent=0.5, min_lr_ratio=0.05,
                 warmup='linear', warmup_iters=1000, warmup_ratio=1e-5)
max_epochs = 300
stage2_num_epochs = 20
runner = dict(type='EpochBasedRunner', max_epochs=max_epochs)
checkpoint_config = dict(interval=10, max_keep_ckpts=3)
custom_hooks = [
    dict(type='ExpMomentumEMAHook', momentum=0.0002, priority=49),
    dict(type='PipelineSwitchHook', switch_epoch=max_epochs - stage2_num_epochs,
         switch_pipeline=train_pipeline_stage2),
]
evaluation = dict(interval=10, metric='bbox')
auto_scale_lr = dict(enable=False, base_batch_size=256)
