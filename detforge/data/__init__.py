"""The data side of detforge: data sets, transforms, samplers, loader.

Importing this package registers every data set (``DATASETS``), transform (``PIPELINES`` /
``TRANSFORMS``) and sampler (``SAMPLERS``): every module that registers something is imported
here, so a new data set module must be added below (``tests/test_package_exports.py`` checks).
"""

from .builder import build_dataset
from .coco import CocoDataset
from .custom import CustomDataset
from .dataset_wrappers import (ClassBalancedDataset, ConcatDataset, MultiImageMixDataset,
                               RepeatDataset)
from .errors import AnnotationError, DatasetError, ImageLoadError
from .formats import DetectedData, detect_format
from .image_meta import ImageMeta
from .labelme import LabelMeDataset
from .loader import build_dataloader, collate
from .pipelines import *  # noqa: F401,F403 - registers every transform
from .pipelines import __all__ as _pipeline_names
from .pipelines.compose import Compose
from .samplers import *  # noqa: F401,F403 - registers every sampler
from .samplers import __all__ as _sampler_names
from .voc import VOCDataset, XMLDataset
from .yolo import YOLODataset

__all__ = ['build_dataset', 'build_dataloader', 'collate', 'Compose', 'CustomDataset',
           'CocoDataset', 'XMLDataset', 'VOCDataset', 'ConcatDataset', 'RepeatDataset',
           'ClassBalancedDataset', 'MultiImageMixDataset', 'DatasetError', 'ImageLoadError',
           'AnnotationError', 'ImageMeta', 'YOLODataset', 'LabelMeDataset', 'detect_format',
           'DetectedData']
__all__ += [n for n in list(_pipeline_names) + list(_sampler_names) if n not in __all__]
