"""Single-stage detectors: backbone → neck → dense head."""
from __future__ import annotations

import warnings

import torch
from torch import Tensor

from detforge.registry import BACKBONES, DETECTORS, HEADS, NECKS, BuildError
from detforge.structures import bbox2result
from detforge.models.train_test_cfg import parse_for_head, written_at

from .base import BaseDetector

__all__ = ['SingleStageDetector']


def _build(registry, cfg, *keys):
    """A part from its config dict, or the part itself when given built."""
    if not isinstance(cfg, dict):
        return cfg
    try:
        return registry.build(cfg)
    except BuildError as e:
        raise e.prefix(*keys)


@DETECTORS.register_module()
class SingleStageDetector(BaseDetector):
    """Backbone, optional neck, and one dense head that both classifies and regresses.

    Args:
        backbone, neck, bbox_head: part configs (backbone and neck may also be built
            modules).
        train_cfg, test_cfg: parsed into the head's typed records here (unknown keys fail
            with their path, ``train_cfg.<key>``), then handed to the head.
        pretrained: backbone checkpoint (deprecated; use ``backbone.init_cfg``).
        data_preprocessor, init_cfg: see :class:`BaseDetector`.
    """

    def __init__(self, backbone: dict, neck: dict | None = None, bbox_head: dict | None = None,
                 train_cfg: dict | None = None, test_cfg: dict | None = None,
                 pretrained: str | None = None, init_cfg=None, data_preprocessor: dict | None = None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        backbone = dict(backbone) if isinstance(backbone, dict) else backbone
        if pretrained and isinstance(backbone, dict):
            warnings.warn('model.pretrained is deprecated; use model.backbone.init_cfg='
                          "dict(type='Pretrained', checkpoint=...)", DeprecationWarning, stacklevel=2)
            backbone['init_cfg'] = dict(type='Pretrained', checkpoint=pretrained)
        self.backbone = _build(BACKBONES, backbone, 'backbone')
        self.neck = _build(NECKS, neck, 'neck') if neck is not None else None
        if bbox_head is None:
            raise BuildError(f'{type(self).__name__} needs a bbox_head', key_path=['bbox_head'])
        # the records are parsed here, where the path the user wrote is known
        with written_at(train_cfg, ['train_cfg']):
            self.train_cfg = parse_for_head(bbox_head, train_cfg, ['train_cfg'], 'train')
        with written_at(test_cfg, ['test_cfg']):
            self.test_cfg = parse_for_head(bbox_head, test_cfg, ['test_cfg'], 'test')
        bbox_head = dict(bbox_head)
        bbox_head.update(train_cfg=self.train_cfg, test_cfg=self.test_cfg)
        self.bbox_head = _build(HEADS, bbox_head, 'bbox_head')

    def extract_feat(self, img: Tensor) -> tuple[Tensor, ...]:
        """Normalised images ``(B, 3, H, W)`` → pyramid features, finest first."""
        x = self.backbone(img)
        if self.with_neck:
            x = self.neck(x)
        return x

    def forward_dummy(self, img: Tensor):
        """Raw head outputs (for FLOPs counting and export)."""
        return self.bbox_head(self.extract_feat(img))

    def forward_train(self, img: Tensor, img_metas: list[dict], gt_bboxes: list[Tensor],
                      gt_labels: list[Tensor], gt_bboxes_ignore: list[Tensor] | None = None,
                      **kwargs) -> dict:
        """Preprocess → features → head losses (``loss_cls``, ``loss_bbox``)."""
        for meta in img_metas:  # the anchors' stride_rule='batch_shape' reads it
            meta.setdefault('batch_input_shape', tuple(img.shape[-2:]))
        x = self.extract_feat(self.preprocess(img, img_metas))
        return self.bbox_head.forward_train(x, img_metas, gt_bboxes, gt_labels, gt_bboxes_ignore)

    def simple_test(self, img: Tensor, img_metas: list[dict], rescale: bool = True, **kwargs):
        """Per image, a list over classes of float32 ``(n, 5)`` arrays."""
        feats = self.extract_feat(self.preprocess(img, img_metas))
        results = self.bbox_head.simple_test(feats, img_metas, rescale=rescale)
        return [bbox2result(b, l, self.bbox_head.num_classes) for b, l in results]

    def aug_test(self, imgs: list[Tensor], img_metas: list[list[dict]], rescale: bool = True, **kwargs):
        """One image under several augmentations (flips, scales): detections merged."""
        if not hasattr(self.bbox_head, 'aug_test'):
            raise BuildError(f'{type(self.bbox_head).__name__} does not support test-time augmentation')
        feats = [self.extract_feat(self.preprocess(img, metas)) for img, metas in zip(imgs, img_metas)]
        results = self.bbox_head.aug_test(feats, img_metas, rescale=rescale)
        return [bbox2result(b, l, self.bbox_head.num_classes) for b, l in results]
