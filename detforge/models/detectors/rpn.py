"""RPN: the region proposal network trained and evaluated on its own."""
from __future__ import annotations

import copy

import numpy as np

from detforge.registry import BACKBONES, DETECTORS, HEADS, NECKS, BuildError

from .base import BaseDetector
from .two_stage import _build, parse_two_stage_cfgs

__all__ = ['RPN']


@DETECTORS.register_module()
class RPN(BaseDetector):
    """Backbone + neck + RPN head. ``simple_test`` returns per image one float32 (n, 5)
    array of proposals ``[x1, y1, x2, y2, objectness]`` (original-image px when rescale),
    which ``CocoDataset.evaluate(metric='proposal')`` scores as AR@100/300/1000."""

    def __init__(self, backbone, neck, rpn_head, train_cfg, test_cfg, pretrained=None,
                 init_cfg=None, data_preprocessor=None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        backbone = copy.deepcopy(dict(backbone)) if isinstance(backbone, dict) else backbone
        if pretrained is not None and isinstance(backbone, dict):
            backbone['init_cfg'] = dict(type='Pretrained', checkpoint=pretrained)
        self.backbone = _build(BACKBONES, backbone, 'backbone')
        self.neck = _build(NECKS, neck, 'neck') if neck is not None else None
        if rpn_head is None:
            raise BuildError('an RPN detector needs rpn_head=dict(type="RPNHead", ...)',
                             rpn_head, key_path=['rpn_head'])
        self.train_cfg, self.test_cfg = parse_two_stage_cfgs(
            rpn_head, None, train_cfg, test_cfg, train_stages=('rpn', 'rpn_proposal'),
            test_stages=('rpn',))
        rpn_head = copy.deepcopy(dict(rpn_head))
        rpn_head.update(train_cfg=self.train_cfg and self.train_cfg.rpn,
                        test_cfg=self.test_cfg and self.test_cfg.rpn)
        self.rpn_head = _build(HEADS, rpn_head, 'rpn_head')

    @property
    def with_rpn(self) -> bool:
        return True

    @property
    def with_roi_head(self) -> bool:
        return False

    def extract_feat(self, img):
        x = self.backbone(img)
        if self.with_neck:
            x = self.neck(x)
        return tuple(x)

    def forward_dummy(self, img):
        return self.rpn_head(self.extract_feat(img))

    def forward_train(self, img, img_metas, gt_bboxes, gt_labels=None, gt_bboxes_ignore=None,
                      **kwargs):
        """Returns ``dict(loss_rpn_cls, loss_rpn_bbox)``; class labels are not used."""
        x = self.extract_feat(self.preprocess(img, img_metas))
        losses, _ = self.rpn_head.forward_train(x, img_metas, gt_bboxes, gt_labels=None,
                                                gt_bboxes_ignore=gt_bboxes_ignore,
                                                proposal_cfg=None)
        return losses

    def simple_test(self, img, img_metas, rescale=True, **kwargs):
        x = self.extract_feat(self.preprocess(img, img_metas))
        proposal_list = self.rpn_head.simple_test_rpn(x, img_metas)
        results = []
        for proposals, meta in zip(proposal_list, img_metas):
            proposals = proposals.detach().clone()
            if rescale:
                factor = proposals.new_tensor(np.asarray(meta.get('scale_factor', 1.0),
                                                         dtype=np.float32))
                proposals[:, :4] /= factor
            results.append(proposals.cpu().numpy().astype(np.float32))
        return results
