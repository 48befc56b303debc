"""Task modules of the heads: prior generators, assigners, samplers, box coders, IoU.

Each name has one home, listed here. The batch entry points of the dense heads' targets are
methods: ``assigner.assign_batch`` (``base_assigner.py``: :class:`BaseAssigner` runs
``assign`` image by image; :meth:`MaxIoUAssigner.assign_batch` does the batch at once) and
``sampler.sample_batch`` (``samplers.py``: :class:`BaseSampler` runs ``sample`` image by
image; :class:`PseudoSampler` at once).

A new module here must be imported below: importing this package is what registers its
classes.
"""
from .anchor_generator import AnchorGenerator, padded_batch_shape
from .assign_result import AssignResult, gather_assigned
from .atss_assigner import ATSSAssigner
from .base_assigner import BaseAssigner
from .distance_point_bbox_coder import DistancePointBBoxCoder, bbox2distance, distance2bbox
from .dynamic_soft_label_assigner import DynamicSoftLabelAssigner
from .delta_xywh_bbox_coder import DeltaXYWHBBoxCoder
from .iou_calculator import BboxOverlaps2D
from .max_iou_assigner import MaxIoUAssigner
from .ohem_sampler import OHEMSampler, RoILoss
from .point_generator import MlvlPointGenerator
from .samplers import BaseSampler, PseudoSampler, RandomSampler, SamplingResult

__all__ = ['AnchorGenerator', 'padded_batch_shape', 'AssignResult', 'BaseAssigner', 'gather_assigned',
           'DeltaXYWHBBoxCoder', 'BboxOverlaps2D', 'MaxIoUAssigner', 'PseudoSampler',
           'RandomSampler', 'SamplingResult', 'BaseSampler', 'ATSSAssigner', 'DistancePointBBoxCoder',
           'bbox2distance', 'distance2bbox', 'DynamicSoftLabelAssigner', 'MlvlPointGenerator',
           'OHEMSampler', 'RoILoss']
