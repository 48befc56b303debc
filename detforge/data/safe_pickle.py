"""Read pickled annotation data without running code from the file.

A pickle can name any importable function and have it called while loading
(``__reduce__``), so ``pickle.load`` of a file from elsewhere runs whatever the file says.
Annotation and proposal files are data: :func:`load_data_pickle` admits only the globals
that plain data needs (numpy arrays, dtypes and scalars, ``OrderedDict``, sets) and
refuses any other, naming it, unless the caller says the file is trusted
(``allow_pickle=True`` on the dataset). Like ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import io
import pickle

from .errors import DatasetError

__all__ = ['load_data_pickle', 'UnsafePickleError']


class UnsafePickleError(DatasetError):
    """A pickle names a global that would run code when the file is loaded."""


class _RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        # the same allow-list as result files (detforge test --out results.pkl)
        from detforge.evaluation.results_io import _ALLOWED_GLOBALS
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise _RefusedGlobal(f'{module}.{name}')


def load_data_pickle(path: str, allow_pickle: bool = False):
    """The object pickled in ``path``; with ``allow_pickle=False`` (the default) a file
    that needs any global beyond plain data raises :class:`UnsafePickleError`."""
    with open(path, 'rb') as f:
        data = f.read()
    if allow_pickle:
        return pickle.loads(data)
    try:
        return _DataUnpickler(io.BytesIO(data)).load()
    except _RefusedGlobal as e:
        raise UnsafePickleError(
            f'{path}: this pickle holds objects that would run code when unpickled '
            f'(global {e.name}), so it was not loaded; annotation files are read as data. '
            f'If you made the file or trust it, build the dataset with allow_pickle=True '
            f'(e.g. --cfg-options data.train.allow_pickle=True), or convert it to JSON') from None
