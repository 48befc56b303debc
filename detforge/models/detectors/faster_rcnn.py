"""Faster R-CNN (Ren et al., 2015): RPN + StandardRoIHead."""
from detforge.registry import DETECTORS

from .two_stage import TwoStageDetector

__all__ = ['FasterRCNN']


@DETECTORS.register_module()
class FasterRCNN(TwoStageDetector):
    """A :class:`TwoStageDetector` with ``rpn_head=RPNHead`` and
    ``roi_head=StandardRoIHead`` (see ``configs/_base_/models/faster_rcnn_r50_fpn.py``)."""
