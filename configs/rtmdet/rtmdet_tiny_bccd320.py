# RTMDet-tiny (MMDetection 3.x's model: CSPNeXt deepen 0.167 / widen 0.375, CSPNeXtPAFPN with 96
# channels, RTMDetSepBNHead with shared convs and per-level batch norms, dynamic soft label
# assignment, quality focal loss, GIoU) on BCCD-320 data (trainval -> test, multi-scale short
# side 288-352, from scratch), AdamW 0.004, flat-then-cosine lr, EMA of the weights.
# Not yet in it: RTMDet's mosaic/mixup pipeline and the switch to plain data for the last
# epochs. Hyper-parameters untuned for BCCD; accuracy and speed not measured yet.
_base_ = [
    '../_base_/datasets/bccd.py',
    '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py'
]
model = dict(
    type='RTMDet',
    backbone=dict(
        type='CSPNeXt',
        arch='P5',
        expand_ratio=0.5,
        deepen_factor=0.167,
        widen_factor=0.375,
        channel_attention=True,
        norm_cfg=dict(type='BN'),
        act_cfg=dict(type='SiLU', inplace=True)),
    neck=dict(
        type='CSPNeXtPAFPN',
        in_channels=[96, 192, 384],
        out_channels=96,
        num_csp_blocks=1,
        expand_ratio=0.5,
        norm_cfg=dict(type='BN'),
        act_cfg=dict(type='SiLU', inplace=True)),
    bbox_head=dict(
        type='RTMDetSepBNHead',
        num_classes=3,
        in_channels=96,
        stacked_convs=2,
        feat_channels=96,
        anchor_generator=dict(type='MlvlPointGenerator', offset=0, strides=[8, 16, 32]),
        bbox_coder=dict(type='DistancePointBBoxCoder'),
        loss_cls=dict(type='QualityFocalLoss', use_sigmoid=True, beta=2.0, loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0),
        with_objectness=False,
        exp_on_reg=False,
        share_conv=True,
        pred_kernel_size=1,
        norm_cfg=dict(type='BN'),
        act_cfg=dict(type='SiLU', inplace=True)),
    train_cfg=dict(
        assigner=dict(type='DynamicSoftLabelAssigner', topk=13),
        allowed_border=-1,
        pos_weight=-1,
        debug=False),
    test_cfg=dict(
        nms_pre=30000,
        min_bbox_size=0,
        score_thr=0.001,
        nms=dict(type='nms', iou_threshold=0.65),
        max_per_img=300))
data = dict(samples_per_gpu=4, train=dict(pipeline={{_base_.train_pipeline_ms}}))
optimizer = dict(_delete_=True, type='AdamW', lr=0.004, weight_decay=0.05,
                 paramwise_cfg=dict(norm_decay_mult=0, bias_decay_mult=0))
optimizer_config = dict(_delete_=True, grad_clip=None)
lr_config = dict(_delete_=True, policy='FlatCosineAnnealing', start_percent=0.5, min_lr_ratio=0.05,
                 warmup='linear', warmup_iters=100, warmup_ratio=0.001)
runner = dict(type='EpochBasedRunner', max_epochs=24)
custom_hooks = [dict(type='ExpMomentumEMAHook', momentum=0.0002, priority=49)]
evaluation = dict(interval=24, metric='bbox')
