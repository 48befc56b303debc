"""Detectors and their parts. Importing this package registers every model class.

Where things live (one package per kind of part; each package's ``__init__`` lists its modules):

- ``detectors/``: the detector types (``base.py``: ``train_step``; ``single_stage.py``,
  ``two_stage.py``: forward_train / simple_test);
- ``backbones/``, ``necks/``: feature extractors (ResNet, CSPNeXt; FPN, PAFPN);
- ``dense_heads/``: heads predicting at every anchor or point (RetinaNet, RPN, FCOS, ATSS, GFL,
  RTMDet) and their shared targets (``dense_targets.py``);
- ``roi_heads/``: second stages (box and mask heads, RoI extractors);
- ``task_modules/``: anchor/point generators, assigners, samplers, box coders;
- ``losses/``: the losses;
- ``builder.py``: ``build_detector`` and the part builders; ``train_test_cfg.py``: the typed
  ``train_cfg`` / ``test_cfg`` records; ``postprocess.py``: candidate selection and NMS;
  ``layers.py`` / ``csp_layers.py``: conv blocks and norms; ``weight_init.py``: ``init_cfg``;
  ``pretrained.py`` / ``zoo_urls.py``: pretrained weights; ``fuse_conv_bn.py``.

The names of the part packages are re-exported here, as ``mmdet.models`` does
(``from detforge.models import RetinaHead``).
"""
from . import (backbones, csp_layers, dense_heads, detectors, fuse_conv_bn, layers, losses, necks,
               postprocess, pretrained, roi_heads, task_modules, train_test_cfg, weight_init,
               zoo_urls)
from .backbones import *  # noqa: F401,F403
from .builder import (build_backbone, build_detector, build_head, build_loss, build_neck,
                      build_roi_extractor, build_shared_head)
from .dense_heads import *  # noqa: F401,F403
from .detectors import *  # noqa: F401,F403
from .losses import *  # noqa: F401,F403
from .necks import *  # noqa: F401,F403
from .roi_heads import *  # noqa: F401,F403
from .task_modules import *  # noqa: F401,F403

__all__ = ['build_backbone', 'build_detector', 'build_head', 'build_loss', 'build_neck',
           'build_roi_extractor', 'build_shared_head',
           *backbones.__all__, *dense_heads.__all__, *detectors.__all__, *losses.__all__,
           *necks.__all__, *roi_heads.__all__, *task_modules.__all__]
