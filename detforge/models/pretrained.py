"""Resolve and load pretrained weights: ``torchvision://NAME``, ``http(s)://`` URLs and files.

Downloads go to torch.hub's cache (``$TORCH_HOME/hub/checkpoints``), so a file placed there by
hand is used without a network.
"""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import torch

from detforge.registry import DetforgeError

__all__ = ['load_pretrained_state_dict', 'resolve_torchvision_url', 'hub_cache_path']


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
    """Load a state dict from ``uri``: ``torchvision://resnet50``, ``http(s)://...`` or a path.

    The weights are read with ``weights_only=True``. A checkpoint holding ``state_dict`` (ours,
    MMDetection's) or ``model`` (Detectron2's) is unwrapped.

    Raises:
        DetforgeError: the file does not exist, or the weights cannot be downloaded; the
            message says where to put the file or how to train without them.
    """
    uri = str(uri)
    if uri.startswith('torchvision://'):
        url = resolve_torchvision_url(uri[len('torchvision://'):])
    elif uri.startswith(('http://', 'https://')):
        url = uri
    else:
        path = Path(uri).expanduser()
        if not path.is_file():
            raise DetforgeError(f'pretrained weights file not found: {uri}')
        return _unwrap(torch.load(path, map_location=map_location, weights_only=True))

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
    return _unwrap(torch.load(cached, map_location=map_location, weights_only=True))
