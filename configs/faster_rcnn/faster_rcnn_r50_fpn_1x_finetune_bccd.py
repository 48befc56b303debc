# Fine-tune MMDetection's COCO Faster R-CNN (80 classes) to BCCD's 3 classes. load_from keeps
# every tensor but the class-specific layers (roi_head.bbox_head.fc_cls 81 -> 4 and fc_reg
# 320 -> 12 rows), which start from their fresh initialisation; the log says so in one line.
_base_ = [
    '../_base_/models/faster_rcnn_r50_fpn.py',
    '../_base_/datasets/bccd.py',
    '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py'
]
model = dict(roi_head=dict(bbox_head=dict(num_classes=3)))
load_from = ('https://download.openmmlab.com/mmdetection/v2.0/faster_rcnn/'
             'faster_rcnn_r50_fpn_1x_coco/faster_rcnn_r50_fpn_1x_coco_20200130-047c8118.pth')
optimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001)
optimizer_config = dict(_delete_=True, grad_clip=dict(max_norm=35, norm_type=2))
lr_config = dict(warmup_iters=100, warmup_ratio=0.001, step=[8])
runner = dict(type='EpochBasedRunner', max_epochs=9)
