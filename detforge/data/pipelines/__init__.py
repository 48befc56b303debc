"""Data transforms (registry ``PIPELINES`` = ``TRANSFORMS``); importing registers them all.

Every module of this package is imported here (importing the package registers its
classes); a new module must be added below.
"""
from .albu import Albu
from .compose import Compose
from .formatting import (to_tensor, image_to_tensor, ImageToTensor, ToTensor, DefaultFormatBundle,
                         Collect, DEFAULT_META_KEYS)
from .loading import (LoadImageFromFile, LoadAnnotations, imdecode, decode_tolerant,
                      check_image_size, apply_exif_orientation, exif_orientation)
from .mix import Mosaic, MixUp, find_inside_bboxes
from .proposals import LoadProposals
from .test_time_aug import MultiScaleFlipAug
from .transforms import (Resize, RandomFlip, Normalize, Pad, RandomCrop, PhotoMetricDistortion,
                         ResizeShortestEdge, rescale_size, bbox_flip)

__all__ = ['Albu', 'Compose', 'to_tensor', 'image_to_tensor', 'ImageToTensor', 'ToTensor',
           'DefaultFormatBundle', 'Collect', 'DEFAULT_META_KEYS', 'LoadImageFromFile',
           'LoadAnnotations', 'imdecode', 'decode_tolerant', 'check_image_size',
           'apply_exif_orientation', 'exif_orientation', 'Mosaic', 'MixUp', 'find_inside_bboxes', 'LoadProposals',
           'MultiScaleFlipAug', 'Resize', 'RandomFlip', 'Normalize', 'Pad', 'RandomCrop',
           'PhotoMetricDistortion', 'ResizeShortestEdge', 'rescale_size', 'bbox_flip']
