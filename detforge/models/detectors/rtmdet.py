"""RTMDet: CSPNeXt + CSPNeXtPAFPN + RTMDetSepBNHead."""
from __future__ import annotations

from detforge.registry import DETECTORS

from .single_stage import SingleStageDetector

__all__ = ['RTMDet']


@DETECTORS.register_module()
class RTMDet(SingleStageDetector):
    """Implementation of `RTMDet <https://arxiv.org/abs/2212.07784>`_; the parts are chosen by the
    config (``configs/rtmdet/``)."""
