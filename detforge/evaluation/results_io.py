"""Read and write result files (``detforge test --out``) without trusting them as code.

Two forms:

- ``.pkl``: what ``detforge test --out results.pkl`` writes (MMDetection's habit), a pickled
  list over images of lists over classes of ``(n, 5)`` arrays. Unpickling can run code, so
  it is read with an unpickler that only rebuilds numpy arrays and plain containers.
- ``.json``: ``{"format": "detforge-results", "num_classes": K, "results": [[[[x1, y1, x2,
  y2, s], ...] per class] per image]}``, written by :func:`dump_results`.
"""
from __future__ import annotations

import json
import os
import pickle
from typing import Any

import numpy as np

from detforge.registry import DetforgeError

__all__ = ['load_results', 'dump_results', 'check_results_match', 'RestrictedUnpickler']

_ALLOWED_GLOBALS = {
    ('numpy', 'ndarray'), ('numpy', 'dtype'),
    ('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
    ('numpy.core.multiarray', 'scalar'), ('numpy._core.multiarray', 'scalar'),
    ('numpy.core.numeric', '_frombuffer'), ('numpy._core.numeric', '_frombuffer'),
    ('numpy', 'float32'), ('numpy', 'float64'), ('numpy', 'int64'), ('numpy', 'int32'),
    ('numpy.dtypes', 'Float32DType'), ('numpy.dtypes', 'Float64DType'),
    ('numpy.dtypes', 'Int64DType'), ('numpy.dtypes', 'Int32DType'),
    ('builtins', 'list'), ('builtins', 'tuple'), ('builtins', 'dict'), ('builtins', 'set'),
    ('builtins', 'frozenset'), ('builtins', 'slice'), ('builtins', 'bytearray'),
    ('collections', 'OrderedDict'), ('_codecs', 'encode'), ('builtins', 'bytes'),
    ('__builtin__', 'bytes'), ('__builtin__', 'list'), ('__builtin__', 'tuple'),
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, numbers, strings and containers; refuses every other global."""

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f'refusing to load {module}.{name}: a results file should hold only numpy arrays '
            f'and lists')


def load_results(path: str | os.PathLike) -> list:
    """The results in ``path`` (``.pkl`` or ``.json``): per image, per class ``(n, 5)`` arrays."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DetforgeError(f'results file not found: {path}')
    if path.endswith('.json'):
        try:
            with open(path) as f:
                data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DetforgeError(f'{path} is not a valid JSON file: {e}') from None
        raw = data.get('results') if isinstance(data, dict) else data
        if not isinstance(raw, list):
            raise DetforgeError(f'{path}: expected a detforge results file ({{"results": '
                                f'[per image [per class [[x1, y1, x2, y2, score], ...]]]}})')
        return [[np.asarray(c, dtype=np.float32).reshape(-1, 5) for c in img] for img in raw]
    try:
        with open(path, 'rb') as f:
            results = RestrictedUnpickler(f).load()
    except pickle.UnpicklingError as e:
        raise DetforgeError(f'{path}: {e}') from None
    except (EOFError, ValueError, TypeError, AttributeError, ImportError) as e:
        raise DetforgeError(f'{path} is not a results pickle ({type(e).__name__}: {e})') from None
    if not isinstance(results, list):
        raise DetforgeError(f'{path}: expected a list of per-image results, got '
                            f'{type(results).__name__}')
    return [list(r[0]) if isinstance(r, tuple) else r for r in results]


def dump_results(results: list, path: str | os.PathLike) -> None:
    """Write results as ``.json`` (safe to share) or ``.pkl`` (what MMDetection writes)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if path.endswith('.json'):
        payload: Any = dict(format='detforge-results',
                            num_classes=len(results[0]) if results else 0,
                            results=[[np.asarray(c, dtype=np.float64).round(3).tolist()
                                      for c in img] for img in results])
        with open(path, 'w') as f:
            json.dump(payload, f)
    else:
        with open(path, 'wb') as f:
            pickle.dump([[np.asarray(c, dtype=np.float32) for c in img] for img in results], f)


def check_results_match(dataset, results: list, source: str = 'the results') -> None:
    """Raise :class:`DetforgeError` unless ``results`` has one entry per image of ``dataset``
    and one ``(n, 5)`` array per class."""
    num_images = len(dataset.data_infos) if hasattr(dataset, 'data_infos') else len(dataset)
    num_classes = len(dataset.CLASSES)
    if len(results) != num_images:
        raise DetforgeError(
            f'{source} hold {len(results)} images but the test data set has {num_images}; '
            f'are they from another dataset (or another split)?')
    for i, per_image in enumerate(results):
        if isinstance(per_image, np.ndarray) or len(per_image) != num_classes:
            got = 'one array (proposals)' if isinstance(per_image, np.ndarray) \
                else f'{len(per_image)} classes'
            raise DetforgeError(
                f'{source}: image {i} has {got} but the data set has {num_classes} classes '
                f'({", ".join(dataset.CLASSES)}); are they from another dataset or model?')
        for c, arr in enumerate(per_image):
            a = np.asarray(arr)
            if a.size and (a.ndim != 2 or a.shape[1] != 5):
                raise DetforgeError(f'{source}: image {i} class {c}: expected an (n, 5) array, '
                                    f'got shape {a.shape}')
