"""OHEMSampler: keep the RoIs the second stage currently gets most wrong (online hard example
mining, Shrivastava et al. 2016, https://arxiv.org/abs/1604.03540), as MMDetection 2.x does."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from detforge.registry import BBOX_SAMPLERS

from .assign_result import AssignResult
from .samplers import RandomSampler, SamplingResult

__all__ = ['OHEMSampler', 'RoILoss']


class RoILoss:
    """The classification loss of each box of one image under the RoI head as it is now.

    Args:
        cls_score_of: ``rois (n, 5) -> cls_score (n, num_classes + 1)``, the head's forward
            on this image's features (extractor, shared head, bbox head).
        bbox_head: the head whose ``loss`` ranks the boxes; its ``num_classes`` is the
            background label.
    """

    def __init__(self, cls_score_of: Callable[[Tensor], Tensor], bbox_head):
        self.cls_score_of = cls_score_of
        self.bbox_head = bbox_head

    @property
    def background_label(self) -> int:
        return self.bbox_head.num_classes

    def __call__(self, boxes: Tensor, labels: Tensor) -> Tensor:
        """boxes (n, 4) px, labels (n,) -> per-box cross-entropy (n,), without gradient."""
        from detforge.structures.bbox import bbox2roi
        with torch.no_grad():
            rois = bbox2roi([boxes])
            cls_score = self.cls_score_of(rois)
            return self.bbox_head.loss(cls_score, None, rois, labels,
                                       cls_score.new_ones(cls_score.size(0)), None, None,
                                       reduction_override='none')['loss_cls']


@BBOX_SAMPLERS.register_module()
class OHEMSampler(RandomSampler):
    """``sampler=dict(type='OHEMSampler', num=512, pos_fraction=0.25, neg_pos_ub=-1,
    add_gt_as_proposals=True)`` in ``train_cfg.rcnn``.

    The quotas are :class:`RandomSampler`'s (``num * pos_fraction`` positives at most, the
    negatives fill up to ``num``, ``neg_pos_ub`` bounds negatives per positive). Within a
    quota, instead of drawing at random, every candidate goes through the RoI head as it is
    now (without gradient) and the ``k`` with the highest classification loss are kept:
    positives scored against their assigned class, negatives against background. When a
    group fits its quota it is kept whole and nothing is computed. The chosen indices come
    back sorted, as MMDetection's (its ``unique``).

    The head scores the candidates in the mode it is in (training), without gradient, as
    MMDetection's does: the box heads have no dropout, and a ``ResLayer`` shared head with
    ``norm_eval=True`` keeps its batch norms in eval mode (with ``norm_eval=False`` this extra
    forward also updates their running statistics, in MMDetection too).

    The RoI head supplies ``roi_loss`` (a :class:`RoILoss`) when it calls :meth:`sample`;
    only the two-stage RoI heads do, so this sampler is for ``train_cfg.rcnn`` only.

    Args:
        loss_key: which loss of the bbox head ranks the candidates (MMDetection's
            ``loss_key``); only ``'loss_cls'``.
    """

    def __init__(self, num: int, pos_fraction: float, neg_pos_ub: float = -1,
                 add_gt_as_proposals: bool = True, loss_key: str = 'loss_cls',
                 context=None):
        # context: MMDetection passes the RoI head here; detforge hands over the loss at
        # sampling time instead, so the argument is accepted and unused.
        super().__init__(num, pos_fraction, neg_pos_ub, add_gt_as_proposals)
        if loss_key != 'loss_cls':
            from detforge.registry import BuildError
            raise BuildError(f"OHEMSampler ranks by 'loss_cls' only, got loss_key={loss_key!r}",
                             key_path=['loss_key'])
        self.loss_key = loss_key

    def sample(self, assign_result: AssignResult, bboxes: Tensor, gt_bboxes: Tensor,
               gt_labels: Tensor | None = None, roi_loss: RoILoss | None = None,
               **kwargs) -> SamplingResult:
        if roi_loss is None:
            raise TypeError('OHEMSampler needs the RoI head\'s roi_loss; it can only be the '
                            'sampler of train_cfg.rcnn of a two-stage detector')
        return super().sample(assign_result, bboxes, gt_bboxes, gt_labels, roi_loss=roi_loss)

    def _sample_pos(self, pos_all: Tensor, num: int, assign_result: AssignResult,
                    bboxes: Tensor, roi_loss: RoILoss = None, **kwargs) -> Tensor:
        if pos_all.numel() <= num:
            return pos_all
        return self.hardest(pos_all, num, bboxes, assign_result.labels[pos_all], roi_loss)

    def _sample_neg(self, neg_all: Tensor, num: int, assign_result: AssignResult,
                    bboxes: Tensor, roi_loss: RoILoss = None, **kwargs) -> Tensor:
        if neg_all.numel() <= num:
            return neg_all
        labels = neg_all.new_full((neg_all.numel(),), roi_loss.background_label)
        return self.hardest(neg_all, num, bboxes, labels, roi_loss)

    @staticmethod
    def hardest(inds: Tensor, num: int, bboxes: Tensor, labels: Tensor,
                roi_loss: RoILoss) -> Tensor:
        """The ``num`` of ``inds`` (m,) whose boxes ``bboxes[inds]`` have the highest loss
        against ``labels`` (m,), sorted by index."""
        loss = roi_loss(bboxes[inds], labels)
        top = loss.topk(num).indices
        return inds[top].sort().values

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f', loss_key={self.loss_key!r})'
