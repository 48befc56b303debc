"""Evaluation: COCO box AP / proposal AR, VOC mAP, proposal recall, result files.

Importing this package registers the metric classes (``CocoMetric``, ``VOCMetric``) in
``METRICS``; every module is imported here, so a new metric module needs no edit.
"""
from detforge.utils.autoload import import_submodules

__all__ = import_submodules(__name__, __path__, globals())
