"""Mask R-CNN (He et al., 2017): Faster R-CNN plus a mask branch in the RoI head."""
from detforge.registry import DETECTORS

from .two_stage import TwoStageDetector

__all__ = ['MaskRCNN']


@DETECTORS.register_module()
class MaskRCNN(TwoStageDetector):
    """A :class:`TwoStageDetector` whose ``roi_head`` has a ``mask_head``
    (``configs/_base_/models/mask_rcnn_r50_fpn.py``). Training takes ``gt_masks`` (per image
    ``BitmapMasks`` / ``PolygonMasks``); ``simple_test`` returns per image
    ``(bbox_result, segm_result)``: per class ``(k, 5)`` boxes and per class lists of bool
    ``(h, w)`` masks, as MMDetection 2.x."""
