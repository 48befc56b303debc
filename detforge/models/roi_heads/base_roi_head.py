"""BaseRoIHead: what every RoI head shares (configs, shared head, assigner and sampler)."""
from __future__ import annotations

from torch import nn

from detforge.models.train_test_cfg import RoITestConfig, RoITrainConfig
from detforge.registry import SHARED_HEADS, BuildError

__all__ = ['BaseRoIHead']


class BaseRoIHead(nn.Module):
    """Holds ``train_cfg`` (the ``rcnn`` part of the detector's train config, a
    :class:`RoITrainConfig` or its dict) and ``test_cfg`` (:class:`RoITestConfig`); takes
    the assigner and sampler of ``train_cfg`` and builds the optional shared head (a ResNet
    stage run on pooled features, as in the C4 detectors)."""

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
        self.train_cfg = self.parse_train_cfg(train_cfg)
        self.test_cfg = self.parse_test_cfg(test_cfg)
        if shared_head is not None:
            self.shared_head = SHARED_HEADS.build(shared_head)
        self.init_bbox_head(bbox_roi_extractor, bbox_head)
        if mask_head is not None:
            self.init_mask_head(mask_roi_extractor, mask_head)
        if self.train_cfg is not None:
            self.init_assigner_sampler()

    @classmethod
    def parse_train_cfg(cls, cfg, path=('train_cfg',)):
        """The typed record of ``train_cfg.rcnn`` (:class:`RoITrainConfig`)."""
        return RoITrainConfig.parse(cfg, path)

    @classmethod
    def parse_test_cfg(cls, cfg, path=('test_cfg',)):
        """The typed record of ``test_cfg.rcnn`` (:class:`RoITestConfig`)."""
        return RoITestConfig.parse(cfg, path)

    @property
    def with_bbox(self) -> bool:
        return getattr(self, 'bbox_head', None) is not None

    @property
    def with_mask(self) -> bool:
        return getattr(self, 'mask_head', None) is not None

    @property
    def with_shared_head(self) -> bool:
        return getattr(self, 'shared_head', None) is not None

    def init_weights(self) -> None:
        """Load the shared head's pretrained stage (its ``init_cfg``); the box and mask heads
        initialise themselves when built."""
        if self.with_shared_head and hasattr(self.shared_head, 'init_weights'):
            self.shared_head.init_weights()

    def init_bbox_head(self, bbox_roi_extractor, bbox_head):
        raise NotImplementedError

    def init_mask_head(self, mask_roi_extractor, mask_head):
        raise BuildError(f'{type(self).__name__} has no mask branch; remove mask_head and '
                         'mask_roi_extractor (StandardRoIHead has one)', mask_head,
                         key_path=['mask_head'])

    def init_assigner_sampler(self):
        self.bbox_assigner, self.bbox_sampler = _assigner_sampler(self.train_cfg)

    @staticmethod
    def assign_and_sample(assigner, sampler, proposal_list, gt_bboxes, gt_labels,
                          gt_bboxes_ignore=None, roi_losses=None):
        """Per image: match proposals (n_i, 4 or 5) to GT boxes and sample RoIs.

        ``roi_losses``: per image a :class:`~detforge.models.task_modules.RoILoss`, the
        head's current loss of any box, for samplers that choose by it (``OHEMSampler``).
        Returns a list of ``SamplingResult`` (positives first; GT boxes added as proposals
        when the sampler says so)."""
        results = []
        for i, proposals in enumerate(proposal_list):
            boxes = proposals[:, :4]
            ignore = None if gt_bboxes_ignore is None else gt_bboxes_ignore[i]
            assign_result = assigner.assign(boxes, gt_bboxes[i], ignore, gt_labels[i])
            extra = {} if roi_losses is None else {'roi_loss': roi_losses[i]}
            results.append(sampler.sample(assign_result, boxes, gt_bboxes[i], gt_labels[i],
                                          **extra))
        return results

    @staticmethod
    def image_features(x, i):
        """Image ``i`` of each level of ``x`` (B, C, H_l, W_l), as (1, C, H_l, W_l)."""
        return [level[i:i + 1] for level in x]

    def forward_train(self, x, img_metas, proposal_list, gt_bboxes, gt_labels,
                      gt_bboxes_ignore=None, **kwargs):
        raise NotImplementedError

    def simple_test(self, x, proposal_list, img_metas, proposals=None, rescale=False):
        raise NotImplementedError

    def aug_test(self, x, proposal_list, img_metas, rescale=False):
        raise BuildError(f'{type(self).__name__} has no test-time augmentation; use a test '
                         'pipeline with a single scale and no flip')


def _assigner_sampler(cfg: RoITrainConfig, path=('train_cfg',)):
    """The (built) assigner and sampler of a second stage's train config; both required."""
    for key in ('assigner', 'sampler'):
        if getattr(cfg, key) is None:
            raise BuildError(f'the rcnn train config needs a {key}', key_path=[*path, key])
    return cfg.assigner, cfg.sampler
