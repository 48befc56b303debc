"""Losses (registry ``LOSSES``) and their functional forms; ``utils.py`` holds the
weighted reduction every loss shares (``weight_reduce_loss``: ``avg_factor``).

Every module of this package is imported here (importing the package registers its
classes); a new module must be added below.
"""
from .cross_entropy_loss import (CrossEntropyLoss, cross_entropy, binary_cross_entropy,
                                 mask_cross_entropy)
from .focal_loss import FocalLoss, sigmoid_focal_loss
from .gfocal_loss import (QualityFocalLoss, DistributionFocalLoss, quality_focal_loss,
                          distribution_focal_loss)
from .iou_loss import IoULoss, GIoULoss
from .smooth_l1_loss import SmoothL1Loss, L1Loss, smooth_l1_loss, l1_loss
from .utils import reduce_loss, weight_reduce_loss

__all__ = ['CrossEntropyLoss', 'cross_entropy', 'binary_cross_entropy', 'mask_cross_entropy',
           'FocalLoss', 'sigmoid_focal_loss', 'QualityFocalLoss', 'DistributionFocalLoss',
           'quality_focal_loss', 'distribution_focal_loss', 'IoULoss', 'GIoULoss', 'SmoothL1Loss',
           'L1Loss', 'smooth_l1_loss', 'l1_loss', 'reduce_loss', 'weight_reduce_loss']
