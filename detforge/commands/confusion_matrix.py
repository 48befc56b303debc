"""Confusion matrix and per-class precision-recall curves of a results file.

    detforge confusion-matrix CONFIG RESULTS.pkl OUT_DIR [--score-thr 0.3] [--tp-iou-thr 0.5]

Rows are the true class (last row: background, i.e. detections that overlap no GT box),
columns the predicted class (last column: background, i.e. GT boxes no detection of their
class found). A detection with score >= ``--score-thr`` is counted once for every GT box it
overlaps with IoU >= ``--tp-iou-thr`` (MMDetection's rule). Writes
``OUT_DIR/confusion_matrix.png`` (row-normalised, %), ``confusion_matrix.json`` (counts) and
``pr_curve_<class>.png`` per class (all detections, IoU >= ``--tp-iou-thr``, VOC matching).
"""
from __future__ import annotations

import json
import os
import re

import numpy as np

from detforge.commands._analysis_common import (add_cfg_options, build_test_dataset,
                                                flatten_result, load_checked_results,
                                                load_config)
from detforge.registry import DetforgeError

NAME = 'confusion-matrix'
HELP = 'confusion matrix and per-class precision-recall curves (PNG) from a results file'


def add_arguments(parser):
    parser.add_argument('config', help='config file (its data.test is the data set)')
    parser.add_argument('results', help='results file from `detforge test --out` (.pkl/.json)')
    parser.add_argument('out_dir', help='folder for the PNGs and the JSON')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='detections below this score are not counted (default 0.3)')
    parser.add_argument('--tp-iou-thr', type=float, default=0.5,
                        help='IoU for a detection to match a GT box (default 0.5)')
    add_cfg_options(parser)


def calculate_confusion_matrix(dataset, results, score_thr=0.3, tp_iou_thr=0.5) -> np.ndarray:
    """``(K + 1, K + 1)`` counts: rows true class, columns predicted class, last = background."""
    from detforge.evaluation.recalls import box_iou_np
    num_classes = len(dataset.CLASSES)
    matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    for i, result in enumerate(results):
        ann = dataset.get_ann_info(i)
        gt_boxes = np.asarray(ann['bboxes'], np.float64).reshape(-1, 4)
        gt_labels = np.asarray(ann['labels'], np.int64).reshape(-1)
        dets, det_labels = flatten_result(result)
        keep = dets[:, 4] >= score_thr
        dets, det_labels = dets[keep], det_labels[keep]
        match = (box_iou_np(dets, gt_boxes) >= tp_iou_thr if len(dets) and len(gt_boxes)
                 else np.zeros((len(dets), len(gt_boxes)), dtype=bool))
        det_idx, gt_idx = np.nonzero(match)
        np.add.at(matrix, (gt_labels[gt_idx], det_labels[det_idx]), 1)
        np.add.at(matrix, (num_classes, det_labels[~match.any(axis=1)]), 1)
        found = (match & (det_labels[:, None] == gt_labels[None, :])).any(axis=0)
        np.add.at(matrix, (gt_labels[~found], num_classes), 1)
    return matrix


def plot_confusion_matrix(matrix, labels, out_file, title='Normalized confusion matrix (%)'):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows = matrix.sum(axis=1, keepdims=True)
    percent = np.where(rows > 0, matrix / np.maximum(rows, 1) * 100, 0.0)
    n = len(labels)
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * n + 2), max(3.5, 0.6 * n + 1.5)), dpi=120)
    im = ax.imshow(percent, cmap='Blues', vmin=0, vmax=100)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), labels=labels, rotation=45, ha='right')
    ax.set_yticks(range(n), labels=labels)
    ax.set_xlabel('Predicted label')
    ax.set_ylabel('Ground truth label')
    ax.set_title(title)
    for r in range(n):
        for c in range(n):
            ax.text(c, r, f'{percent[r, c]:.0f}\n({matrix[r, c]})', ha='center', va='center',
                    fontsize=7, color='white' if percent[r, c] > 50 else 'black')
    fig.tight_layout()
    fig.savefig(out_file)
    plt.close(fig)


def plot_pr_curves(dataset, results, out_dir, iou_thr=0.5) -> list[str]:
    """One ``pr_curve_<class>.png`` per class; returns the file names."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from detforge.evaluation.voc_metric import eval_map
    annotations = [dataset.get_ann_info(i) for i in range(len(results))]
    _, per_class = eval_map(results, annotations, iou_thr=iou_thr, logger='silent')
    files = []
    for name, r in zip(dataset.CLASSES, per_class):
        fig, ax = plt.subplots(figsize=(4.5, 4), dpi=100)
        recall, precision = np.asarray(r['recall']), np.asarray(r['precision'])
        if recall.size:
            ax.plot(np.r_[0, recall], np.r_[precision[0], precision], lw=1.5)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel('Recall')
        ax.set_ylabel('Precision')
        ax.grid(alpha=0.3)
        ax.set_title(f'{name}: AP@{iou_thr:.2f} = {r["ap"]:.3f} ({r["num_gts"]} GT)')
        fig.tight_layout()
        safe = re.sub(r'[^A-Za-z0-9_.-]+', '_', str(name))
        path = os.path.join(out_dir, f'pr_curve_{safe}.png')
        fig.savefig(path)
        plt.close(fig)
        files.append(path)
    return files


def main(args):
    if not 0 <= args.score_thr <= 1 or not 0 < args.tp_iou_thr <= 1:
        raise DetforgeError('--score-thr must be in [0, 1] and --tp-iou-thr in (0, 1]')
    cfg = load_config(args.config, args.cfg_options)
    dataset = build_test_dataset(cfg)
    results = load_checked_results(args.results, dataset)
    os.makedirs(args.out_dir, exist_ok=True)
    matrix = calculate_confusion_matrix(dataset, results, args.score_thr, args.tp_iou_thr)
    labels = list(dataset.CLASSES) + ['background']
    png = os.path.join(args.out_dir, 'confusion_matrix.png')
    plot_confusion_matrix(matrix, labels, png)
    with open(os.path.join(args.out_dir, 'confusion_matrix.json'), 'w') as f:
        json.dump(dict(labels=labels, score_thr=args.score_thr, tp_iou_thr=args.tp_iou_thr,
                       matrix=matrix.tolist()), f, indent=1)
    pr_files = plot_pr_curves(dataset, results, args.out_dir, args.tp_iou_thr)
    print(f'wrote {png}, confusion_matrix.json and {len(pr_files)} precision-recall curves '
          f'to {args.out_dir}')
    return 0
