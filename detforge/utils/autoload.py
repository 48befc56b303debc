"""Import every module of a package so that its classes register themselves.

A package ``__init__`` that says::

    from detforge.utils.autoload import import_submodules
    __all__ = import_submodules(__name__, __path__, globals())

imports each of its modules (and sub-packages) in name order and re-exports the names each
lists in ``__all__``; several people can add modules to the package without editing it.
"""
from __future__ import annotations

import importlib
import pkgutil


def import_submodules(package: str, path, namespace: dict) -> list[str]:
    exported: list[str] = []
    for info in sorted(pkgutil.iter_modules(path), key=lambda m: m.name):
        if info.name.startswith('_'):
            continue
        module = importlib.import_module(f'{package}.{info.name}')
        names = getattr(module, '__all__', None)
        if names is None:
            continue
        for name in names:
            namespace[name] = getattr(module, name)
        exported.extend(names)
    return exported
