"""Checkpoint file formats beyond detforge's own ``.pth``: ``.safetensors`` and old pickles.

* ``.safetensors`` (https://github.com/huggingface/safetensors) holds only tensors and a
  ``str -> str`` header, so reading one never runs code. detforge stores the checkpoint's
  ``meta`` as JSON in the header under ``'detforge_meta'``; the optimizer and runner states are
  not stored (a ``.safetensors`` file is for sharing weights, not for resuming).
* Old MMDetection 2.x / MMCV checkpoints pickle a few harmless non-tensor objects in their
  ``meta`` (numpy arrays and scalars, MMCV's ``ConfigDict``). ``torch.load(weights_only=True)``
  refuses them. :func:`legacy_safe_globals` is the curated allow-list that lets them load
  *still through torch's weights-only unpickler*: only the listed constructors can be called,
  and the ``ConfigDict`` name maps to a plain ``dict`` subclass defined here, so the real MMCV
  class (and its code) is never imported. Anything else, e.g. a ``__reduce__`` that names
  ``os.system``, stays refused.
"""
from __future__ import annotations

import json
import os
import os.path as osp
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from detforge.registry import DetforgeError

__all__ = ['is_safetensors', 'save_safetensors', 'load_safetensors', 'legacy_safe_globals',
           'load_weights_file', 'LegacyConfigDict']

SAFETENSORS_SUFFIX = '.safetensors'
_META_KEY = 'detforge_meta'


def is_safetensors(filename: str | os.PathLike) -> bool:
    return os.fspath(filename).endswith(SAFETENSORS_SUFFIX)


def _require_safetensors():
    try:
        import safetensors.torch as st
    except ImportError as e:  # an optional dependency: say how to get it
        raise DetforgeError('reading or writing .safetensors needs the "safetensors" package: '
                            'pip install safetensors (or pip install detforge[safetensors])') from e
    return st


def save_safetensors(state_dict: dict, filename: str | os.PathLike,
                     meta: dict | None = None) -> None:
    """Write ``state_dict`` (name -> tensor) and ``meta`` to ``filename`` atomically.

    Each tensor is stored as a contiguous CPU copy (safetensors refuses tensors that share
    storage, e.g. tied weights). ``meta`` is converted to weights-only types and stored as JSON.
    """
    from .checkpoint import to_weights_only
    st = _require_safetensors()
    tensors = OrderedDict()
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise DetforgeError(f'{os.fspath(filename)}: state_dict[{key!r}] is a '
                                f'{type(value).__name__}; .safetensors holds tensors only')
        tensors[key] = value.detach().cpu().contiguous().clone()
    header = {_META_KEY: json.dumps(_jsonable(to_weights_only(meta or {})))}
    data = st.save(tensors, metadata=header)
    _atomic_write_bytes(data, os.fspath(filename))


def _jsonable(obj: Any) -> Any:
    """Weights-only types -> JSON types (tensors become nested lists)."""
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def _atomic_write_bytes(data: bytes, filename: str) -> None:
    import tempfile
    folder = osp.dirname(osp.abspath(filename))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{osp.basename(filename)}.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filename)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


def load_safetensors(filename: str | os.PathLike, map_location: str | torch.device = 'cpu') -> dict:
    """Read a ``.safetensors`` file as ``{'meta': dict, 'state_dict': OrderedDict}``."""
    st = _require_safetensors()
    from safetensors import safe_open
    filename = os.fspath(filename)
    if not osp.isfile(filename):
        raise DetforgeError(f'checkpoint {filename} does not exist')
    device = str(map_location) if not callable(map_location) else 'cpu'
    try:
        state_dict = OrderedDict(st.load_file(filename, device=device))
        with safe_open(filename, framework='pt') as f:
            header = f.metadata() or {}
    except Exception as e:  # noqa: BLE001 - name the file and the cause in one line
        raise DetforgeError(f'checkpoint {filename} is not a readable .safetensors file: '
                            f'{type(e).__name__}: {str(e)[:200]}') from e
    meta = json.loads(header[_META_KEY]) if _META_KEY in header else dict(header)
    return {'meta': meta, 'state_dict': state_dict}


class LegacyConfigDict(dict):
    """Stand-in for MMCV's ``ConfigDict`` (an ``addict.Dict``) found in old checkpoints' meta.

    torch's weights-only unpickler fills only ``dict`` / ``OrderedDict`` items, so "creating"
    one makes a plain ``OrderedDict``: nothing of MMCV or addict runs.
    """

    def __new__(cls, *args, **kwargs):
        return OrderedDict()


def legacy_safe_globals() -> list:
    """The allow-list for old MMDetection / MMCV pickles (see the module docstring).

    Entries are ``(callable, 'module.name')``: the name as the pickle spells it (numpy 1 and 2
    spell its modules differently) and the object torch may call for it.
    """
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    entries: list = []
    for mod in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        entries += [(multiarray._reconstruct, f'{mod}._reconstruct'),
                    (multiarray.scalar, f'{mod}.scalar')]
    entries += [(np.ndarray, 'numpy.ndarray'), (np.dtype, 'numpy.dtype')]
    # numpy >= 1.25 pickles dtypes by their class (numpy.dtypes.Float32DType, ...)
    dtypes = getattr(np, 'dtypes', None)
    for name in dir(dtypes) if dtypes is not None else ():
        cls = getattr(dtypes, name)
        if isinstance(cls, type) and issubclass(cls, np.dtype):
            entries.append((cls, f'numpy.dtypes.{name}'))
    for name in ('mmcv.utils.config.ConfigDict', 'mmcv.Config.ConfigDict',
                 'mmengine.config.config.ConfigDict', 'addict.addict.Dict'):
        entries.append((LegacyConfigDict, name))
    return entries


def load_weights_file(filename: str | os.PathLike, map_location: str | torch.device = 'cpu',
                      weights_only: bool = True) -> Any:
    """Read a checkpoint file: ``.safetensors`` by safetensors, anything else by ``torch.load``.

    With ``weights_only`` (the default) the unpickler accepts tensors and plain containers
    plus :func:`legacy_safe_globals`; other globals raise torch's ``UnpicklingError``.
    """
    if is_safetensors(filename):
        return load_safetensors(filename, map_location)
    if not weights_only:
        return torch.load(filename, map_location=map_location, weights_only=False)
    with torch.serialization.safe_globals(legacy_safe_globals()):
        return torch.load(filename, map_location=map_location, weights_only=True)
