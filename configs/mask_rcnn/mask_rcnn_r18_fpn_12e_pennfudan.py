# Mask R-CNN R18-FPN trained from scratch (nothing pretrained, nothing downloaded) on the
# Penn-Fudan pedestrians (../shared/data/pennfudan, 120 training images with polygon masks):
# issue 20's recipe, compared with torchvision's MaskRCNN on the same data, transforms and
# schedule by benchmarks/bench_accuracy_mask_tv.py. 12 epochs (372 iterations) take about 53 min
# on the 2-core CPU (8.55 s/iter, benchmarks/time_recipes.py); box and mask AP on `test` in
# benchmarks/accuracy.md.
#   detforge train configs/mask_rcnn/mask_rcnn_r18_fpn_12e_pennfudan.py
_base_ = [
    '../_base_/models/mask_rcnn_r50_fpn.py',
    '../_base_/datasets/pennfudan_instance.py',
    '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py'
]
model = dict(
    backbone=dict(
        depth=18,
        frozen_stages=-1,  # from scratch every stage must learn,
        norm_eval=False,   # and batch norm must use (and update) batch statistics
        # MMDetection's default (each residual block starts as the identity) halves both APs
        # here: 12 epochs on a GPU gave box/mask AP 0.166-0.191/0.116-0.131 with it, 0.335/0.230
        # without (2026-12-04, benchmarks/accuracy.md)
        zero_init_residual=False,
        init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512]),
    roi_head=dict(
        bbox_head=dict(num_classes=1),
        mask_head=dict(num_classes=1)))
# batch 4 on one device: half the 2-GPU x 8 learning rate, a short warm-up, gradient clipping
optimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001)
optimizer_config = dict(_delete_=True, grad_clip=dict(max_norm=35, norm_type=2))
lr_config = dict(warmup_iters=100, warmup_ratio=0.001, step=[8, 11])
runner = dict(type='EpochBasedRunner', max_epochs=12)
checkpoint_config = dict(interval=4, max_keep_ckpts=2)
log_config = dict(interval=10)
