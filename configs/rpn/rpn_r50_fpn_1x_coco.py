# The RPN alone, scored by proposal recall (AR@100/300/1000).
_base_ = [
    '../_base_/models/rpn_r50_fpn.py',
    '../_base_/datasets/coco_detection.py',
    '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py'
]
evaluation = dict(interval=1, metric='proposal')
