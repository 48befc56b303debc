"""Dense heads (registry ``HEADS``): a class and a box at every anchor or point of every level.

- ``anchor_head.py``: ``AnchorHead``, the anchor-based algorithm (RetinaNet's and RPN's
  base); ``retina_head.py``, ``rpn_head.py``: their layers;
- ``dense_targets.py``: the training targets and losses shared by the anchor heads
  (anchors → assign → sample → encode → normaliser → losses); ``dense_test_mixins.py``:
  test-time augmentation; ``legacy_keys.py``: MMDetection 1.x keys;
- ``conv_tower_head.py``: the base of the one-prior-per-position heads (FCOS, ATSS, GFL,
  RTMDet); ``single_anchor_head.py``: ATSS's and GFL's targets; ``fcos_head.py``,
  ``atss_head.py``, ``gfl_head.py``, ``rtmdet_head.py``.

Every module of this package is imported here (importing the package registers its
classes); a new module must be added below.
"""
from .anchor_head import AnchorHead
from .atss_head import ATSSHead, anchor_centerness
from .conv_tower_head import ConvTowerHead, Scale
from .dense_targets import (LOSS_NORMALIZATIONS, DenseTargets, batch_anchors, check_loss_normalization,
                            compute_dense_targets, dense_assigner_sampler, dense_losses,
                            flatten_levels, inside_flags, moving_average_normalizer,
                            normalize_targets)
from .dense_test_mixins import DenseTestMixin
from .fcos_head import FCOSHead, centerness_target, fcos_targets
from .gfl_head import GFLHead, Integral
from .legacy_keys import translate_1x_head_keys
from .retina_head import RetinaHead
from .rpn_head import RPNHead
from .rtmdet_head import RTMDetSepBNHead
from .single_anchor_head import SingleAnchorHead, SingleAnchorTargets

__all__ = ['AnchorHead', 'ATSSHead', 'anchor_centerness', 'ConvTowerHead', 'Scale',
           'LOSS_NORMALIZATIONS', 'DenseTargets', 'batch_anchors', 'check_loss_normalization',
           'compute_dense_targets', 'dense_assigner_sampler', 'dense_losses', 'flatten_levels',
           'inside_flags', 'moving_average_normalizer', 'normalize_targets', 'DenseTestMixin',
           'FCOSHead', 'centerness_target',
           'fcos_targets', 'GFLHead', 'Integral', 'translate_1x_head_keys', 'RetinaHead',
           'RPNHead', 'RTMDetSepBNHead', 'SingleAnchorHead', 'SingleAnchorTargets']
