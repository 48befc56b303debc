"""Mask heads of two-stage detectors: per-RoI mask logits (Mask R-CNN)."""
from detforge.utils.autoload import import_submodules

__all__ = import_submodules(__name__, __path__, globals())
