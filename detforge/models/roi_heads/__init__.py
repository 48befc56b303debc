"""Second stages of two-stage detectors (registry ``HEADS``): RoI heads, their box and mask
heads, RoI feature extractors and test-time augmentation.

Every module of this package is imported here (importing the package registers its
classes); a new module must be added below.
"""
from .base_roi_head import BaseRoIHead
from .bbox_heads import (BBoxHead, multiclass_nms, clip_to_shape, ConvFCBBoxHead, Shared2FCBBoxHead,
                         Shared4Conv1FCBBoxHead)
from .cascade_roi_head import CascadeRoIHead
from .mask_heads import FCNMaskHead, paste_masks, mask_target
from .roi_extractors import RoIAlign, SingleRoIExtractor
from .shared_heads import ResLayer
from .standard_roi_head import StandardRoIHead
from .test_mixins import merge_aug_proposals, merge_aug_bboxes, aug_test_rpn, BBoxAugTestMixin

__all__ = ['BaseRoIHead', 'BBoxHead', 'multiclass_nms', 'clip_to_shape', 'ConvFCBBoxHead',
           'Shared2FCBBoxHead', 'Shared4Conv1FCBBoxHead', 'CascadeRoIHead', 'FCNMaskHead',
           'paste_masks', 'mask_target', 'RoIAlign', 'SingleRoIExtractor', 'ResLayer', 'StandardRoIHead',
           'merge_aug_proposals', 'merge_aug_bboxes', 'aug_test_rpn', 'BBoxAugTestMixin']
