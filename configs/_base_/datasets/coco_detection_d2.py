# COCO 2017 detection with Detectron2's input conventions (its config defaults, INPUT.* and
# MODEL.PIXEL_*): BGR images (no channel flip) minus the Caffe ImageNet mean, std 1; training
# scales the short side to one of 640..800 (max 1333) and flips half the images; testing
# scales it to 800 (max 1333). Images are resized with Pillow, as Detectron2 does for uint8
# images (OpenCV's bilinear filter rounds differently); padded to a multiple of 32.
_base_ = './coco_detection.py'
img_norm_cfg = dict(mean=[103.530, 116.280, 123.675], std=[1.0, 1.0, 1.0], to_rgb=False)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='ResizeShortestEdge', short_edge_length=(640, 672, 704, 736, 768, 800),
         max_size=1333, sample_style='choice', backend='pillow'),
    dict(type='RandomFlip', flip_ratio=0.5),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='Pad', size_divisor=32),
    dict(type='DefaultFormatBundle'),
    dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels']),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='MultiScaleFlipAug',
        img_scale=(1333, 800),
        flip=False,
        transforms=[
            dict(type='ResizeShortestEdge', short_edge_length=800, max_size=1333,
                 backend='pillow'),
            dict(type='RandomFlip'),
            dict(type='Normalize', **img_norm_cfg),
            dict(type='Pad', size_divisor=32),
            dict(type='ImageToTensor', keys=['img']),
            dict(type='Collect', keys=['img']),
        ])
]
# the data sets, loaders and evaluation of coco_detection.py, with the pipelines above
data = dict(train=dict(pipeline=train_pipeline), val=dict(pipeline=test_pipeline),
            test=dict(pipeline=test_pipeline))
