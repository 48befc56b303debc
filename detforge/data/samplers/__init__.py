"""Samplers (registry ``SAMPLERS``): aspect-ratio groups, distributed, exact resume."""
from detforge.utils.autoload import import_submodules

__all__ = import_submodules(__name__, __path__, globals())
