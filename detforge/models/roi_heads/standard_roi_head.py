"""StandardRoIHead: the second stage of Faster R-CNN (boxes) and Mask R-CNN (boxes + masks)."""
from __future__ import annotations

import torch

from detforge.models.postprocess import clip_and_drop_empty
from detforge.registry import HEADS, ROI_EXTRACTORS, BuildError

from .base_roi_head import BaseRoIHead
from .test_mixins import BBoxAugTestMixin, empty_predictions, rois_of

__all__ = ['StandardRoIHead']


@HEADS.register_module()
class StandardRoIHead(BBoxAugTestMixin, BaseRoIHead):
    """Pool features for proposals, classify them and refine their boxes.

    Training, per image: assign proposals (+ GT boxes) to GT with ``train_cfg.assigner``
    (``MaxIoUAssigner(0.5, 0.5)``), sample ``train_cfg.sampler`` (``RandomSampler(512,
    0.25)``); then for the batch: ``bbox2roi`` -> extractor -> bbox head -> losses.
    Testing: the same forward on all proposals, then per image softmax, per-class decoding,
    ``score_thr``, class-aware NMS and ``max_per_img`` (``test_cfg``).

    With ``mask_head`` (Mask R-CNN) the positive RoIs also get a mask loss (targets cut from
    ``gt_masks`` inside each RoI, ``train_cfg.mask_size``), and at test time the detections'
    masks are predicted and pasted into the image: ``simple_test`` then returns per image
    ``(bbox_result, segm_result)``. ``mask_roi_extractor=None`` shares the box extractor.
    Test-time augmentation: :class:`~.test_mixins.BBoxAugTestMixin` (boxes only).
    """

    def init_bbox_head(self, bbox_roi_extractor, bbox_head):
        self.bbox_roi_extractor = ROI_EXTRACTORS.build(bbox_roi_extractor)
        self.bbox_head = HEADS.build(bbox_head)

    def _bbox_forward(self, x, rois):
        """x: FPN levels (B, C, H_l, W_l); rois (n, 5) -> dict(cls_score, bbox_pred, bbox_feats)."""
        bbox_feats = self.bbox_roi_extractor(x[:self.bbox_roi_extractor.num_inputs], rois)
        if self.with_shared_head:
            bbox_feats = self.shared_head(bbox_feats)
        cls_score, bbox_pred = self.bbox_head(bbox_feats)
        return dict(cls_score=cls_score, bbox_pred=bbox_pred, bbox_feats=bbox_feats)

    def forward_dummy(self, x, proposals):
        from detforge.structures.bbox import bbox2roi
        out = self._bbox_forward(x, bbox2roi([proposals]))
        return out['cls_score'], out['bbox_pred']

    def forward_train(self, x, img_metas, proposal_list, gt_bboxes, gt_labels,
                      gt_bboxes_ignore=None, **kwargs):
        """Returns ``dict(loss_cls, loss_bbox, acc)``."""
        from detforge.structures.bbox import bbox2roi
        sampling_results = self.assign_and_sample(self.bbox_assigner, self.bbox_sampler,
                                                  proposal_list, gt_bboxes, gt_labels,
                                                  gt_bboxes_ignore,
                                                  self.roi_losses(x, len(proposal_list)))
        rois = bbox2roi([res.bboxes for res in sampling_results])
        out = self._bbox_forward(x, rois)
        targets = self.bbox_head.get_targets(sampling_results, gt_bboxes, gt_labels,
                                             self.train_cfg)
        losses = self.bbox_head.loss(out['cls_score'], out['bbox_pred'], rois, *targets)
        if self.with_mask:
            losses.update(self._mask_forward_train(x, sampling_results, kwargs.get('gt_masks')))
        return losses

    def roi_losses(self, x, num_imgs):
        """Per image, the head's current classification loss of any box (for OHEM)."""
        from detforge.models.task_modules import RoILoss

        def cls_score_of(feats):
            return lambda rois: self._bbox_forward(feats, rois)['cls_score']
        return [RoILoss(cls_score_of(self.image_features(x, i)), self.bbox_head)
                for i in range(num_imgs)]

    def simple_test_bboxes(self, x, img_metas, proposals, rcnn_test_cfg, rescale=False):
        """proposals: per image (n_i, 4 or 5) -> per image dets (k, 5) and labels (k,)."""
        from detforge.structures.bbox import bbox2roi
        rois = bbox2roi([p[:, :4] for p in proposals])
        if rois.size(0) == 0:
            empty = rois.new_zeros(0, 5)
            return [empty] * len(proposals), [rois.new_zeros(0, dtype=torch.long)] * \
                len(proposals)
        out = self._bbox_forward(x, rois)
        counts = [len(p) for p in proposals]
        rois = rois.split(counts)
        cls_scores = out['cls_score'].split(counts)
        bbox_preds = out['bbox_pred'].split(counts) if out['bbox_pred'] is not None \
            else [None] * len(counts)
        det_bboxes, det_labels = [], []
        for i, meta in enumerate(img_metas):
            dets, labels = self.bbox_head.get_bboxes(
                rois[i], cls_scores[i], bbox_preds[i], meta['img_shape'],
                meta.get('scale_factor', 1.0), rescale=rescale, cfg=rcnn_test_cfg)
            if rescale and rcnn_test_cfg is not None and rcnn_test_cfg.get('clip_rescaled'):
                dets, labels = clip_and_drop_empty(dets, labels, img_metas[i]['ori_shape'])
            det_bboxes.append(dets)
            det_labels.append(labels)
        return det_bboxes, det_labels

    def simple_test(self, x, proposal_list, img_metas, proposals=None, rescale=False):
        """Per image, a list over classes of numpy (k, 5) arrays."""
        from detforge.structures.bbox import bbox2result
        det_bboxes, det_labels = self.simple_test_bboxes(x, img_metas, proposal_list,
                                                         self.test_cfg, rescale=rescale)
        bbox_results = [bbox2result(b, l, self.bbox_head.num_classes)
                        for b, l in zip(det_bboxes, det_labels)]
        if not self.with_mask:
            return bbox_results
        segm_results = self.simple_test_mask(x, img_metas, det_bboxes, det_labels, rescale)
        return list(zip(bbox_results, segm_results))

    # ------------------------------------------------------------------ mask branch
    def init_mask_head(self, mask_roi_extractor, mask_head):
        self.share_roi_extractor = mask_roi_extractor is None
        if not self.share_roi_extractor:
            try:
                self.mask_roi_extractor = ROI_EXTRACTORS.build(mask_roi_extractor)
            except BuildError as e:
                raise e.prefix('mask_roi_extractor')
        try:
            self.mask_head = HEADS.build(mask_head)
        except BuildError as e:
            raise e.prefix('mask_head')

    def _mask_forward(self, x, rois):
        """x: FPN levels; rois (n, 5) -> mask logits (n, C, 28, 28)."""
        extractor = self.bbox_roi_extractor if self.share_roi_extractor \
            else self.mask_roi_extractor
        mask_feats = extractor(x[:extractor.num_inputs], rois)
        if self.with_shared_head:
            mask_feats = self.shared_head(mask_feats)
        return self.mask_head(mask_feats)

    def _mask_forward_train(self, x, sampling_results, gt_masks) -> dict:
        """Mask loss on the positive RoIs only (each against its matched gt mask)."""
        from detforge.structures.bbox import bbox2roi
        if gt_masks is None:
            raise BuildError('this RoI head has a mask_head, so training needs gt_masks: use '
                             "LoadAnnotations(with_mask=True) and 'gt_masks' in Collect's keys")
        pos_rois = bbox2roi([res.pos_bboxes for res in sampling_results])
        mask_pred = self._mask_forward(x, pos_rois)
        mask_targets = self.mask_head.get_targets(sampling_results, gt_masks, self.train_cfg)
        pos_labels = torch.cat([res.pos_gt_labels for res in sampling_results])
        return self.mask_head.loss(mask_pred, mask_targets, pos_labels)

    def simple_test_mask(self, x, img_metas, det_bboxes, det_labels, rescale=False):
        """Per image, per class lists of bool masks (original image size when ``rescale``).

        det_bboxes: per image (k, 5), in original-image pixels when ``rescale``; the mask
        RoIs are these boxes back in network-input pixels."""
        from detforge.structures.bbox import bbox2roi
        num_classes = self.mask_head.num_classes
        if all(len(b) == 0 for b in det_bboxes):
            return [[[] for _ in range(num_classes)] for _ in det_bboxes]
        boxes = []
        for dets, meta in zip(det_bboxes, img_metas):
            sf = dets.new_tensor(meta.get('scale_factor', 1.0)).reshape(-1)
            boxes.append(dets[:, :4] * sf if rescale else dets[:, :4])
        mask_pred = self._mask_forward(x, bbox2roi(boxes))
        mask_preds = mask_pred.split([len(b) for b in boxes])
        return [self.mask_head.get_seg_masks(pred, b, labels, self.test_cfg, meta['ori_shape'],
                                             meta.get('scale_factor', 1.0), rescale)
                for pred, b, labels, meta in zip(mask_preds, boxes, det_labels, img_metas)]

    # ------------------------------------------------------------ test-time augmentation
    @property
    def last_bbox_head(self):
        return self.bbox_head

    def aug_boxes_and_scores(self, x, boxes, img_meta):
        """RoIs (n, 4) in one augmentation's pixels -> per-class boxes (n, 4 * k) clipped to
        its ``img_shape`` and softmax scores (n, C + 1), without NMS."""
        if boxes.size(0) == 0:
            return empty_predictions(boxes, self.bbox_head)
        rois = rois_of(boxes)
        out = self._bbox_forward(x, rois)
        return self.bbox_head.get_bboxes(rois, out['cls_score'], out['bbox_pred'],
                                         img_meta['img_shape'], img_meta.get('scale_factor', 1.0),
                                         rescale=False, cfg=None)
