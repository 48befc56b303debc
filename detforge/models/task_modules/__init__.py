"""Task modules of the heads: prior generators, assigners, samplers, box coders, IoU.

Each name has one home, listed here. The batch entry points of the dense heads' targets are
:func:`assign_batch` (``assign_result.py``: an assigner's own ``assign_batch`` when it has
one, e.g. :meth:`MaxIoUAssigner.assign_batch`, else its ``assign`` image by image) and
:func:`sample_batch` (``samplers.py``: likewise with ``sample_batch`` / ``sample``).

A new module here must be imported below: importing this package is what registers its
classes.
"""
from .anchor_generator import AnchorGenerator, padded_batch_shape
from .assign_result import AssignResult, assign_batch, gather_assigned
from .atss_assigner import ATSSAssigner
from .distance_point_bbox_coder import DistancePointBBoxCoder, bbox2distance, distance2bbox
from .dynamic_soft_label_assigner import DynamicSoftLabelAssigner
from .delta_xywh_bbox_coder import DeltaXYWHBBoxCoder
from .iou_calculator import BboxOverlaps2D
from .max_iou_assigner import MaxIoUAssigner
from .ohem_sampler import OHEMSampler, RoILoss
from .point_generator import MlvlPointGenerator
from .samplers import PseudoSampler, RandomSampler, SamplingResult, sample_batch

__all__ = ['AnchorGenerator', 'padded_batch_shape', 'AssignResult', 'assign_batch', 'gather_assigned',
           'DeltaXYWHBBoxCoder', 'BboxOverlaps2D', 'MaxIoUAssigner', 'PseudoSampler',
           'RandomSampler', 'SamplingResult', 'sample_batch', 'ATSSAssigner', 'DistancePointBBoxCoder',
           'bbox2distance', 'distance2bbox', 'DynamicSoftLabelAssigner', 'MlvlPointGenerator',
           'OHEMSampler', 'RoILoss']
