"""Data transforms (registry ``PIPELINES`` = ``TRANSFORMS``); importing registers them all."""
from detforge.utils.autoload import import_submodules

__all__ = import_submodules(__name__, __path__, globals())
