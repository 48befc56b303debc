"""Evaluation: COCO box AP / proposal AR, VOC mAP, proposal recall, result files.

Importing this package registers the metric classes (``CocoMetric``, ``VOCMetric``) in
``METRICS``. Every module of this package is imported here (importing the package registers its
classes); a new module must be added below.
"""
from .coco_metric import (evaluate_coco, results2json, det2json, proposal2json, xyxy2xywh,
                          build_coco_gt, flatten_det_results, per_class_ap, CocoMetric,
                          COCO_BACKENDS)
from .coco_segm import has_masks, segm2json
from .recalls import eval_recalls, box_iou_np
from .results_io import load_results, dump_results, check_results_match, RestrictedUnpickler
from .table import format_table
from .voc_metric import eval_map, average_precision, tpfp_default, evaluate_voc, VOCMetric

__all__ = ['evaluate_coco', 'results2json', 'det2json', 'proposal2json', 'xyxy2xywh',
           'build_coco_gt', 'flatten_det_results', 'per_class_ap', 'CocoMetric', 'COCO_BACKENDS',
           'has_masks', 'segm2json', 'eval_recalls', 'box_iou_np', 'load_results', 'dump_results',
           'check_results_match', 'RestrictedUnpickler', 'format_table', 'eval_map',
           'average_precision', 'tpfp_default', 'evaluate_voc', 'VOCMetric']
