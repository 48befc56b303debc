"""Box heads of two-stage detectors: classify RoIs and regress their boxes.

Every module of this package is imported here (importing the package registers its
classes); a new module must be added below.
"""
from .bbox_head import BBoxHead, multiclass_nms, clip_to_shape
from .convfc_bbox_head import ConvFCBBoxHead, Shared2FCBBoxHead, Shared4Conv1FCBBoxHead

__all__ = ['BBoxHead', 'multiclass_nms', 'clip_to_shape', 'ConvFCBBoxHead', 'Shared2FCBBoxHead',
           'Shared4Conv1FCBBoxHead']
