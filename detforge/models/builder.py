"""Build models and their parts from configs (MMDetection 2.x names)."""
from __future__ import annotations

import copy
import warnings

from detforge.registry import (BACKBONES, DETECTORS, HEADS, LOSSES, NECKS, ROI_EXTRACTORS,
                               SHARED_HEADS, BuildError)

__all__ = ['build_detector', 'build_backbone', 'build_neck', 'build_head', 'build_loss',
           'build_roi_extractor', 'build_shared_head']


def build_backbone(cfg):
    return BACKBONES.build(cfg)


def build_neck(cfg):
    return NECKS.build(cfg)


def build_head(cfg):
    return HEADS.build(cfg)


def build_loss(cfg):
    return LOSSES.build(cfg)


def build_roi_extractor(cfg):
    return ROI_EXTRACTORS.build(cfg)


def build_shared_head(cfg):
    return SHARED_HEADS.build(cfg)


def build_detector(cfg, train_cfg=None, test_cfg=None):
    """Build a detector from ``cfg`` (``model`` of a config file).

    ``train_cfg`` / ``test_cfg`` given here (the 1.x and early 2.x way, top-level in the config)
    are moved into the model config with a ``DeprecationWarning``; giving them in both places
    is an error.
    """
    if train_cfg is not None or test_cfg is not None:
        warnings.warn('train_cfg and test_cfg given to build_detector are deprecated; put them in '
                      'the model config (model.train_cfg, model.test_cfg)', DeprecationWarning,
                      stacklevel=2)
        cfg = copy.deepcopy(cfg)
        for key, value in (('train_cfg', train_cfg), ('test_cfg', test_cfg)):
            if value is None:
                continue
            if cfg.get(key) is not None:
                raise BuildError(f'{key} is given both in the model config and at the top level of '
                                 f'the config; keep only model.{key}', cfg, key_path=[key])
            cfg[key] = value
    try:
        model = DETECTORS.build(cfg)
    except BuildError as e:
        # a bad key of a top-level train_cfg/test_cfg: name it where the user wrote it
        moved = {k for k, v in (('train_cfg', train_cfg), ('test_cfg', test_cfg)) if v is not None}
        if e.key_path[:1] and e.key_path[0] in moved:
            e.rooted = True
        raise
    # every init_cfg of the config (heads, necks, ...) checked and applied now, so that any
    # entry point sees it; init_weights() applies them again after the parts' defaults
    from detforge.models.weight_init import apply_init_cfgs
    model._init_cfgs = apply_init_cfgs(model, cfg)
    return model
