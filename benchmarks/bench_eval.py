"""COCO box evaluation speed: detforge's ``evaluate_coco`` against plain pycocotools.

Synthetic data: N images (640x480) with 1-15 GT boxes of C classes each, and D detections
per image (GT boxes jittered, some with a wrong class, random scores). Both sides start
from the detector's output (per image, per class ``(n, 5)`` arrays) and end with the AP
numbers: pycocotools the way users ran it (results to COCO JSON dicts, ``loadRes``,
``COCOeval``), ours through ``evaluate_coco`` with each of its backends: ``pycocotools``
(the same COCOeval, fed arrays instead of JSON dicts) and ``faster_coco_eval`` (its C++
COCOeval, the default when installed). Most of the speed-up is faster-coco-eval's, so both
are reported. Rounds rotate the order of the three; the median is reported, and the AP
numbers are checked to agree.

    python benchmarks/bench_eval.py --num-images 5000 --dets 100 --rounds 3
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import statistics
import time
from types import SimpleNamespace

import numpy as np


def make_data(num_images: int, num_classes: int, dets: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images, anns, results = [], [], []
    for i in range(num_images):
        images.append(dict(id=i + 1, width=640, height=480, file_name=f'{i:06d}.jpg'))
        k = int(rng.integers(1, 16))
        xy = rng.uniform(0, 500, (k, 2))
        wh = rng.uniform(4, 200, (k, 2))
        labels = rng.integers(0, num_classes, k)
        for box, label in zip(np.hstack([xy, wh]).tolist(), labels.tolist()):
            anns.append(dict(id=len(anns) + 1, image_id=i + 1, category_id=label + 1, bbox=box,
                             area=box[2] * box[3], iscrowd=0))
        src = rng.integers(0, k, dets)
        boxes = np.hstack([xy, xy + wh])[src] + rng.normal(0, 8, (dets, 4))
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        det_labels = np.where(rng.random(dets) < 0.8, labels[src],
                              rng.integers(0, num_classes, dets))
        d = np.hstack([boxes, rng.random((dets, 1))]).astype(np.float32)
        results.append([d[det_labels == c] for c in range(num_classes)])
    data = dict(images=images, annotations=anns,
                categories=[dict(id=c + 1, name=f'class{c}') for c in range(num_classes)])
    dataset = SimpleNamespace(
        coco=SimpleNamespace(dataset=data), img_ids=[im['id'] for im in images],
        cat_ids=list(range(1, num_classes + 1)),
        CLASSES=tuple(f'class{c}' for c in range(num_classes)),
        data_infos=[dict(im, filename=im['file_name']) for im in images])
    return dataset, results


def plain_pycocotools(dataset, results):
    """What a user of pycocotools writes: JSON-style dicts, loadRes, COCOeval."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = copy.deepcopy(dataset.coco.dataset)
        gt.createIndex()
        records = []
        for img_id, per_image in zip(dataset.img_ids, results):
            for label, dets in enumerate(per_image):
                for x1, y1, x2, y2, score in dets.tolist():
                    records.append(dict(image_id=img_id, category_id=dataset.cat_ids[label],
                                        bbox=[x1, y1, x2 - x1, y2 - y1], score=score))
        dt = gt.loadRes(records)
        coco_eval = COCOeval(gt, dt, 'bbox')
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return np.asarray(coco_eval.stats[:6])


def ours(dataset, results, backend):
    from detforge.evaluation.coco_metric import evaluate_coco
    out = evaluate_coco(dataset, results, logger='silent', backend=backend)
    return np.asarray([out[k] for k in ('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75', 'bbox_mAP_s',
                                        'bbox_mAP_m', 'bbox_mAP_l')])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--num-images', type=int, default=5000)
    parser.add_argument('--dets', type=int, default=100, help='detections per image')
    parser.add_argument('--classes', type=int, default=5)
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--backends', nargs='+', default=['pycocotools', 'faster_coco_eval'],
                        choices=['faster_coco_eval', 'pycocotools'],
                        help='backends of evaluate_coco to time (default: both)')
    args = parser.parse_args()

    t = time.perf_counter()
    dataset, results = make_data(args.num_images, args.classes, args.dets)
    print(f'data: {args.num_images} images x {args.dets} detections, {args.classes} classes, '
          f'{len(dataset.coco.dataset["annotations"])} GT boxes '
          f'(made in {time.perf_counter() - t:.1f}s)')
    names = ['plain pycocotools'] + [f'detforge/{b}' for b in args.backends]
    times = {name: [] for name in names}
    stats = {}
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t = time.perf_counter()
            stats[name] = (plain_pycocotools(dataset, results) if name == 'plain pycocotools'
                           else ours(dataset, results, name.split('/', 1)[1]))
            times[name].append(time.perf_counter() - t)
            print(f'round {r + 1}: {name:28s} {times[name][-1]:7.2f}s')
    ref = stats['plain pycocotools']
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f'AP/AP50/AP75/APs/APm/APl {"plain pycocotools":28s} {" ".join(f"{v:.6f}" for v in ref)}')
    worst = 0.0
    for name in names[1:]:
        diff = float(np.abs(ref - stats[name]).max())
        worst = max(worst, diff)
        print(f'AP/AP50/AP75/APs/APm/APl {name:28s} '
              f'{" ".join(f"{v:.6f}" for v in stats[name])}  (max |difference| {diff:.2e})')
    for name in names[1:]:
        print(f'median time: plain pycocotools {med["plain pycocotools"]:.2f}s, {name} '
              f'{med[name]:.2f}s -> ratio {med[name] / med["plain pycocotools"]:.2f}')
    return 0 if worst < 1e-6 else 1


if __name__ == '__main__':
    raise SystemExit(main())
