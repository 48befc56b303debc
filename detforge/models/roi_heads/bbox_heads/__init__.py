"""Box heads of two-stage detectors: classify RoIs and regress their boxes."""
from detforge.utils.autoload import import_submodules

__all__ = import_submodules(__name__, __path__, globals())
