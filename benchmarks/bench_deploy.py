"""Every CPU inference path side by side, against torchvision's eager model of the same weights.

    python benchmarks/bench_deploy.py [--num-images 30] [--warmup 3] [--threads 0]
        [--retina18-checkpoint work_dirs/bccd320/latest.pth] [--eval] [--out benchmarks/DEPLOY.md]

Rows per model (``detforge benchmark``'s backends; see ``detforge benchmark --help``):
``torchvision`` (eager, the baseline; R50 models only), ``pytorch`` (detforge eager), ``fused``
(batch norm folded), ``onnxruntime``, ``openvino`` (the static float32 export), ``int8`` and
``int8-openvino`` (QDQ INT8, 32 BCCD ``trainval`` calibration images, predictor convolutions
float32). Every row of a model is timed image by image in turn, in one process, on the same
BCCD test images (model forward only; the test pipeline is excluded).

- RetinaNet-R18, the BCCD-320 recipe (``retinanet_r18_fpn_gn-head_giou_ms_9e_bccd320.py``):
  with ``--retina18-checkpoint`` its trained weights (and ``--eval`` gives each row's test AP);
  without, random weights (speed only). torchvision has no GroupNorm RetinaNet head of this
  layout, so the baseline of this model is detforge's eager row.
- RetinaNet-R50-FPN and Faster R-CNN-R50-FPN at 640x480 (``*_tv.py`` configs, the BCCD image
  size, no resize): a seeded random torchvision ``retinanet_resnet50_fpn`` /
  ``fasterrcnn_resnet50_fpn`` (3 classes) converted with ``detforge convert``, so torchvision
  and detforge run the same weights.

Writes a Markdown report (date, commit, machine, the tables, ratios to the baseline).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CLASSES = ('RBC', 'WBC', 'Platelets')
BACKENDS = ['pytorch', 'fused', 'onnxruntime', 'openvino', 'int8', 'int8-openvino']

DATA = '''
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='MultiScaleFlipAug', img_scale=(640, 480), flip=False,
         transforms=[dict(type='Resize', keep_ratio=True), dict(type='RandomFlip'),
                     dict(type='Normalize', **img_norm_cfg), dict(type='Pad', size_divisor=32),
                     dict(type='ImageToTensor', keys=['img']), dict(type='Collect', keys=['img'])])]
data = dict(samples_per_gpu=1, workers_per_gpu=0,
    train=dict(type='CocoDataset', classes={classes!r}, ann_file='{root}/annotations/trainval.json',
               img_prefix='{root}/', pipeline=pipeline),
    test=dict(type='CocoDataset', classes={classes!r}, ann_file='{root}/annotations/test.json',
              img_prefix='{root}/', pipeline=pipeline))
'''


class TorchvisionRows(nn.Module):
    """A torchvision detector behind detforge's test-mode call, so it is timed in the same loop:
    the padded uint8 BGR batch is cropped to each image, made RGB float in [0, 1], and passed
    as a list (torchvision normalises and, with min_size=480/max_size=640, does not resize)."""

    def __init__(self, model):
        super().__init__()
        self.model = model.eval()

    def forward(self, img, img_metas, return_loss=False, rescale=True, **kwargs):
        if isinstance(img, (list, tuple)):
            img, img_metas = img[0], img_metas[0]
        images = []
        for im, meta in zip(img, img_metas):
            h, w = meta['img_shape'][:2]
            images.append(im[[2, 1, 0], :h, :w].float() / 255)
        return self.model(images)


def _bench_config(base: str, folder: Path, extra: str = '') -> Path:
    root = (REPO / 'data' / 'bccd').as_posix()
    path = folder / f'bench_{Path(base).stem}.py'
    path.write_text(f"_base_ = ['{(REPO / base).as_posix()}']\n{extra}\n"
                    + DATA.format(classes=CLASSES, root=root))
    return path


def _torchvision_case(kind: str, folder: Path):
    """(config, converted checkpoint, torchvision model) with the same seeded random weights."""
    torch.manual_seed(0)
    if kind == 'retinanet':
        from torchvision.models.detection import retinanet_resnet50_fpn

        from detforge.converters.torchvision_retinanet import convert_state_dict
        tv = retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3,
                                    min_size=480, max_size=640, detections_per_img=300)
        base = 'configs/retinanet/retinanet_r50_fpn_tv.py'
        extra = ("model = dict(backbone=dict(norm_cfg=dict(type='BN', eps=1e-5, requires_grad="
                 "False)), bbox_head=dict(num_classes=3, anchor_generator=dict("
                 "stride_rule='fixed')))")
    else:
        from torchvision.models.detection import fasterrcnn_resnet50_fpn

        from detforge.converters.torchvision_fasterrcnn import convert_state_dict
        tv = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=4,
                                     min_size=480, max_size=640)
        base = 'configs/faster_rcnn/faster_rcnn_r50_fpn_tv.py'
        extra = ("model = dict(backbone=dict(norm_cfg=dict(type='BN', eps=1e-5, requires_grad="
                 "False)), rpn_head=dict(anchor_generator=dict(stride_rule='fixed')), "
                 "roi_head=dict(bbox_head=dict(num_classes=3)))")
    # the exported graph steps anchors by the configured strides, so every row uses the fixed
    # rule: at 640x480 the P6/P7 anchors are 64/128 px apart instead of torchvision's 60/120
    # (the same computation; the detections of those levels differ from torchvision's a little)
    # spread the predictors so that scores differ (random init puts them all within 1e-6)
    with torch.no_grad():
        for name, p in tv.named_parameters():
            if name.endswith('weight') and any(k in name for k in ('cls_logits', 'bbox_pred',
                                                                   'cls_score')):
                p.normal_(0, 0.05)
    tv.eval()
    ckpt = folder / f'{kind}_r50_tv.pth'
    torch.save({'state_dict': convert_state_dict(tv.state_dict()),
                'meta': {'CLASSES': CLASSES}}, ckpt)
    return _bench_config(base, folder, extra), ckpt, TorchvisionRows(tv)


def run_model(title, cfg_path, ckpt, baseline, args, lines):
    from detforge.commands._analysis_common import build_test_dataset, load_config
    from detforge.commands.benchmark import (build_backends, evaluate, format_table,
                                             time_latency, time_throughput)
    cfg = load_config(str(cfg_path))
    dataset = build_test_dataset(cfg)
    with tempfile.TemporaryDirectory() as workdir:
        models = build_backends(cfg, str(ckpt) if ckpt else None, BACKENDS,
                                threads=args.threads, workdir=workdir)
        if baseline is not None:
            models = {'torchvision': baseline, **models}
        total = args.warmup + args.num_images
        samples = [dataset[k % len(dataset)] for k in range(total)]
        seconds = time_latency(models, samples, args.warmup)
        best = time_throughput(models, samples[args.warmup:], [1, 2, 4])
        rows = []
        for name, t in seconds.items():
            row = dict(backend=name, p50_ms=float(np.percentile(t, 50) * 1e3),
                       p90_ms=float(np.percentile(t, 90) * 1e3), img_s=float(len(t) / t.sum()),
                       best_img_s=best[name][0], best_batch=best[name][1])
            if args.eval and ckpt and name != 'torchvision':
                row['metric'] = float(evaluate(models[name], dataset)['bbox_mAP'])
            rows.append(row)
    ref = rows[0]
    lines += [f'### {title}', '', format_table(rows), '',
              f'Latency ratio (p50) to the `{ref["backend"]}` row: ' + ', '.join(
                  f'{r["backend"]} {r["p50_ms"] / ref["p50_ms"]:.2f}' for r in rows[1:]), '']
    print('\n'.join(lines[-5:]), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--num-images', type=int, default=30)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--threads', type=int, default=0, help='0: torch default')
    parser.add_argument('--retina18-checkpoint', help='trained BCCD-320 recipe checkpoint')
    parser.add_argument('--eval', action='store_true', help='test AP of each row (trained R18)')
    parser.add_argument('--models', nargs='+', default=['retina18', 'retinanet', 'faster_rcnn'])
    parser.add_argument('--out', default=str(REPO / 'benchmarks' / 'DEPLOY.md'))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()
    cpu = platform.processor() or 'unknown CPU'
    try:
        cpu = next(line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo')
                   if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    lines = ['# CPU deployment paths (benchmarks/bench_deploy.py)', '',
             f'Run {datetime.date.today().isoformat()} at commit {commit} on {cpu}, '
             f'{os.cpu_count()} cores, {torch.get_num_threads()} torch threads; '
             f'{args.num_images} timed images ({args.warmup} warm-up), BCCD test images, '
             'model forward only.', '']
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if 'retina18' in args.models:
            # the recipe's own data (trainval / test at 320) and paths relative to the repository
            os.chdir(REPO)
            cfg = REPO / 'configs/retinanet/retinanet_r18_fpn_gn-head_giou_ms_9e_bccd320.py'
            weights = 'trained' if args.retina18_checkpoint else 'random weights, speed only'
            run_model(f'RetinaNet-R18 BCCD-320 recipe ({weights}); baseline: detforge eager',
                      cfg, args.retina18_checkpoint, None, args, lines)
        for kind, title in (('retinanet', 'RetinaNet-R50-FPN'), ('faster_rcnn', 'Faster R-CNN-R50-FPN')):
            if kind in args.models:
                cfg, ckpt, tv = _torchvision_case(kind, folder)
                run_model(f'{title}, 640x480, same random weights as torchvision', cfg, ckpt, tv,
                          args, lines)
    Path(args.out).write_text('\n'.join(lines) + '\n')
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
