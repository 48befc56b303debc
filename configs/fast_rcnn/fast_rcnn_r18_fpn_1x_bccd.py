# Fast R-CNN with a ResNet-18 backbone on the bundled BCCD data, from precomputed proposals.
# Make the proposal files with an RPN (trained by configs/rpn/rpn_r18_fpn_1x_bccd.py):
#   detforge test configs/rpn/rpn_r18_fpn_1x_bccd.py RPN.pth --out data/bccd/proposals/rpn_r18_fpn_1x_test.pkl
#   detforge test configs/rpn/rpn_r18_fpn_1x_bccd.py RPN.pth --out data/bccd/proposals/rpn_r18_fpn_1x_trainval.pkl \
#       --cfg-options data.test.ann_file=data/bccd/annotations/trainval.json
# (per image an (n, 5) array [x1, y1, x2, y2, score] in original-image pixels, in the
# annotation file's image order: the layout proposal_file expects.)
_base_ = [
    '../_base_/models/fast_rcnn_r50_fpn.py',
    '../_base_/datasets/bccd.py',
    '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py'
]
model = dict(
    backbone=dict(depth=18, frozen_stages=-1, norm_eval=False, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512]),
    roi_head=dict(bbox_head=dict(num_classes=3)))
data_root = 'data/bccd/'
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadProposals', num_max_proposals=2000),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', img_scale=(427, 320), keep_ratio=True),
    dict(type='RandomFlip', flip_ratio=0.5),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='Pad', size_divisor=32),
    dict(type='DefaultFormatBundle'),
    dict(type='Collect', keys=['img', 'proposals', 'gt_bboxes', 'gt_labels']),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadProposals', num_max_proposals=None),
    dict(
        type='MultiScaleFlipAug',
        img_scale=(427, 320),
        flip=False,
        transforms=[
            dict(type='Resize', keep_ratio=True),
            dict(type='RandomFlip'),
            dict(type='Normalize', **img_norm_cfg),
            dict(type='Pad', size_divisor=32),
            dict(type='ImageToTensor', keys=['img']),
            dict(type='ToTensor', keys=['proposals']),
            dict(type='ToDataContainer', fields=[dict(key='proposals', stack=False)]),
            dict(type='Collect', keys=['img', 'proposals']),
        ])
]
data = dict(
    train=dict(proposal_file=data_root + 'proposals/rpn_r18_fpn_1x_trainval.pkl',
               pipeline=train_pipeline),
    val=dict(proposal_file=data_root + 'proposals/rpn_r18_fpn_1x_test.pkl',
             pipeline=test_pipeline),
    test=dict(proposal_file=data_root + 'proposals/rpn_r18_fpn_1x_test.pkl',
              pipeline=test_pipeline))
optimizer = dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001)
optimizer_config = dict(grad_clip=dict(max_norm=35, norm_type=2))
