"""TwoStageDetector: backbone -> neck -> RPN proposals -> RoI head (Faster R-CNN family)."""
from __future__ import annotations

import copy

from detforge.registry import BACKBONES, DETECTORS, HEADS, NECKS, BuildError
from detforge.models.train_test_cfg import (DenseTestConfig, TwoStageTestConfig,
                                            TwoStageTrainConfig, parse_for_head,
                                            parse_stage_cfgs, written_at)

from .base import BaseDetector

__all__ = ['TwoStageDetector', 'parse_two_stage_cfgs']


def parse_two_stage_cfgs(rpn_head, roi_head, train_cfg, test_cfg,
                         train_stages=('rpn', 'rpn_proposal', 'rcnn'),
                         test_stages=('rpn', 'rcnn')):
    """``train_cfg`` / ``test_cfg`` of a two-stage detector as typed records
    (:class:`TwoStageTrainConfig`, :class:`TwoStageTestConfig`; None stays None), each
    stage parsed by the head it configures; unknown stage names or keys fail with their
    path (``train_cfg.rcnn.assigner...``)."""
    with written_at(train_cfg, ['train_cfg']):
        train_rec = _parse_train(rpn_head, roi_head, train_cfg, train_stages)
    with written_at(test_cfg, ['test_cfg']):
        test_rec = _parse_test(rpn_head, roi_head, test_cfg, test_stages)
    return train_rec, test_rec


def _parse_train(rpn_head, roi_head, train_cfg, train_stages):
    train = parse_stage_cfgs(train_cfg, train_stages, ['train_cfg'], 'train config')
    train_rec = None
    if train_cfg is not None:
        proposal = train.get('rpn_proposal')
        train_rec = TwoStageTrainConfig(
            rpn=parse_for_head(rpn_head, train.get('rpn'), ['train_cfg', 'rpn'], 'train'),
            rpn_proposal=DenseTestConfig.parse(proposal, ['train_cfg', 'rpn_proposal'],
                                               max_per_img=1000),
            rcnn=parse_for_head(roi_head, train.get('rcnn'), ['train_cfg', 'rcnn'], 'train'))
    return train_rec


def _parse_test(rpn_head, roi_head, test_cfg, test_stages):
    test = parse_stage_cfgs(test_cfg, test_stages, ['test_cfg'], 'test config')
    test_rec = None
    if test_cfg is not None:
        test_rec = TwoStageTestConfig(
            rpn=parse_for_head(rpn_head, test.get('rpn'), ['test_cfg', 'rpn'], 'test'),
            rcnn=parse_for_head(roi_head, test.get('rcnn'), ['test_cfg', 'rcnn'], 'test'))
    return test_rec


def _build(registry, cfg, key):
    """A part from its config dict, or the part itself when given built."""
    if not isinstance(cfg, dict):
        return cfg
    try:
        return registry.build(cfg)
    except BuildError as e:
        raise e.prefix(key)


@DETECTORS.register_module()
class TwoStageDetector(BaseDetector):
    """Base of two-stage detectors.

    ``forward_train``: features -> RPN losses and proposals (``train_cfg.rpn_proposal``) ->
    RoI head losses on the proposals. ``simple_test``: features -> proposals
    (``test_cfg.rpn``) -> RoI head detections (``test_cfg.rcnn``).

    Args:
        backbone, neck, rpn_head, roi_head: part configs; ``rpn_head`` gets
            ``train_cfg.rpn`` / ``test_cfg.rpn`` and ``roi_head`` gets ``train_cfg.rcnn`` /
            ``test_cfg.rcnn`` as MMDetection 2.x passes them.
        train_cfg, test_cfg: see above.
        pretrained: deprecated; becomes ``backbone.init_cfg = dict(type='Pretrained', ...)``.
    """

    def __init__(self, backbone, neck=None, rpn_head=None, roi_head=None, train_cfg=None,
                 test_cfg=None, pretrained=None, init_cfg=None, data_preprocessor=None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        backbone = copy.deepcopy(dict(backbone)) if isinstance(backbone, dict) else backbone
        if pretrained is not None and isinstance(backbone, dict):
            backbone['init_cfg'] = dict(type='Pretrained', checkpoint=pretrained)
        self.backbone = _build(BACKBONES, backbone, 'backbone')
        if neck is not None:
            self.neck = _build(NECKS, neck, 'neck')
        self.train_cfg, self.test_cfg = parse_two_stage_cfgs(rpn_head, roi_head, train_cfg,
                                                             test_cfg)
        train, test = self.train_cfg, self.test_cfg
        if rpn_head is not None:
            rpn_head = copy.deepcopy(dict(rpn_head))
            rpn_head.update(train_cfg=train and train.rpn, test_cfg=test and test.rpn)
            self.rpn_head = _build(HEADS, rpn_head, 'rpn_head')
        if roi_head is not None:
            roi_head = copy.deepcopy(dict(roi_head))
            roi_head.update(train_cfg=train and train.rcnn, test_cfg=test and test.rcnn)
            self.roi_head = _build(HEADS, roi_head, 'roi_head')

    @property
    def with_rpn(self) -> bool:
        return getattr(self, 'rpn_head', None) is not None

    @property
    def with_roi_head(self) -> bool:
        return getattr(self, 'roi_head', None) is not None

    @property
    def with_shared_head(self) -> bool:
        return self.with_roi_head and self.roi_head.with_shared_head

    def extract_feat(self, img):
        """Normalised (B, 3, H, W) -> tuple of feature maps, finest first."""
        x = self.backbone(img)
        if self.with_neck:
            x = self.neck(x)
        return tuple(x)

    def forward_dummy(self, img):
        """Raw outputs for FLOP counting: RPN outputs and RoI head outputs on 1000 boxes."""
        import torch
        x = self.extract_feat(img)
        outs = ()
        if self.with_rpn:
            outs = outs + (self.rpn_head(x),)
        proposals = torch.rand(1000, 4, device=img.device) * 100
        proposals[:, 2:] += proposals[:, :2]
        return outs + (self.roi_head.forward_dummy(x, proposals),)

    def forward_train(self, img, img_metas, gt_bboxes, gt_labels, gt_bboxes_ignore=None,
                      proposals=None, **kwargs):
        """img: uint8 (B, 3, H, W) (or normalised float); gt_bboxes: per image (n, 4) xyxy
        px; gt_labels: per image (n,) 0-based. Returns a dict of losses."""
        for meta in img_metas:
            meta.setdefault('batch_input_shape', tuple(img.shape[-2:]))
        x = self.extract_feat(self.preprocess(img, img_metas))
        losses = {}
        if self.with_rpn:
            proposal_cfg = self.train_cfg.rpn_proposal if self.train_cfg is not None else None
            if proposal_cfg is None and self.test_cfg is not None:
                proposal_cfg = self.test_cfg.rpn
            rpn_losses, proposal_list = self.rpn_head.forward_train(
                x, img_metas, gt_bboxes, gt_labels=None, gt_bboxes_ignore=gt_bboxes_ignore,
                proposal_cfg=proposal_cfg)
            losses.update(rpn_losses)
        else:
            if proposals is None:
                raise BuildError(f'{type(self).__name__} has no rpn_head, so training needs '
                                 'precomputed proposals (a LoadProposals step in the pipeline)')
            proposal_list = proposals
        losses.update(self.roi_head.forward_train(x, img_metas, proposal_list, gt_bboxes,
                                                  gt_labels, gt_bboxes_ignore, **kwargs))
        return losses

    def simple_test(self, img, img_metas, proposals=None, rescale=True, **kwargs):
        """Per image, a list over classes of numpy float32 (k, 5) ``[x1, y1, x2, y2, score]``
        (original-image pixels when ``rescale``)."""
        x = self.extract_feat(self.preprocess(img, img_metas))
        if proposals is None:
            proposals = self.rpn_head.simple_test_rpn(x, img_metas)
        return self.roi_head.simple_test(x, proposals, img_metas, rescale=rescale)

    def aug_test(self, imgs, img_metas, rescale=True, proposals=None, **kwargs):
        """One image under several augmentations (a list of (1, 3, H_a, W_a) batches and
        of their metas): per image, a list over classes of (k, 5) arrays, merged as
        MMDetection 2.x (``aug_test_rpn`` then the RoI head's ``aug_test``)."""
        from detforge.models.roi_heads.test_mixins import aug_test_rpn
        if proposals is not None or not self.with_rpn:
            raise BuildError(f'{type(self).__name__}: test-time augmentation needs an '
                             'rpn_head (precomputed proposals are not supported)')
        if not hasattr(self.roi_head, 'aug_test_bboxes'):
            raise BuildError(f'{type(self.roi_head).__name__} has no test-time augmentation')
        feats = [self.extract_feat(self.preprocess(img, metas))
                 for img, metas in zip(imgs, img_metas)]
        proposal_list = aug_test_rpn(self.rpn_head, feats, img_metas)
        return self.roi_head.aug_test(feats, proposal_list, img_metas, rescale=rescale)
