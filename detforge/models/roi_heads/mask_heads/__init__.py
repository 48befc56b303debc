"""Mask heads of two-stage detectors: per-RoI mask logits (Mask R-CNN).

Every module of this package is imported here (importing the package registers its
classes); a new module must be added below.
"""
from .fcn_mask_head import FCNMaskHead, paste_masks, mask_target

__all__ = ['FCNMaskHead', 'paste_masks', 'mask_target']
