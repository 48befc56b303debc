"""FCOS: ResNet + FPN + FCOSHead."""
from __future__ import annotations

from detforge.registry import DETECTORS

from .single_stage import SingleStageDetector

__all__ = ['FCOS']


@DETECTORS.register_module()
class FCOS(SingleStageDetector):
    """Implementation of `FCOS <https://arxiv.org/abs/1904.01355>`_; the parts are chosen by the config
    (``configs/fcos/``)."""
