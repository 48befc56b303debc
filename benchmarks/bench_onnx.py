"""onnxruntime against PyTorch: inference time per image on this CPU, as a ratio.

    python benchmarks/bench_onnx.py [--models retinanet faster_rcnn] [--images 10]
                                    [--threads 2] [--channels 256]

Builds ResNet-18 + FPN detectors (``--channels`` FPN/head width; random weights: speed does
not depend on them, but the number of boxes reaching NMS does, so score thresholds are the
configs' defaults), exports each with ``detforge.deployment.export_onnx`` at the padded BCCD
test size (320x448), then times, on the same preprocessed BCCD test batches (batch 1):
``model.simple_test`` under ``torch.no_grad`` (PyTorch, eager) and ``ORTDetector.simple_test``
(onnxruntime CPUExecutionProvider), both with ``--threads`` threads. Data loading is not
timed. Prints a table with ms/image and the ratio PyTorch / onnxruntime (> 1: ORT faster).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

MODELS = {
    'retinanet': '''
_base_ = ['{base}/retinanet_r50_fpn.py']
model = dict(backbone=dict(depth=18, frozen_stages=-1, norm_eval=False, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels={ch}),
    bbox_head=dict(num_classes=3, in_channels={ch}, feat_channels={ch}))
''',
    'faster_rcnn': '''
_base_ = ['{base}/faster_rcnn_r50_fpn.py']
model = dict(backbone=dict(depth=18, frozen_stages=-1, norm_eval=False, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels={ch}),
    rpn_head=dict(in_channels={ch}, feat_channels={ch}),
    roi_head=dict(bbox_roi_extractor=dict(out_channels={ch}),
                  bbox_head=dict(num_classes=3, in_channels={ch})))
''',
}
DATA = '''
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='MultiScaleFlipAug', img_scale=(427, 320), flip=False,
         transforms=[dict(type='Resize', keep_ratio=True), dict(type='RandomFlip'),
                     dict(type='Normalize', **img_norm_cfg), dict(type='Pad', size_divisor=32),
                     dict(type='ImageToTensor', keys=['img']), dict(type='Collect', keys=['img'])])]
data = dict(test=dict(type='CocoDataset', classes=('RBC', 'WBC', 'Platelets'), ann_file='{ann}',
                      img_prefix='{root}', pipeline=test_pipeline))
'''


def _batches(cfg, n: int):
    from detforge.apis.inference import _collate, build_test_pipeline
    root = REPO / 'data' / 'bccd'
    images = json.loads((root / 'annotations' / 'test.json').read_text())['images'][:n]
    pipeline = build_test_pipeline(cfg)
    return [_collate([pipeline(dict(img_info=dict(filename=str(root / im['file_name'])),
                                    img_prefix=None))]) for im in images]


def _time(fn, batches, warmup: int = 2) -> float:
    for b in batches[:warmup]:
        fn(b)
    start = time.perf_counter()
    for b in batches:
        fn(b)
    return (time.perf_counter() - start) / len(batches) * 1000


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--models', nargs='+', default=list(MODELS), choices=list(MODELS))
    parser.add_argument('--images', type=int, default=10)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--channels', type=int, default=256)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from detforge.apis.inference import init_detector
    from detforge.deployment import ORTDetector, export_onnx
    root = REPO / 'data' / 'bccd'
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.models:
            cfg_file = Path(tmp) / f'{kind}.py'
            cfg_file.write_text(MODELS[kind].format(base=REPO / 'configs/_base_/models',
                                                    ch=args.channels)
                                + DATA.format(ann=root / 'annotations/test.json', root=root))
            torch.manual_seed(0)
            model = init_detector(str(cfg_file))
            onnx_file = str(Path(tmp) / f'{kind}.onnx')
            start = time.perf_counter()
            export_onnx(model, onnx_file, input_shape=(320, 448))
            export_s = time.perf_counter() - start
            ort_model = ORTDetector(onnx_file, num_threads=args.threads)
            batches = _batches(model.cfg, args.images)

            def run_torch(b):
                with torch.no_grad():
                    return model(return_loss=False, rescale=True, **b)

            def run_ort(b):
                return ort_model(return_loss=False, rescale=True, **b)

            t_torch = _time(run_torch, batches)
            t_ort = _time(run_ort, batches)
            rows.append((kind, t_torch, t_ort, t_torch / t_ort, export_s))
    print(f'\nCPU, {args.threads} threads, {args.images} BCCD test images at 427x320 (padded '
          f'320x448), ResNet-18 FPN {args.channels} ch, batch 1')
    print(f'torch {torch.__version__}, onnxruntime '
          f'{__import__("onnxruntime").__version__}')
    print(f'{"model":<14}{"PyTorch ms/img":>16}{"ORT ms/img":>12}{"PyTorch/ORT":>13}{"export s":>10}')
    for kind, a, b, r, e in rows:
        print(f'{kind:<14}{a:>16.1f}{b:>12.1f}{r:>13.2f}{e:>10.1f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
