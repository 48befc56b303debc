"""GFL: ResNet + FPN + GFLHead."""
from __future__ import annotations

from detforge.registry import DETECTORS

from .single_stage import SingleStageDetector

__all__ = ['GFL']


@DETECTORS.register_module()
class GFL(SingleStageDetector):
    """Implementation of `GFL <https://arxiv.org/abs/2006.04388>`_; the parts are chosen by the config
    (``configs/gfl/``)."""
