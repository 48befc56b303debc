"""Show the images a model does best and worst on.

    detforge analyze-results CONFIG RESULTS.pkl OUT_DIR [--topk 5] [--show-score-thr 0.3]

Each image gets its own AP (VOC matching, mean over IoU 0.50:0.05:0.95, as MMDetection's
analyze_results); the ``topk`` best are drawn into ``OUT_DIR/good/`` and the worst into
``OUT_DIR/bad/`` as ``<rank>_<ap>_<image name>``: detections in class colours, ground
truth in thin white boxes. ``OUT_DIR/per_image_ap.json`` lists every image's AP.
"""
from __future__ import annotations

import json
import os

import cv2
import numpy as np

from detforge.commands._analysis_common import (add_cfg_options, build_test_dataset,
                                                image_path, load_checked_results, load_config)
from detforge.registry import DetforgeError

NAME = 'analyze-results'
HELP = 'write the best and worst images by per-image AP, with boxes drawn'


def add_arguments(parser):
    parser.add_argument('config', help='config file (its data.test is the data set)')
    parser.add_argument('results', help='results file from `detforge test --out` (.pkl/.json)')
    parser.add_argument('out_dir', help='folder for good/ and bad/ images')
    parser.add_argument('--topk', type=int, default=5, help='images in each group (default 5)')
    parser.add_argument('--show-score-thr', type=float, default=0.3,
                        help='draw detections scoring at least this (default 0.3)')
    add_cfg_options(parser)


def per_image_ap(dataset, results, iou_thrs=np.arange(0.5, 0.96, 0.05)) -> np.ndarray:
    """``(num_images,)`` AP of each image alone (mean over classes present and IoUs)."""
    from detforge.evaluation.voc_metric import eval_map
    aps = np.zeros(len(results))
    for i, result in enumerate(results):
        ann = dataset.get_ann_info(i)
        per_thr = [eval_map([result], [ann], iou_thr=float(t), logger='silent')[0]
                   for t in iou_thrs]
        aps[i] = float(np.mean(per_thr))
    return aps


def draw_result_with_gt(dataset, index, result, score_thr):
    """The image ``index`` of ``dataset`` (BGR) with its detections in class colours and its
    ground-truth boxes in thin white."""
    from detforge.visualization.draw import draw_det_result, read_image
    img = read_image(image_path(dataset, index))
    gt = np.asarray(dataset.get_ann_info(index)['bboxes']).reshape(-1, 4)
    for x1, y1, x2, y2 in np.round(gt).astype(int).tolist():
        cv2.rectangle(img, (x1, y1), (x2, y2), (255, 255, 255), 1)
    return draw_det_result(img, result, class_names=dataset.CLASSES, score_thr=score_thr,
                           thickness=2)


def main(args):
    if args.topk < 1:
        raise DetforgeError(f'--topk must be at least 1, got {args.topk}')
    cfg = load_config(args.config, args.cfg_options)
    dataset = build_test_dataset(cfg)
    results = load_checked_results(args.results, dataset)
    aps = per_image_ap(dataset, results)
    order = np.argsort(-aps, kind='stable')
    topk = min(args.topk, len(order))
    groups = {'good': order[:topk], 'bad': order[::-1][:topk]}
    from detforge.visualization.draw import imwrite
    written = 0
    for group, indices in groups.items():
        folder = os.path.join(args.out_dir, group)
        os.makedirs(folder, exist_ok=True)
        for rank, i in enumerate(indices.tolist()):
            name = os.path.basename(dataset.data_infos[i]['filename'])
            out = os.path.join(folder, f'{rank:02d}_{aps[i]:.3f}_{name}')
            # imwrite takes any file name
            imwrite(draw_result_with_gt(dataset, i, results[i], args.show_score_thr), out)
            written += 1
    with open(os.path.join(args.out_dir, 'per_image_ap.json'), 'w') as f:
        json.dump({os.path.basename(dataset.data_infos[i]['filename']): round(float(aps[i]), 4)
                   for i in order.tolist()}, f, indent=1)
    print(f'wrote {written} images to {args.out_dir}/good and {args.out_dir}/bad '
          f'(per-image AP from {aps.min():.3f} to {aps.max():.3f})')
    return 0
