# Cascade Mask R-CNN R50-FPN laid out as Detectron2's Misc/cascade_mask_rcnn_R_50_FPN_1x.yaml, so
# that its checkpoints, converted with
#   detforge convert detectron2 model_final.pkl cascade_d2.pth --config cascade_mask_rcnn_R_50_FPN_1x.yaml
# give Detectron2's detections and masks (benchmarks/check_d2_parity.py; docs/detectron2.md).
# Backbone, RPN, pooling and the mask head as ../mask_rcnn/mask_rcnn_r50_fpn_d2.py. Detectron2's
# CascadeROIHeads: 3 stages of 2 x 1024 FC box heads with class-agnostic regression, box coder
# weights (10, 10, 5, 5), (20, 20, 10, 10), (30, 30, 15, 15) (target_stds = their exact
# inverses, not MMDetection's rounded 0.033 / 0.067), each stage refining the previous one's
# boxes (clipped to the image); at test the stages' softmax probabilities are averaged
# (score_average='probs'; MMDetection averages the logits) and the last stage's boxes kept;
# ONE mask head (mask_stages='last'; MMDetection has one per stage) runs on the detections.
_base_ = '../mask_rcnn/mask_rcnn_r50_fpn_d2.py'


def _stage_head(weights):
    return dict(
        type='Shared2FCBBoxHead', in_channels=256, fc_out_channels=1024, roi_feat_size=7,
        num_classes=80,
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0, 0.0, 0.0, 0.0],
                        target_stds=[1.0 / w for w in weights], clamp_shrink=False),
        reg_class_agnostic=True,
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0))


def _stage_train(iou):
    return dict(
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=iou, neg_iou_thr=iou, min_pos_iou=iou,
                      match_low_quality=False, ignore_iof_thr=-1),
        sampler=dict(type='RandomSampler', num=512, pos_fraction=0.25, neg_pos_ub=-1,
                     add_gt_as_proposals=True),
        mask_size=28, pos_weight=-1, debug=False)


model = dict(
    type='CascadeRCNN',
    roi_head=dict(
        _delete_=True,
        type='CascadeRoIHead',
        num_stages=3,
        # Detectron2 sums the stages' losses unweighted
        stage_loss_weights=[1.0, 1.0, 1.0],
        score_average='probs',
        mask_stages='last',
        bbox_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0, aligned=True),
            out_channels=256,
            featmap_strides=[4, 8, 16, 32],
            level_mapping='detectron2'),
        bbox_head=[_stage_head((10.0, 10.0, 5.0, 5.0)), _stage_head((20.0, 20.0, 10.0, 10.0)),
                   _stage_head((30.0, 30.0, 15.0, 15.0))],
        mask_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=14, sampling_ratio=0, aligned=True),
            out_channels=256,
            featmap_strides=[4, 8, 16, 32],
            level_mapping='detectron2'),
        mask_head=dict(
            type='FCNMaskHead', num_convs=4, roi_feat_size=14, in_channels=256,
            conv_out_channels=256, num_classes=80, class_agnostic=False, paste_mode='mmdet',
            loss_mask=dict(type='CrossEntropyLoss', use_mask=True, loss_weight=1.0))),
    train_cfg=dict(
        # RPN.POST_NMS_TOPK_TRAIN 2000 in this YAML
        rpn_proposal=dict(max_per_img=2000),
        rcnn=[_stage_train(0.5), _stage_train(0.6), _stage_train(0.7)]))
