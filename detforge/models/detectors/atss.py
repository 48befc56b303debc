"""ATSS: ResNet + FPN + ATSSHead."""
from __future__ import annotations

from detforge.registry import DETECTORS

from .single_stage import SingleStageDetector

__all__ = ['ATSS']


@DETECTORS.register_module()
class ATSS(SingleStageDetector):
    """Implementation of `ATSS <https://arxiv.org/abs/1912.02424>`_; the parts are chosen by the config
    (``configs/atss/``)."""
