"""Test-time augmentation (flips, scales) of two-stage detectors, merged as MMDetection 2.x.

One image is seen under several augmentations (``MultiScaleFlipAug``):

1. RPN (:func:`aug_test_rpn`): each augmentation's proposals are mapped back to the
   original image and merged by one class-agnostic NMS (:func:`merge_aug_proposals`).
2. RoI head (:class:`BBoxAugTestMixin`): the merged proposals are mapped into every
   augmentation, classified and regressed there; the per-class boxes are mapped back and,
   with the class scores, averaged over the augmentations (:func:`merge_aug_bboxes`); one
   class-aware NMS (``test_cfg.rcnn``) gives the detections.

Boxes are ``xyxy`` pixels; "original" means the image before ``Resize``/``RandomFlip``.
"""
from __future__ import annotations

import torch
from torchvision.ops import nms

from detforge.registry import BuildError
from detforge.structures.bbox import bbox2result, bbox2roi, bbox_mapping, bbox_mapping_back

from detforge.models.train_test_cfg import DenseTestConfig, RoITestConfig

from .bbox_heads.bbox_head import multiclass_nms

__all__ = ['merge_aug_proposals', 'merge_aug_bboxes', 'aug_test_rpn', 'BBoxAugTestMixin']


def _aug_args(meta: dict) -> tuple:
    """(img_shape, scale_factor, flip, flip_direction) of one augmentation's meta."""
    return (meta['img_shape'], meta.get('scale_factor', 1.0), meta.get('flip', False),
            meta.get('flip_direction', 'horizontal'))


def _map_back(boxes: torch.Tensor, meta: dict) -> torch.Tensor:
    """(n, 4 * k) boxes of an augmented image -> the same shape in original pixels."""
    return bbox_mapping_back(boxes, *_aug_args(meta)).reshape(boxes.shape)


def merge_aug_proposals(aug_proposals: list[torch.Tensor], img_metas: list[dict],
                        rpn_test_cfg) -> torch.Tensor:
    """Proposals of one image under several augmentations -> one set in original pixels.

    Args:
        aug_proposals: per augmentation (n_a, 5) ``[x1, y1, x2, y2, objectness]`` in that
            augmentation's network-input pixels.
        img_metas: per augmentation the image's meta (``img_shape``, ``scale_factor``,
            ``flip``, ``flip_direction``).
        rpn_test_cfg: a :class:`DenseTestConfig` (or its dict): ``nms.iou_threshold`` and
            ``max_per_img`` (the 1.x ``nms_thr`` / ``max_num`` are translated when parsed).

    Returns:
        (k, 5) proposals sorted by objectness, ``k <= max_per_img``.
    """
    cfg = DenseTestConfig.parse(rpn_test_cfg, ('test_cfg', 'rpn'), max_per_img=1000)
    iou_thr = 0.7 if cfg.nms is None else cfg.nms.iou_threshold
    max_num = cfg.max_per_img
    recovered = []
    for proposals, meta in zip(aug_proposals, img_metas):
        recovered.append(torch.cat([_map_back(proposals[:, :4], meta), proposals[:, 4:]], 1))
    proposals = torch.cat(recovered)
    keep = nms(proposals[:, :4].contiguous(), proposals[:, 4].contiguous(), float(iou_thr))
    return proposals[keep[:max_num]]  # nms returns indices by decreasing score


def merge_aug_bboxes(aug_bboxes: list[torch.Tensor], aug_scores: list[torch.Tensor],
                     img_metas: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """Average the per-class boxes and the scores of the same RoIs over augmentations.

    Args:
        aug_bboxes: per augmentation (n, 4 * k) boxes (k = 1 or num_classes) in that
            augmentation's pixels; row i is the same RoI in every augmentation.
        aug_scores: per augmentation (n, num_classes + 1) softmax scores.
        img_metas: per augmentation the image's meta.

    Returns:
        boxes (n, 4 * k) in original pixels, scores (n, num_classes + 1).
    """
    boxes = torch.stack([_map_back(b, meta) for b, meta in zip(aug_bboxes, img_metas)])
    return boxes.mean(0), torch.stack(aug_scores).mean(0)


@torch.no_grad()
def aug_test_rpn(rpn_head, feats: list, img_metas: list[list[dict]]) -> list[torch.Tensor]:
    """Proposals of a batch seen under several augmentations, merged per image.

    Args:
        rpn_head: an RPN head with ``simple_test_rpn(x, img_metas)`` and ``test_cfg``.
        feats: per augmentation the feature levels of the batch.
        img_metas: per augmentation the batch's metas.

    Returns:
        per image (k, 5) proposals in original pixels.
    """
    num_images = len(img_metas[0])
    per_image = [[] for _ in range(num_images)]
    for x, metas in zip(feats, img_metas):
        for i, proposals in enumerate(rpn_head.simple_test_rpn(x, metas)):
            per_image[i].append(proposals)
    return [merge_aug_proposals(per_image[i], [metas[i] for metas in img_metas],
                                rpn_head.test_cfg) for i in range(num_images)]


class BBoxAugTestMixin:
    """``aug_test`` of an RoI head. The head provides
    ``aug_boxes_and_scores(x, boxes, img_meta) -> (n, 4 * k) boxes, (n, C + 1) scores``:
    its prediction for RoIs ``boxes`` (n, 4) given in that augmentation's pixels, without
    NMS, and ``last_bbox_head`` (the head whose ``num_classes`` the results use)."""

    def aug_test_bboxes(self, feats, img_metas, proposals: torch.Tensor, rcnn_test_cfg):
        """One image: proposals (n, 4 or 5) in original pixels -> dets (k, 5) in original
        pixels and labels (k,)."""
        aug_bboxes, aug_scores = [], []
        for x, metas in zip(feats, img_metas):
            boxes = bbox_mapping(proposals[:, :4], *_aug_args(metas[0]))
            bboxes, scores = self.aug_boxes_and_scores(x, boxes, metas[0])
            aug_bboxes.append(bboxes)
            aug_scores.append(scores)
        bboxes, scores = merge_aug_bboxes(aug_bboxes, aug_scores, [m[0] for m in img_metas])
        if bboxes.size(0) == 0:
            return bboxes.new_zeros(0, 5), bboxes.new_zeros(0, dtype=torch.long)
        cfg = RoITestConfig.parse(rcnn_test_cfg, ('test_cfg', 'rcnn'))
        return multiclass_nms(bboxes, scores, cfg.score_thr, cfg.nms, cfg.max_per_img,
                              cfg.min_bbox_size)

    def aug_test(self, x, proposal_list, img_metas, rescale=False):
        """x: per augmentation the feature levels of one image; proposal_list: one (n, 5)
        tensor in original pixels (from :func:`aug_test_rpn`). Returns ``[per-class
        arrays]`` (one image), in original pixels when ``rescale`` else in the first
        augmentation's scale (as MMDetection 2.x)."""
        if getattr(self, 'with_mask', False):
            raise BuildError(f'{type(self).__name__}: test-time augmentation of masks is not '
                             'implemented; use a single-scale test pipeline without flip')
        if len(proposal_list) != 1:
            raise BuildError(f'test-time augmentation runs on one image at a time, got '
                             f'{len(proposal_list)}')
        dets, labels = self.aug_test_bboxes(x, img_metas, proposal_list[0], self.test_cfg)
        if not rescale:
            scale = img_metas[0][0].get('scale_factor', 1.0)
            dets = torch.cat([bbox_mapping(dets[:, :4], None, scale, False), dets[:, 4:]], 1)
        return [bbox2result(dets, labels, self.last_bbox_head.num_classes)]


def empty_predictions(boxes: torch.Tensor, bbox_head) -> tuple[torch.Tensor, torch.Tensor]:
    """(0, 4 * k) boxes and (0, C + 1) scores for an augmentation without RoIs."""
    k = 1 if getattr(bbox_head, 'reg_class_agnostic', True) else bbox_head.num_classes
    return boxes.new_zeros(0, 4 * k), boxes.new_zeros(0, bbox_head.num_classes + 1)


def rois_of(boxes: torch.Tensor) -> torch.Tensor:
    """(n, 4) boxes of one image -> (n, 5) RoIs ``[0, x1, y1, x2, y2]``."""
    return bbox2roi([boxes])
