"""Write the training images as the model sees them, after the pipeline, with their boxes.

    detforge browse-dataset configs/_base_/datasets/bccd.py --output-dir work_dirs/browse --num 8

The train pipeline runs without its packing steps (``DefaultFormatBundle``, ``Collect``,
``ImageToTensor``...), so resizing, flips and crops show; each image is written as a PNG
named after its source file, with the ground-truth boxes and class names drawn.
"""
from __future__ import annotations

import copy
import os
import os.path as osp

import cv2
import numpy as np

from detforge.config import DictAction

NAME = 'browse-dataset'
HELP = 'draw the training images after the pipeline, with their boxes, into PNG files'

SKIP_TYPES = ('DefaultFormatBundle', 'Collect', 'ImageToTensor', 'ToTensor', 'Normalize')


def add_arguments(parser) -> None:
    parser.add_argument('config', help='config file with data.train')
    parser.add_argument('--output-dir', required=True, help='folder for the PNG files')
    parser.add_argument('--num', type=int, default=10, help='number of images (default 10)')
    parser.add_argument('--skip-type', nargs='+', default=list(SKIP_TYPES),
                        help='pipeline steps to leave out (default: the packing steps)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='override settings of the config')


def _strip(pipeline, skip):
    out = []
    for t in pipeline:
        t = copy.deepcopy(dict(t))
        if t.get('type') in skip:
            continue
        if 'transforms' in t and isinstance(t['transforms'], list):
            t['transforms'] = _strip(t['transforms'], skip)
        out.append(t)
    return out


def retrieve_train_cfg(cfg, skip):
    """``data.train`` with the packing steps removed from every pipeline in it."""
    train = copy.deepcopy(cfg.data.train)

    def visit(node):
        if isinstance(node, list):
            for n in node:
                visit(n)
        elif isinstance(node, dict):
            if isinstance(node.get('pipeline'), list):
                node['pipeline'] = _strip(node['pipeline'], skip)
            for key in ('dataset', 'datasets'):
                if key in node:
                    visit(node[key])

    visit(train)
    return train


def _draw(img, boxes, labels, class_names):
    try:
        from detforge.visualization.draw import imshow_det_bboxes
    except ImportError:
        imshow_det_bboxes = None
    if imshow_det_bboxes is not None:
        return imshow_det_bboxes(img, boxes, labels, class_names=class_names)
    img = np.ascontiguousarray(img)
    for box, label in zip(boxes.astype(int), labels):
        cv2.rectangle(img, tuple(box[:2]), tuple(box[2:4]), (0, 255, 0), 2)
        name = class_names[label] if class_names else str(label)
        cv2.putText(img, name, (box[0], max(box[1] - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (0, 255, 0), 1)
    return img


def main(args) -> int:
    from detforge.data import build_dataset
    from detforge.registry import build_context
    from detforge.compat import load_config
    from detforge.visualization.draw import imwrite
    cfg = load_config(args.config, args.cfg_options)
    with build_context('data', 'train', filename=args.config):
        dataset = build_dataset(retrieve_train_cfg(cfg, set(args.skip_type)))
    os.makedirs(args.output_dir, exist_ok=True)
    class_names = list(dataset.CLASSES or ())
    n = min(args.num, len(dataset))
    for i in range(n):
        item = dataset[i]
        img = item['img']
        if hasattr(img, 'numpy'):  # packed anyway: (C, H, W) tensor
            img = img.numpy().transpose(1, 2, 0)
        img = np.clip(img, 0, 255).astype(np.uint8) if img.dtype != np.uint8 else img
        boxes = np.asarray(item.get('gt_bboxes', np.zeros((0, 4))), dtype=np.float32)
        labels = np.asarray(item.get('gt_labels', np.zeros(0)), dtype=np.int64)
        drawn = _draw(img, boxes, labels, class_names)
        stem = osp.splitext(osp.basename(item.get('filename', f'image_{i}')))[0]
        out = osp.join(args.output_dir, f'{i:04d}_{stem}.png')
        imwrite(drawn, out)  # any file name (cv2.imwrite crashes on non-UTF-8 ones)
    print(f'{n} images with their boxes written to {args.output_dir}')
    return 0
