"""Cascade R-CNN (Cai & Vasconcelos, 2018): RPN + CascadeRoIHead."""
from detforge.registry import DETECTORS

from .two_stage import TwoStageDetector

__all__ = ['CascadeRCNN']


@DETECTORS.register_module()
class CascadeRCNN(TwoStageDetector):
    """A :class:`TwoStageDetector` with ``roi_head=CascadeRoIHead`` (see
    ``configs/_base_/models/cascade_rcnn_r50_fpn.py``)."""
