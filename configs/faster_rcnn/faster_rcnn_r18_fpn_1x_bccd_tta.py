# Faster R-CNN R-18 on BCCD tested with test-time augmentation: two scales, each also
# flipped (4 views per image). Proposals are merged over the views, then the RoI head's
# boxes and scores are averaged over them and one NMS follows (MMDetection 2.x's merge).
# Use with a checkpoint of faster_rcnn_r18_fpn_1x_bccd.py:
#   detforge test configs/faster_rcnn/faster_rcnn_r18_fpn_1x_bccd_tta.py CKPT --eval bbox
_base_ = './faster_rcnn_r18_fpn_1x_bccd.py'
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='MultiScaleFlipAug',
        img_scale=[(427, 320), (533, 400)],
        flip=True,
        transforms=[
            dict(type='Resize', keep_ratio=True),
            dict(type='RandomFlip'),
            dict(type='Normalize', **img_norm_cfg),
            dict(type='Pad', size_divisor=32),
            dict(type='ImageToTensor', keys=['img']),
            dict(type='Collect', keys=['img']),
        ]),
]
data = dict(val=dict(pipeline=tta_pipeline), test=dict(pipeline=tta_pipeline))
