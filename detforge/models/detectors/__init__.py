"""Detectors (registry ``DETECTORS``): one module per MMDetection detector type; the shared
steps are in ``base.py`` (``train_step``), ``single_stage.py`` and ``two_stage.py``.

Every module of this package is imported here (importing the package registers its
classes); a new module must be added below.
"""
from .atss import ATSS
from .base import BaseDetector, IMAGENET_RGB
from .cascade_rcnn import CascadeRCNN
from .fast_rcnn import FastRCNN
from .faster_rcnn import FasterRCNN
from .fcos import FCOS
from .gfl import GFL
from .mask_rcnn import MaskRCNN
from .retinanet import RetinaNet
from .rpn import RPN
from .rtmdet import RTMDet
from .single_stage import SingleStageDetector
from .two_stage import TwoStageDetector, parse_two_stage_cfgs

__all__ = ['ATSS', 'BaseDetector', 'IMAGENET_RGB', 'CascadeRCNN', 'FastRCNN', 'FasterRCNN', 'FCOS', 'GFL',
           'MaskRCNN', 'RetinaNet', 'RPN', 'RTMDet', 'SingleStageDetector', 'TwoStageDetector',
           'parse_two_stage_cfgs']
