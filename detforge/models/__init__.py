"""Detectors and their parts; every module here registers its classes on import."""
from detforge.utils.autoload import import_submodules

__all__ = import_submodules(__name__, __path__, globals())
