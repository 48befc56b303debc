# detforge's BCCD-320 recipe (issue 10): the same model size, data, 12 epochs, optimizer and
# schedule as retinanet_r18_fpn_12e_bccd320.py (the torchvision-baseline recipe), with three
# changes that MMDetection's from-scratch and dense-detector work recommends:
#   - GroupNorm (32 groups) in the head's towers: batch statistics of 4 images are noisy, and
#     the head is shared across the five levels, whose statistics differ;
#   - GIoU loss on decoded boxes (weight 2, as in ATSS/FCOS) instead of L1 on deltas;
#   - multi-scale training: short side drawn from 288-352 (long side 384-469), test at 320.
_base_ = './retinanet_r18_fpn_12e_bccd320.py'
data = dict(train=dict(pipeline={{_base_.train_pipeline_ms}}))
model = dict(
    bbox_head=dict(
        norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),
        reg_decoded_bbox=True,
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0)))
