# Fine-tune MMDetection's COCO RetinaNet (80 classes) to BCCD's 3 classes. load_from keeps every
# tensor but the class-specific layer (bbox_head.retina_cls, 720 -> 27 output channels), which
# starts from its fresh initialisation; the log says so in one line. The URL is MMDetection
# 2.x's model-zoo checkpoint; a file path (.pth or .safetensors) works the same.
_base_ = [
    '../_base_/models/retinanet_r50_fpn.py',
    '../_base_/datasets/bccd.py',
    '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py'
]
model = dict(bbox_head=dict(num_classes=3))
load_from = ('https://download.openmmlab.com/mmdetection/v2.0/retinanet/'
             'retinanet_r50_fpn_1x_coco/retinanet_r50_fpn_1x_coco_20200130-c2398f9e.pth')
# batch 4 on one device, starting from trained weights: a lower rate and a short schedule
optimizer = dict(type='SGD', lr=0.005, momentum=0.9, weight_decay=0.0001)
optimizer_config = dict(_delete_=True, grad_clip=dict(max_norm=35, norm_type=2))
lr_config = dict(warmup_iters=100, warmup_ratio=0.001, step=[8])
runner = dict(type='EpochBasedRunner', max_epochs=9)
