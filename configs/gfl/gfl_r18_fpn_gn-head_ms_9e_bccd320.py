# GFL-R18-FPN on the BCCD-320 recipe (the data, schedule and wall-time budget of
# configs/retinanet/retinanet_r18_fpn_gn-head_giou_ms_9e_bccd320.py): from scratch, trainval ->
# test, multi-scale short side 288-352, batch 4, 9 epochs, SGD 0.01, warmup 100 iterations,
# steps at 6 and 8, grad clip 35. Head as MMDetection's GFL (GroupNorm towers, ATSS assignment,
# quality focal loss, reg_max=16 side distributions, GIoU weight 2 + DFL weight 0.25).
# Accuracy: not measured yet (run benchmarks/ or detforge train to measure it).
_base_ = [
    '../_base_/datasets/bccd.py',
    '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py'
]
model = dict(
    type='GFL',
    backbone=dict(
        type='ResNet',
        depth=18,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        style='pytorch',
        init_cfg=None),
    neck=dict(
        type='FPN',
        in_channels=[64, 128, 256, 512],
        out_channels=256,
        start_level=1,
        add_extra_convs='on_output',
        num_outs=5,
        relu_before_extra_convs=True),
    bbox_head=dict(
        type='GFLHead',
        num_classes=3,
        in_channels=256,
        stacked_convs=4,
        feat_channels=256,
        anchor_generator=dict(type='AnchorGenerator', ratios=[1.0], octave_base_scale=8, scales_per_octave=1,
                              strides=[8, 16, 32, 64, 128]),
        loss_cls=dict(type='QualityFocalLoss', use_sigmoid=True, beta=2.0, loss_weight=1.0),
        loss_dfl=dict(type='DistributionFocalLoss', loss_weight=0.25),
        reg_max=16,
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0)),
    train_cfg=dict(assigner=dict(type='ATSSAssigner', topk=9), allowed_border=-1, pos_weight=-1, debug=False),
    test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.6),
                  max_per_img=100))
data = dict(samples_per_gpu=4, train=dict(pipeline={{_base_.train_pipeline_ms}}))
optimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001)
optimizer_config = dict(_delete_=True, grad_clip=dict(max_norm=35, norm_type=2))
lr_config = dict(policy='step', warmup='linear', warmup_iters=100, warmup_ratio=0.001, step=[6, 8])
runner = dict(type='EpochBasedRunner', max_epochs=9)
evaluation = dict(interval=9, metric='bbox')
