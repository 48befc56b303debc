"""Resolve and load pretrained weights by the names MMCV 1.x resolves, and files.

* ``torchvision://NAME``: torchvision's ImageNet weights of model ``NAME``;
* ``open-mmlab://NAME``: MMCV's ``open_mmlab.json`` table (e.g. ``detectron2/resnet50_caffe``,
  ``resnext101_32x4d``; the deprecated ``resnet50_caffe`` maps to ``detectron/resnet50_caffe``);
* ``mmcls://NAME``: MMClassification checkpoints (only their ``backbone.*`` tensors, renamed
  without the prefix, as MMCV does);
* ``http(s)://...``: any URL;
* a path: ``.pth`` / ``.pkl`` (weights-only unpickling) or ``.safetensors``.

Every URL maps to the same cache file MMCV and torch.hub use (``$TORCH_HOME/hub/checkpoints`` /
the URL's file name), so a file placed there by hand is used without a network.
"""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import torch

from detforge.registry import DetforgeError

__all__ = ['load_pretrained_state_dict', 'resolve_torchvision_url', 'resolve_url', 'hub_cache_path']


def resolve_torchvision_url(name: str) -> str:
    """The download URL of torchvision's ImageNet weights for model ``name`` (e.g. ``resnet50``),
    from the weights enum (``ResNet50_Weights.IMAGENET1K_V1``, the weights MMDetection uses)."""
    import torchvision.models as tvm
    try:
        weights_enum = tvm.get_model_weights(name)
    except (ValueError, KeyError) as e:
        raise DetforgeError(f'torchvision://{name}: torchvision has no model named {name!r}') from e
    members = list(weights_enum)
    chosen = getattr(weights_enum, 'IMAGENET1K_V1', None) or members[0]
    return chosen.url


def _from_table(prefix: str, name: str, table: dict, deprecated: dict | None = None) -> str:
    import warnings
    if deprecated and name in deprecated:
        warnings.warn(f'{prefix}{name} is deprecated; MMCV maps it to {prefix}{deprecated[name]}',
                      DeprecationWarning, stacklevel=3)
        name = deprecated[name]
    if name not in table:
        raise DetforgeError(f'{prefix}{name}: unknown name; known: {", ".join(sorted(table))}')
    return table[name]


def resolve_url(uri: str) -> str | None:
    """The download URL for a checkpoint URI, or ``None`` for a local path.

    >>> resolve_url('open-mmlab://detectron2/resnet50_caffe')
    'https://download.openmmlab.com/pretrain/third_party/resnet50_msra-5891d200.pth'
    """
    from .zoo_urls import MMCLS, OPEN_MMLAB, OPEN_MMLAB_DEPRECATED
    uri = str(uri)
    if uri.startswith('torchvision://'):
        return resolve_torchvision_url(uri[len('torchvision://'):])
    if uri.startswith(('open-mmlab://', 'openmmlab://')):
        prefix = uri[:uri.index('://') + 3]
        return _from_table(prefix, uri[len(prefix):], OPEN_MMLAB, OPEN_MMLAB_DEPRECATED)
    if uri.startswith('mmcls://'):
        return _from_table('mmcls://', uri[len('mmcls://'):], MMCLS)
    if uri.startswith(('http://', 'https://')):
        return uri
    if '://' in uri:
        raise DetforgeError(f'{uri}: unknown checkpoint prefix; expected torchvision://, '
                            f'open-mmlab://, mmcls://, http(s):// or a file path')
    return None


def _mmcls_backbone(state_dict: dict) -> dict:
    """An MMClassification model's weights -> its backbone's (``backbone.`` prefix removed)."""
    return {k[len('backbone.'):]: v for k, v in state_dict.items() if k.startswith('backbone.')}


def hub_cache_path(url: str) -> Path:
    """Where torch.hub keeps (or would keep) the file downloaded from ``url``."""
    return Path(torch.hub.get_dir()) / 'checkpoints' / os.path.basename(urlparse(url).path)


def _unwrap(checkpoint) -> dict:
    if isinstance(checkpoint, dict):
        for key in ('state_dict', 'model'):
            if key in checkpoint and isinstance(checkpoint[key], dict):
                return checkpoint[key]
        return checkpoint
    raise DetforgeError(f'a checkpoint must hold a dict of tensors, got {type(checkpoint).__name__}')


def load_pretrained_state_dict(uri: str, map_location='cpu') -> dict:
    """Load a state dict from ``uri`` (any form :func:`resolve_url` knows) or a path.

    The weights are read with ``weights_only=True`` (plus the allow-list of
    :mod:`detforge.engine.checkpoint_formats`). A checkpoint holding ``state_dict`` (ours,
    MMDetection's) or ``model`` (Detectron2's) is unwrapped.

    Raises:
        DetforgeError: the file does not exist, or the weights cannot be downloaded; the
            message says where to put the file or how to train without them.
    """
    from detforge.engine.checkpoint_formats import load_weights_file
    uri = str(uri)
    url = resolve_url(uri)
    if url is None:
        path = Path(uri).expanduser()
        if not path.is_file():
            raise DetforgeError(f'pretrained weights file not found: {uri}')
        return _unwrap(load_weights_file(path, map_location=map_location))

    cached = hub_cache_path(url)
    if not cached.is_file():
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(cached), progress=False)
        except Exception as e:  # noqa: BLE001 - any network failure means the same to the user
            raise DetforgeError(
                f'could not fetch the pretrained weights {uri} ({url}): {type(e).__name__}: {e}. '
                f'Either train without them by passing --cfg-options model.pretrained=None '
                f'(or model.backbone.init_cfg=None), or download the file on another machine and '
                f'place it at {cached}') from e
    state_dict = _unwrap(load_weights_file(cached, map_location=map_location))
    return _mmcls_backbone(state_dict) if uri.startswith('mmcls://') else state_dict
