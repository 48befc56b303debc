# BCCD-320 recipe (issue 10; ../shared/data/README.md): RetinaNet-R18-FPN from scratch,
# trainval -> test, short side 320 (long <= 427), random flip, batch 4, 12 epochs (876 iters),
# SGD lr 0.01 momentum 0.9 wd 1e-4, linear warmup 100 iterations, steps at 8 and 11, grad
# clip 35. The model matches the torchvision baseline of that recipe: ResNet-18 with batch
# norm in train mode, FPN P3-P7 with P6/P7 made from P5 (ReLU before P7).
_base_ = [
    '../_base_/models/retinanet_r50_fpn.py',
    '../_base_/datasets/bccd.py',
    '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py'
]
model = dict(
    backbone=dict(
        depth=18,
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        init_cfg=None),
    neck=dict(
        in_channels=[64, 128, 256, 512],
        add_extra_convs='on_output',
        relu_before_extra_convs=True),
    bbox_head=dict(num_classes=3))
data = dict(samples_per_gpu=4)
optimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001)
optimizer_config = dict(_delete_=True, grad_clip=dict(max_norm=35, norm_type=2))
lr_config = dict(policy='step', warmup='linear', warmup_iters=100, warmup_ratio=0.001, step=[8, 11])
runner = dict(type='EpochBasedRunner', max_epochs=12)
evaluation = dict(interval=12, metric='bbox')
