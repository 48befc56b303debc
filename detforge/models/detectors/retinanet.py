"""RetinaNet: ResNet + FPN + RetinaHead trained with focal loss."""
from __future__ import annotations

from detforge.registry import DETECTORS

from .single_stage import SingleStageDetector

__all__ = ['RetinaNet']


@DETECTORS.register_module()
class RetinaNet(SingleStageDetector):
    """Implementation of `RetinaNet <https://arxiv.org/abs/1708.02002>`_; the parts are chosen by
    the config (``configs/_base_/models/retinanet_r50_fpn.py``)."""
