"""Sliced inference on large images: BCCD test images upscaled 3x, AP with and without slices.

BCCD's cells are 30-200 pixels in 640x480 images. Upscaled 3x (1920x1440) they stand for
"the same scene shot by a bigger sensor": a detector run on the whole image resizes it back
to its test scale, so it sees what it saw at 1x; sliced inference detects in tiles (each
resized to the test scale), so objects reach the network larger. The script writes the
upscaled copy (images and a COCO file with boxes scaled alike) into --work-dir, then runs
the checkpoint and reports COCO box AP for:

- ``1x whole``: the original images (reference);
- ``3x whole``: the upscaled images, whole;
- ``3x sliced``: the upscaled images, ``--slice`` tiles with ``--overlap``, merged by
  ``--merge``;
- ``3x sliced+full``: the same plus a whole-image pass merged in (SAHI's standard+sliced).

    python benchmarks/bench_sliced.py configs/retinanet/retinanet_r18_fpn_1x_bccd.py \\
        work_dirs/retinanet_r18_fpn_1x_bccd/latest.pth --slice 640 --overlap 0.2

Prints a Markdown table and writes it as JSON with ``--out``. Use a checkpoint trained on
BCCD; an untrained or barely trained one proves only that the script runs.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import sys
import tempfile
import time

import cv2

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def upscale_coco(ann_file: str, img_prefix: str, out_dir: str, scale: float,
                 num_images: int | None) -> str:
    """Write ``scale``-times larger copies of the images of ``ann_file`` (first
    ``num_images``) and their COCO file with scaled boxes; return that file's path."""
    with open(ann_file, encoding='utf-8') as f:
        coco = json.load(f)
    images = coco['images'][:num_images] if num_images else coco['images']
    keep = {im['id'] for im in images}
    new_images = []
    for im in images:
        img = cv2.imread(osp.join(img_prefix, im['file_name']))
        if img is None:
            raise SystemExit(f'cannot read {osp.join(img_prefix, im["file_name"])}')
        big = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        out = osp.join(out_dir, im['file_name'])
        os.makedirs(osp.dirname(out), exist_ok=True)
        cv2.imwrite(out, big, [cv2.IMWRITE_JPEG_QUALITY, 95])
        new_images.append(dict(im, width=big.shape[1], height=big.shape[0]))
    anns = [dict(a, bbox=[v * scale for v in a['bbox']], area=a.get('area', 0) * scale ** 2)
            for a in coco['annotations'] if a['image_id'] in keep]
    path = osp.join(out_dir, f'x{scale:g}.json')
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(dict(coco, images=new_images, annotations=anns), f)
    return path


def build_dataset(cfg, ann_file: str, img_prefix: str, classes):
    from detforge.commands._analysis_common import build_test_dataset
    cfg.data.test.update(type='CocoDataset', ann_file=ann_file, img_prefix=img_prefix,
                         classes=classes)
    return build_test_dataset(cfg)


def detect_all(detect, dataset) -> list:
    from detforge.commands._analysis_common import image_path
    return [detect([image_path(dataset, i)])[0] for i in range(len(dataset.data_infos))]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--ann-file', default=osp.join(REPO, 'data/bccd/annotations/test.json'))
    parser.add_argument('--img-prefix', default=osp.join(REPO, 'data/bccd'))
    parser.add_argument('--scale', type=float, default=3.0)
    parser.add_argument('--slice', type=int, default=640, help='tile side in pixels')
    parser.add_argument('--overlap', type=float, default=0.2)
    parser.add_argument('--merge', choices=['nms', 'merge'], default='nms')
    parser.add_argument('--iou-thr', type=float, default=0.5)
    parser.add_argument('--num-images', type=int, default=None, help='first N (default all)')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--work-dir', default=None, help='where the upscaled copy goes '
                        '(default: a temporary folder)')
    parser.add_argument('--out', default=None, help='write the table as JSON here')
    args = parser.parse_args(argv)

    from detforge.apis.inference import inference_detector, init_detector
    from detforge.apis.sliced_inference import SlicedDetector
    from detforge.commands._analysis_common import load_config

    model = init_detector(args.config, args.checkpoint, device=args.device)
    classes = list(model.CLASSES)
    work = args.work_dir or tempfile.mkdtemp(prefix='bench_sliced_')
    big_ann = upscale_coco(args.ann_file, args.img_prefix, work, args.scale, args.num_images)
    small_ann = upscale_coco(args.ann_file, args.img_prefix, osp.join(work, 'x1'), 1.0,
                             args.num_images)

    def whole(imgs):
        return inference_detector(model, imgs)

    sliced = dict(slice_size=args.slice, overlap=args.overlap, merge=args.merge,
                  iou_thr=args.iou_thr)
    runs = [('1x whole', small_ann, osp.join(work, 'x1'), whole),
            (f'{args.scale:g}x whole', big_ann, work, whole),
            (f'{args.scale:g}x sliced', big_ann, work, SlicedDetector(model, **sliced)),
            (f'{args.scale:g}x sliced+full', big_ann, work,
             SlicedDetector(model, full_image=True, **sliced))]
    rows = []
    for name, ann, prefix, detect in runs:
        dataset = build_dataset(load_config(args.config), ann, prefix, classes)
        start = time.perf_counter()
        results = detect_all(detect, dataset)
        seconds = time.perf_counter() - start
        metric = dataset.evaluate(results, metric='bbox', logger='silent')
        rows.append(dict(run=name, mAP=metric['bbox_mAP'], mAP_50=metric['bbox_mAP_50'],
                         mAP_s=metric['bbox_mAP_s'], seconds=round(seconds, 1),
                         images=len(results)))
        print(f'{name}: bbox_mAP {metric["bbox_mAP"]:.3f}', file=sys.stderr)
    print(f'\nslice {args.slice}, overlap {args.overlap}, merge {args.merge}, '
          f'checkpoint {args.checkpoint}\n')
    print('| run | mAP | mAP_50 | mAP_s | seconds | images |')
    print('|---|---|---|---|---|---|')
    for r in rows:
        print(f'| {r["run"]} | {r["mAP"]:.3f} | {r["mAP_50"]:.3f} | {r["mAP_s"]:.3f} | '
              f'{r["seconds"]} | {r["images"]} |')
    if args.out:
        with open(args.out, 'w', encoding='utf-8') as f:
            json.dump(dict(settings=vars(args), rows=rows), f, indent=1)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
