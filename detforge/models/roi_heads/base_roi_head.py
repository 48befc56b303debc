"""BaseRoIHead: what every RoI head shares (configs, shared head, assigner and sampler)."""
from __future__ import annotations

from torch import nn

from detforge.registry import BBOX_ASSIGNERS, BBOX_SAMPLERS, SHARED_HEADS, BuildError

__all__ = ['BaseRoIHead']


def cfg_get(cfg, key, default=None):
    """``cfg[key]`` for dicts and ConfigDicts, ``default`` when absent or cfg is None."""
    if cfg is None:
        return default
    return cfg.get(key, default) if isinstance(cfg, dict) else getattr(cfg, key, default)


class BaseRoIHead(nn.Module):
    """Holds ``train_cfg`` (the ``rcnn`` part of the detector's train config) and
    ``test_cfg``; builds the assigner and sampler of ``train_cfg`` and the optional shared
    head (a ResNet stage run on pooled features, as in the C4 detectors)."""

    def __init__(self, bbox_roi_extractor=None, bbox_head=None, mask_roi_extractor=None,
                 mask_head=None, shared_head=None, train_cfg=None, test_cfg=None,
                 pretrained=None, init_cfg=None):
        super().__init__()
        if mask_head is None and mask_roi_extractor is not None:
            raise BuildError('mask_roi_extractor is given without a mask_head', mask_roi_extractor,
                             key_path=['mask_roi_extractor'])
        if bbox_head is None:
            raise BuildError('an RoI head needs bbox_head=dict(type=...)', bbox_head,
                             key_path=['bbox_head'])
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg
        if shared_head is not None:
            self.shared_head = SHARED_HEADS.build(shared_head)
        self.init_bbox_head(bbox_roi_extractor, bbox_head)
        if mask_head is not None:
            self.init_mask_head(mask_roi_extractor, mask_head)
        if train_cfg is not None:
            self.init_assigner_sampler()

    @property
    def with_bbox(self) -> bool:
        return getattr(self, 'bbox_head', None) is not None

    @property
    def with_mask(self) -> bool:
        return getattr(self, 'mask_head', None) is not None

    @property
    def with_shared_head(self) -> bool:
        return getattr(self, 'shared_head', None) is not None

    def init_bbox_head(self, bbox_roi_extractor, bbox_head):
        raise NotImplementedError

    def init_mask_head(self, mask_roi_extractor, mask_head):
        raise BuildError(f'{type(self).__name__} has no mask branch; remove mask_head and '
                         'mask_roi_extractor (StandardRoIHead has one)', mask_head,
                         key_path=['mask_head'])

    def init_assigner_sampler(self):
        self.bbox_assigner = BBOX_ASSIGNERS.build(cfg_get(self.train_cfg, 'assigner'))
        self.bbox_sampler = BBOX_SAMPLERS.build(cfg_get(self.train_cfg, 'sampler'))

    @staticmethod
    def assign_and_sample(assigner, sampler, proposal_list, gt_bboxes, gt_labels,
                          gt_bboxes_ignore=None):
        """Per image: match proposals (n_i, 4 or 5) to GT boxes and sample RoIs.

        Returns a list of ``SamplingResult`` (positives first; GT boxes added as proposals
        when the sampler says so)."""
        results = []
        for i, proposals in enumerate(proposal_list):
            boxes = proposals[:, :4]
            ignore = None if gt_bboxes_ignore is None else gt_bboxes_ignore[i]
            assign_result = assigner.assign(boxes, gt_bboxes[i], ignore, gt_labels[i])
            results.append(sampler.sample(assign_result, boxes, gt_bboxes[i], gt_labels[i]))
        return results

    def forward_train(self, x, img_metas, proposal_list, gt_bboxes, gt_labels,
                      gt_bboxes_ignore=None, **kwargs):
        raise NotImplementedError

    def simple_test(self, x, proposal_list, img_metas, proposals=None, rescale=False):
        raise NotImplementedError

    def aug_test(self, x, proposal_list, img_metas, rescale=False):
        raise BuildError(f'{type(self).__name__} has no test-time augmentation; use a test '
                         'pipeline with a single scale and no flip')
