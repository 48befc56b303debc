"""Test-time augmentation of a dense head (MMDetection 2.x's ``BBoxTestMixin.aug_test_bboxes``).

    every augmentation (scale, flip) ─► the head's detections before NMS
    ─► mapped back to the original image ─► one NMS over all of them
"""
from __future__ import annotations

import torch

from detforge.models.postprocess import nms_from_cfg, scale_factor_of
from detforge.registry import BuildError
from detforge.structures import bbox_mapping_back

__all__ = ['DenseTestMixin']


class DenseTestMixin:
    """``aug_test`` for a head with ``get_bboxes(..., with_nms=False)`` and a parsed
    ``test_cfg`` (``nms``, ``max_per_img``)."""

    def aug_test(self, feats_list, img_metas_list, rescale: bool = False):
        """Detections of one image seen through several augmentations.

        Args:
            feats_list: per augmentation, the head's input features (per level ``(1, C, H, W)``).
            img_metas_list: per augmentation, a list with the one image's meta
                (``img_shape``, ``scale_factor``, ``flip``, ``flip_direction``).
            rescale: boxes in the original image's pixels; else in the first augmentation's.

        Returns:
            ``[(det_bboxes (n, 5), det_labels (n,))]``.
        """
        boxes, scores, labels = [], [], []
        for feats, img_metas in zip(feats_list, img_metas_list):
            meta = img_metas[0]
            b, s, l = self.get_bboxes(*self(feats), img_metas=[meta], rescale=False, with_nms=False)[0]
            boxes.append(bbox_mapping_back(b, meta['img_shape'], scale_factor_of(meta),
                                           meta.get('flip', False),
                                           meta.get('flip_direction', 'horizontal')))
            scores.append(s)
            labels.append(l)
        cfg = self.test_cfg
        if cfg is None or cfg.nms is None:
            raise BuildError("test_cfg needs nms=dict(type='nms', iou_threshold=...)", key_path=['test_cfg'])
        labels = torch.cat(labels)
        det_bboxes, keep = nms_from_cfg(torch.cat(boxes), torch.cat(scores), labels, cfg.nms,
                                        cfg.max_per_img)
        if not rescale:  # back to the scale of the first augmentation
            det_bboxes[:, :4] *= det_bboxes.new_tensor(scale_factor_of(img_metas_list[0][0]))
        return [(det_bboxes, labels[keep])]
