"""CascadeRoIHead: Cascade R-CNN's sequence of box heads, each trained on the boxes the
previous one refined, with rising IoU thresholds (Cai & Vasconcelos, 2018)."""
from __future__ import annotations

import torch
from torch import nn

from detforge.models.postprocess import clip_and_drop_empty
from detforge.models.train_test_cfg import RoITrainConfig
from detforge.registry import HEADS, ROI_EXTRACTORS, BuildError

from .base_roi_head import BaseRoIHead, _assigner_sampler
from .test_mixins import BBoxAugTestMixin, empty_predictions, rois_of

__all__ = ['CascadeRoIHead']


@HEADS.register_module()
class CascadeRoIHead(BBoxAugTestMixin, BaseRoIHead):
    """``num_stages`` box heads run one after another.

    Training, stage ``i``: assign and sample the current boxes with ``train_cfg[i]``
    (IoU 0.5 / 0.6 / 0.7), compute the head's losses (logged as ``s{i}.loss_cls`` ...,
    weighted by ``stage_loss_weights[i]``); then decode every sampled RoI with its own deltas
    (of its target class; background RoIs use the predicted class), drop the GT boxes that
    were added as proposals, and hand the result to stage ``i + 1``.

    Testing: the same refinement without sampling; the class logits of all stages are
    averaged (as MMDetection 2.x) and the last stage's boxes are post-processed.
    Test-time augmentation: :class:`~.test_mixins.BBoxAugTestMixin` (each augmentation runs
    the whole cascade; its averaged scores and last-stage boxes are merged).

    With ``mask_head`` (Cascade Mask R-CNN; one config copied to every stage, or a list)
    each stage also gets a mask loss on its own positives (``s{i}.loss_mask``), and at test
    time every stage predicts masks for the final detections; their probabilities are
    averaged, then pasted (MMDetection 2.x). ``mask_roi_extractor=None`` shares each stage's
    box extractor.

    Detectron2's ``CascadeROIHeads`` differs in two places, chosen by two switches:
    ``score_average='probs'`` averages the stages' softmax probabilities (not their logits),
    and ``mask_stages='last'`` has one mask head (parameters ``mask_head.0.*``), trained on the
    first stage's positives (loss ``loss_mask``, unweighted) and run once on the detections.

    Args:
        num_stages: number of heads.
        stage_loss_weights: loss weight per stage, e.g. ``[1, 0.5, 0.25]``.
        bbox_roi_extractor: one config (shared by the stages) or a list.
        bbox_head: a list of ``num_stages`` box head configs (or one, copied).
        score_average: ``'logits'`` (MMDetection 2.x) or ``'probs'`` (Detectron2).
        mask_stages: ``'all'`` (a mask head per stage, MMDetection 2.x) or ``'last'``
            (Detectron2: one).
    """

    def __init__(self, num_stages, stage_loss_weights, bbox_roi_extractor=None, bbox_head=None,
                 mask_roi_extractor=None, mask_head=None, shared_head=None, train_cfg=None,
                 test_cfg=None, pretrained=None, init_cfg=None, score_average: str = 'logits',
                 mask_stages: str = 'all'):
        if len(stage_loss_weights) != num_stages:
            raise BuildError(f'stage_loss_weights has {len(stage_loss_weights)} entries but '
                             f'num_stages is {num_stages}', stage_loss_weights,
                             key_path=['stage_loss_weights'])
        if train_cfg is not None and (not isinstance(train_cfg, (list, tuple))
                                      or len(train_cfg) != num_stages):
            raise BuildError(f'the rcnn train config of a CascadeRoIHead must be a list of '
                             f'{num_stages} stage configs', train_cfg)
        for key, value, allowed in (('score_average', score_average, ('logits', 'probs')),
                                    ('mask_stages', mask_stages, ('all', 'last'))):
            if value not in allowed:
                raise BuildError(f'CascadeRoIHead: {key} must be one of {allowed}, got {value!r}',
                                 key_path=[key])
        self.num_stages = num_stages
        self.stage_loss_weights = list(stage_loss_weights)
        self.score_average = score_average
        self.mask_stages = mask_stages
        super().__init__(bbox_roi_extractor=bbox_roi_extractor, bbox_head=bbox_head,
                         mask_roi_extractor=mask_roi_extractor, mask_head=mask_head,
                         shared_head=shared_head, train_cfg=train_cfg, test_cfg=test_cfg,
                         pretrained=pretrained, init_cfg=init_cfg)

    def init_bbox_head(self, bbox_roi_extractor, bbox_head):
        if not isinstance(bbox_roi_extractor, (list, tuple)):
            bbox_roi_extractor = [bbox_roi_extractor] * self.num_stages
        if not isinstance(bbox_head, (list, tuple)):
            bbox_head = [bbox_head] * self.num_stages
        if len(bbox_head) != self.num_stages or len(bbox_roi_extractor) != self.num_stages:
            raise BuildError(f'a CascadeRoIHead with num_stages={self.num_stages} needs as '
                             f'many bbox_head (got {len(bbox_head)}) and bbox_roi_extractor '
                             f'(got {len(bbox_roi_extractor)}) configs', bbox_head,
                             key_path=['bbox_head'])
        self.bbox_roi_extractor = nn.ModuleList()
        self.bbox_head = nn.ModuleList()
        for i, (ext, head) in enumerate(zip(bbox_roi_extractor, bbox_head)):
            try:
                self.bbox_roi_extractor.append(ROI_EXTRACTORS.build(ext))
            except BuildError as e:
                raise e.prefix('bbox_roi_extractor', str(i))
            try:
                self.bbox_head.append(HEADS.build(head))
            except BuildError as e:
                raise e.prefix('bbox_head', str(i))

    @classmethod
    def parse_train_cfg(cls, cfg, path=('train_cfg',)):
        """A list of :class:`RoITrainConfig`, one per stage (``train_cfg.rcnn.<i>``)."""
        if cfg is None:
            return None
        if not isinstance(cfg, (list, tuple)):
            raise BuildError('the rcnn train config of a CascadeRoIHead must be a list of '
                             'stage configs', key_path=list(path))
        return [RoITrainConfig.parse(c, [*path, str(i)]) for i, c in enumerate(cfg)]

    def init_assigner_sampler(self):
        self.bbox_assigner, self.bbox_sampler = [], []
        for i, stage_cfg in enumerate(self.train_cfg):
            assigner, sampler = _assigner_sampler(stage_cfg, ('train_cfg', str(i)))
            self.bbox_assigner.append(assigner)
            self.bbox_sampler.append(sampler)

    def _bbox_forward(self, stage, x, rois):
        extractor = self.bbox_roi_extractor[stage]
        bbox_feats = extractor(x[:extractor.num_inputs], rois)
        if self.with_shared_head:
            bbox_feats = self.shared_head(bbox_feats)
        cls_score, bbox_pred = self.bbox_head[stage](bbox_feats)
        return dict(cls_score=cls_score, bbox_pred=bbox_pred, bbox_feats=bbox_feats)

    def roi_losses(self, stage, x, num_imgs):
        """Per image, stage ``stage``'s current classification loss of any box (for OHEM)."""
        from detforge.models.task_modules import RoILoss

        def cls_score_of(feats):
            return lambda rois: self._bbox_forward(stage, feats, rois)['cls_score']
        return [RoILoss(cls_score_of(self.image_features(x, i)), self.bbox_head[stage])
                for i in range(num_imgs)]

    def forward_train(self, x, img_metas, proposal_list, gt_bboxes, gt_labels,
                      gt_bboxes_ignore=None, **kwargs):
        """Returns ``dict(s0.loss_cls, s0.acc, s0.loss_bbox, s1.loss_cls, ...)``."""
        from detforge.structures.bbox import bbox2roi
        losses = {}
        proposal_list = [p[:, :4] for p in proposal_list]
        for i in range(self.num_stages):
            head, weight = self.bbox_head[i], self.stage_loss_weights[i]
            sampling_results = self.assign_and_sample(self.bbox_assigner[i],
                                                      self.bbox_sampler[i], proposal_list,
                                                      gt_bboxes, gt_labels, gt_bboxes_ignore,
                                                      self.roi_losses(i, x, len(proposal_list)))
            rois = bbox2roi([res.bboxes for res in sampling_results])
            out = self._bbox_forward(i, x, rois)
            targets = head.get_targets(sampling_results, gt_bboxes, gt_labels,
                                       self.train_cfg[i])
            stage_losses = head.loss(out['cls_score'], out['bbox_pred'], rois, *targets)
            if self.with_mask and self.mask_stages == 'all':
                stage_losses.update(self._mask_forward_train(i, x, sampling_results,
                                                             kwargs.get('gt_masks')))
            elif self.with_mask and i == 0:  # Detectron2: one head, the first stage's samples
                losses.update(self._mask_forward_train(0, x, sampling_results,
                                                       kwargs.get('gt_masks')))
            for name, value in stage_losses.items():
                losses[f's{i}.{name}'] = value * weight if 'loss' in name else value

            if i < self.num_stages - 1:
                with torch.no_grad():
                    labels = targets[0]
                    # background RoIs are refined with the deltas of their predicted class
                    labels = torch.where(labels == head.num_classes,
                                         out['cls_score'][:, :-1].argmax(1), labels)
                    proposal_list = head.refine_bboxes(
                        rois, labels, out['bbox_pred'],
                        [res.pos_is_gt for res in sampling_results], img_metas)
        return losses

    def simple_test_bboxes(self, x, img_metas, proposal_list, rcnn_test_cfg, rescale=False):
        """Per image dets (k, 5) and labels (k,); also the per-stage boxes in
        ``self.last_stage_rois`` (list over stages of (n, 5) RoIs) for inspection."""
        from detforge.structures.bbox import bbox2roi
        counts = [len(p) for p in proposal_list]
        rois = bbox2roi([p[:, :4] for p in proposal_list])
        if rois.size(0) == 0:
            return ([rois.new_zeros(0, 5)] * len(counts),
                    [rois.new_zeros(0, dtype=torch.long)] * len(counts))
        stage_scores, stage_rois = [], []
        for i in range(self.num_stages):
            stage_rois.append(rois)
            out = self._bbox_forward(i, x, rois)
            cls_score, bbox_pred = out['cls_score'], out['bbox_pred']
            stage_scores.append(cls_score)
            if i < self.num_stages - 1:
                labels = cls_score[:, :-1].argmax(1)
                boxes = self.bbox_head[i].regress_by_class(
                    rois, labels, bbox_pred, _stack_img_shapes(img_metas, rois, counts))
                rois = boxes
        self.last_stage_rois = stage_rois
        cls_score = self._average_scores(stage_scores)

        det_bboxes, det_labels = [], []
        for i, (r, s, p) in enumerate(zip(rois.split(counts), cls_score.split(counts),
                                          bbox_pred.split(counts))):
            dets, labels = self.bbox_head[-1].get_bboxes(
                r, s, p, img_metas[i]['img_shape'], img_metas[i].get('scale_factor', 1.0),
                rescale=rescale, cfg=rcnn_test_cfg,
                score_is_prob=self.score_average == 'probs')
            if rescale and rcnn_test_cfg is not None and rcnn_test_cfg.get('clip_rescaled'):
                dets, labels = clip_and_drop_empty(dets, labels, img_metas[i]['ori_shape'])
            det_bboxes.append(dets)
            det_labels.append(labels)
        return det_bboxes, det_labels

    def _average_scores(self, stage_scores):
        """The stages' ``(n, C + 1)`` class logits averaged (``score_average='logits'``), or
        their softmax probabilities averaged (``'probs'``, Detectron2)."""
        if self.score_average == 'probs':
            stage_scores = [torch.softmax(s, dim=-1) for s in stage_scores]
        return sum(stage_scores) / float(self.num_stages)

    def simple_test(self, x, proposal_list, img_metas, proposals=None, rescale=False):
        from detforge.structures.bbox import bbox2result
        det_bboxes, det_labels = self.simple_test_bboxes(x, img_metas, proposal_list,
                                                         self.test_cfg, rescale=rescale)
        bbox_results = [bbox2result(b, l, self.bbox_head[-1].num_classes)
                        for b, l in zip(det_bboxes, det_labels)]
        if not self.with_mask:
            return bbox_results
        segm_results = self.simple_test_mask(x, img_metas, det_bboxes, det_labels, rescale)
        return list(zip(bbox_results, segm_results))

    # ------------------------------------------------------------------ mask branch
    @property
    def _mask_heads(self) -> int:
        return self.num_stages if self.mask_stages == 'all' else 1

    def init_mask_head(self, mask_roi_extractor, mask_head):
        n = self._mask_heads
        heads = mask_head if isinstance(mask_head, (list, tuple)) else [mask_head] * n
        if len(heads) != n:
            raise BuildError(f'a CascadeRoIHead with num_stages={self.num_stages} and '
                             f"mask_stages={self.mask_stages!r} needs {n} mask_head "
                             f'config(s), got {len(heads)}', mask_head, key_path=['mask_head'])
        self.mask_head = nn.ModuleList()
        for i, head in enumerate(heads):
            try:
                self.mask_head.append(HEADS.build(head))
            except BuildError as e:
                raise e.prefix('mask_head', str(i))
        self.share_roi_extractor = mask_roi_extractor is None
        if not self.share_roi_extractor:
            exts = mask_roi_extractor if isinstance(mask_roi_extractor, (list, tuple)) \
                else [mask_roi_extractor] * n
            self.mask_roi_extractor = nn.ModuleList()
            for i, ext in enumerate(exts):
                try:
                    self.mask_roi_extractor.append(ROI_EXTRACTORS.build(ext))
                except BuildError as e:
                    raise e.prefix('mask_roi_extractor', str(i))

    def _mask_forward(self, stage, x, rois):
        extractor = self.bbox_roi_extractor[stage] if self.share_roi_extractor \
            else self.mask_roi_extractor[stage]
        mask_feats = extractor(x[:extractor.num_inputs], rois)
        if self.with_shared_head:
            mask_feats = self.shared_head(mask_feats)
        return self.mask_head[stage](mask_feats)

    def _mask_forward_train(self, stage, x, sampling_results, gt_masks) -> dict:
        """Stage ``stage``'s mask loss on its positive RoIs."""
        from detforge.structures.bbox import bbox2roi
        if gt_masks is None:
            raise BuildError('this RoI head has a mask_head, so training needs gt_masks: use '
                             "LoadAnnotations(with_mask=True) and 'gt_masks' in Collect's keys")
        head = self.mask_head[stage]
        pos_rois = bbox2roi([res.pos_bboxes for res in sampling_results])
        mask_pred = self._mask_forward(stage, x, pos_rois)
        targets = head.get_targets(sampling_results, gt_masks, self.train_cfg[stage])
        labels = torch.cat([res.pos_gt_labels for res in sampling_results])
        return head.loss(mask_pred, targets, labels)

    def simple_test_mask(self, x, img_metas, det_bboxes, det_labels, rescale=False):
        """Per image, per class bool masks: the stages' mask probabilities averaged (one
        head with ``mask_stages='last'``)."""
        from detforge.structures.bbox import bbox2roi
        last = self.mask_head[-1]
        if all(len(b) == 0 for b in det_bboxes):
            return [[[] for _ in range(last.num_classes)] for _ in det_bboxes]
        boxes = []
        for dets, meta in zip(det_bboxes, img_metas):
            sf = dets.new_tensor(meta.get('scale_factor', 1.0)).reshape(-1)
            boxes.append(dets[:, :4] * sf if rescale else dets[:, :4])
        rois = bbox2roi(boxes)
        labels = torch.cat(list(det_labels))
        n = self._mask_heads
        probs = sum(self.mask_head[i].mask_probs(self._mask_forward(i, x, rois), labels)
                    for i in range(n)) / n
        counts = [len(b) for b in boxes]
        return [last.paste_seg_masks(p, b, lab, self.test_cfg, meta['ori_shape'],
                                     meta.get('scale_factor', 1.0), rescale)
                for p, b, lab, meta in zip(probs.split(counts), boxes, det_labels, img_metas)]

    # ------------------------------------------------------------ test-time augmentation
    @property
    def last_bbox_head(self):
        return self.bbox_head[-1]

    def aug_boxes_and_scores(self, x, boxes, img_meta):
        """RoIs (n, 4) in one augmentation's pixels -> the cascade's last-stage per-class
        boxes (n, 4 * k) and the stages' averaged softmax scores (n, C + 1), without NMS."""
        if boxes.size(0) == 0:
            return empty_predictions(boxes, self.bbox_head[-1])
        rois = rois_of(boxes)
        stage_scores = []
        for i in range(self.num_stages):
            out = self._bbox_forward(i, x, rois)
            stage_scores.append(out['cls_score'])
            if i < self.num_stages - 1:
                labels = out['cls_score'][:, :-1].argmax(1)
                rois = self.bbox_head[i].regress_by_class(rois, labels, out['bbox_pred'],
                                                          img_meta)
        cls_score = self._average_scores(stage_scores)
        return self.bbox_head[-1].get_bboxes(rois, cls_score, out['bbox_pred'],
                                             img_meta['img_shape'],
                                             img_meta.get('scale_factor', 1.0), rescale=False,
                                             cfg=None, score_is_prob=self.score_average == 'probs')


def _stack_img_shapes(img_metas, rois, counts):
    """A meta whose ``img_shape`` is a per-RoI (n, 2) tensor ``[h, w]``, so that the whole
    batch is decoded and clipped in one call."""
    shapes = torch.tensor([[m['img_shape'][0], m['img_shape'][1]] for m in img_metas],
                          dtype=rois.dtype, device=rois.device)
    return {'img_shape': shapes.repeat_interleave(torch.tensor(counts, device=rois.device), 0)}
