"""Every CPU inference path side by side, against torchvision's eager model of the same weights.

    python benchmarks/bench_deploy.py [--num-images 30] [--warmup 3] [--threads 0]
        [--retina18-checkpoint work_dirs/bccd320/latest.pth] [--eval]
        [--models retina18 retinanet faster_rcnn] [--backends pytorch fused compiled ...]
        [--no-memory] [--out benchmarks/DEPLOY.md]

Rows per model (``detforge benchmark``'s backends; see ``detforge benchmark --help``):
``torchvision`` (torchvision's eager model of the same weights: the baseline), ``pytorch``
(detforge eager), ``fused`` (batch norm folded), ``fused-cl`` (fused, channels_last),
``compiled`` / ``compiled-cl`` (fused, backbone, neck and head convolutions through
``torch.compile`` with TorchInductor and frozen weights; without / with channels_last),
``onnxruntime``, ``openvino`` (the static float32 export), ``openvino-bf16`` (the same
export, OpenVINO computing in bfloat16: not float32, so outside the float32 goal; its AP drop
is reported), ``int8`` and ``int8-openvino``
(QDQ INT8, 32 BCCD ``trainval`` calibration images, predictor convolutions float32). Every
row of a model is timed image by image in turn, in one process, on the same BCCD test images (model forward
only; the test pipeline is excluded); the warm-up images are not timed (the compiled rows
compile there: "first image s" shows that cost). "peak MiB" is the peak resident memory of a
fresh process that builds that row's model and runs 3 images (interpreter, torch and the data
set included; a compiled row's compilation too).

- RetinaNet-R18, the BCCD-320 recipe (``retinanet_r18_fpn_gn-head_giou_ms_9e_bccd320.py``):
  with ``--retina18-checkpoint`` its trained weights (and ``--eval`` gives each row's test
  AP); without, random weights (speed only). The torchvision row is a ``RetinaNet`` of the
  same layout (ResNet-18 with ``BatchNorm2d``, FPN P3-P7 with P6 from P5, the GroupNorm head
  of ``retinanet_resnet50_fpn_v2``, 320/427 resize so that the 320x427 input is not resized
  again, 1000 candidates, 100 detections) holding the same weights (detforge's keys mapped
  by the ``torchvision-retinanet`` converter).
- RetinaNet-R50-FPN and Faster R-CNN-R50-FPN at 640x480 (``*_tv.py`` configs, the BCCD image
  size, no resize): a seeded random torchvision ``retinanet_resnet50_fpn`` /
  ``fasterrcnn_resnet50_fpn`` (3 classes) converted with ``detforge convert``, so torchvision
  and detforge run the same weights.

Writes a Markdown report: date, commit, machine, load average, the goals of issue 22 and,
per model, a table with the ratio of each row's p50 latency to torchvision's and a verdict
against those goals.
"""
from __future__ import annotations

import argparse
import datetime
import multiprocessing as mp
import os
import sys
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / 'benchmarks'))
import flops  # noqa: E402 - benchmarks/flops.py: FLOP counting and the CPU's float32 limit
from machine import cpu_flags, cpu_name, git_commit, loadavg  # noqa: E402
CLASSES = ('RBC', 'WBC', 'Platelets')
BACKENDS = ['pytorch', 'fused', 'fused-cl', 'compiled', 'compiled-cl', 'onnxruntime', 'openvino',
            'openvino-bf16', 'int8', 'int8-openvino']
FLOAT32 = {'pytorch', 'fused', 'fused-cl', 'compiled', 'compiled-cl', 'onnxruntime', 'openvino'}
RETINA18 = 'configs/retinanet/retinanet_r18_fpn_gn-head_giou_ms_9e_bccd320.py'

#: issue 22's goals, stated in the report and checked by the verdict column
FLOAT_RATIO, INT8_RATIO, INT8_AP_DROP = 0.6, 0.4, 1.0

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
    as a list (torchvision normalises; its min_size/max_size are the input's, so it does not
    resize)."""

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


# ------------------------------------------------------------------ torchvision models
def torchvision_model(kind: str) -> nn.Module:
    """An untrained torchvision detector of the layout of ``kind`` (3 classes)."""
    if kind == 'retina18':
        from torchvision.models import resnet18
        from torchvision.models.detection import RetinaNet
        from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
        from torchvision.models.detection.retinanet import RetinaNetHead, _default_anchorgen
        from torchvision.ops.feature_pyramid_network import LastLevelP6P7
        # the recipe: C3-C5 -> P3-P5, P6 from P5 (in = out = 256 channels), ReLU before P7
        backbone = _resnet_fpn_extractor(resnet18(weights=None), 5, returned_layers=[2, 3, 4],
                                         extra_blocks=LastLevelP6P7(256, 256))
        anchors = _default_anchorgen()
        head = RetinaNetHead(256, anchors.num_anchors_per_location()[0], 3,
                             norm_layer=partial(nn.GroupNorm, 32))
        return RetinaNet(backbone, 3, anchor_generator=anchors, head=head, min_size=320,
                         max_size=427, score_thresh=0.05, nms_thresh=0.5, detections_per_img=100,
                         topk_candidates=1000)
    if kind == 'retinanet':
        from torchvision.models.detection import retinanet_resnet50_fpn
        return retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3,
                                      min_size=480, max_size=640, detections_per_img=300)
    from torchvision.models.detection import fasterrcnn_resnet50_fpn
    return fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=4,
                                   min_size=480, max_size=640)


def _converter(kind: str):
    if kind == 'faster_rcnn':
        from detforge.converters.torchvision_fasterrcnn import convert_state_dict
    else:
        from detforge.converters.torchvision_retinanet import convert_state_dict
    return convert_state_dict


def load_detforge_weights(tv: nn.Module, kind: str, checkpoint: str) -> None:
    """Put a detforge checkpoint's weights into ``tv``: the converter maps each torchvision
    key to detforge's (it keeps the tensors, so identity gives the inverse map)."""
    tv_state = tv.state_dict()
    converted = _converter(kind)(tv_state)
    tv_key = {id(value): key for key, value in tv_state.items()}
    state = torch.load(checkpoint, map_location='cpu', weights_only=True)
    state = state.get('state_dict', state)
    new, missing = {}, []
    for df_key, value in converted.items():
        if df_key in state:
            new[tv_key[id(value)]] = state[df_key]
        else:
            missing.append(df_key)
    if missing:
        raise SystemExit(f'{checkpoint}: no {missing[0]} (and {len(missing) - 1} more) for the '
                         f'torchvision {kind} model')
    tv.load_state_dict(new, strict=False)


def _bench_config(base: str, folder: Path, extra: str = '') -> Path:
    root = (REPO / 'data' / 'bccd').as_posix()
    path = folder / f'bench_{Path(base).stem}.py'
    path.write_text(f"_base_ = ['{(REPO / base).as_posix()}']\n{extra}\n"
                    + DATA.format(classes=CLASSES, root=root))
    return path


def torchvision_case(kind: str, folder: Path, checkpoint: str | None = None):
    """(config, detforge checkpoint, torchvision state file) holding the same weights: the
    trained ``checkpoint`` mapped into torchvision's model (R18 recipe), or a seeded random
    torchvision model converted to detforge."""
    torch.manual_seed(0)
    tv = torchvision_model(kind)
    if kind == 'retina18':
        cfg = REPO / RETINA18
    elif kind == 'retinanet':
        cfg = _bench_config('configs/retinanet/retinanet_r50_fpn_tv.py', folder,
                            "model = dict(backbone=dict(norm_cfg=dict(type='BN', eps=1e-5, "
                            "requires_grad=False)), bbox_head=dict(num_classes=3, "
                            "anchor_generator=dict(stride_rule='fixed')))")
    else:
        cfg = _bench_config('configs/faster_rcnn/faster_rcnn_r50_fpn_tv.py', folder,
                            "model = dict(backbone=dict(norm_cfg=dict(type='BN', eps=1e-5, "
                            "requires_grad=False)), rpn_head=dict(anchor_generator=dict("
                            "stride_rule='fixed')), roi_head=dict(bbox_head=dict(num_classes=3)))")
    # the exported graph steps anchors by the configured strides, so every R50 row uses the
    # fixed rule: at 640x480 the P6/P7 anchors are 64/128 px apart instead of torchvision's
    # 60/120 (the same computation; the detections of those levels differ from torchvision's
    # a little)
    if checkpoint is None:
        # spread the predictors so that scores differ (random init puts them all within 1e-6)
        with torch.no_grad():
            for name, p in tv.named_parameters():
                if name.endswith('weight') and any(k in name for k in ('cls_logits', 'bbox_pred',
                                                                       'cls_score')):
                    p.normal_(0, 0.05)
        checkpoint = folder / f'{kind}_from_tv.pth'
        torch.save({'state_dict': _converter(kind)(tv.state_dict()),
                    'meta': {'CLASSES': CLASSES}}, checkpoint)
    else:
        load_detforge_weights(tv, kind, checkpoint)
    tv_state = folder / f'{kind}_tv_state.pth'
    torch.save(tv.state_dict(), tv_state)
    return cfg, str(checkpoint), tv_state


# ------------------------------------------------------------------ memory
def _torchvision_memory_child(queue, kind, tv_state, cfg_path, threads, n_images):
    try:
        if threads:
            torch.set_num_threads(threads)
        from detforge.apis.inference import _collate
        from detforge.commands._analysis_common import build_test_dataset, load_config
        from detforge.commands.benchmark import _forward, _peak_rss_mib
        tv = torchvision_model(kind)
        tv.load_state_dict(torch.load(tv_state, map_location='cpu', weights_only=True))
        model = TorchvisionRows(tv)
        dataset = build_test_dataset(load_config(str(cfg_path)))
        for k in range(n_images):
            _forward(model, _collate([dataset[k % len(dataset)]]), 'cpu')
        queue.put(_peak_rss_mib())
    except Exception as e:  # noqa: BLE001 - reported in the table, not fatal
        queue.put(f'error: {e}')


def peak_memory(name, kind, cfg_path, ckpt, tv_state, files, args):
    """Peak RSS (MiB) of a fresh process running row ``name`` (see the module docstring)."""
    from detforge.commands.benchmark import peak_memory_mib
    if name != 'torchvision':
        child_args = argparse.Namespace(config=str(cfg_path), checkpoint=ckpt, cfg_options=None,
                                        threads=args.threads)
        return peak_memory_mib(child_args, name, files.get(name))
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    child = ctx.Process(target=_torchvision_memory_child,
                        args=(queue, kind, str(tv_state), str(cfg_path), args.threads, 3))
    child.start()
    result = queue.get()
    child.join()
    return result


# ------------------------------------------------------------------ the float32 floor
def float32_limit(sample) -> dict:
    """This CPU's float32 convolution throughput now (GFLOP/s, median of 5): a 3x3 256->256
    ``conv2d`` on the P3 map of ``sample``'s padded image (stride 8), the layer that dominates
    every model here, or a large ``torch.mm`` if oneDNN is faster there."""
    h, w = sample['img'][0].data.shape[-2:] if isinstance(sample['img'], list) \
        else sample['img'].data.shape[-2:]
    conv = flops.conv_gflops(256, (h // 8, w // 8), batch=1, repeats=5)
    mm = flops.matmul_gflops(2048, repeats=5)
    return conv if conv['median'] >= mm['median'] else mm


def compute_floor(model, sample, limit: dict) -> dict:
    """FLOPs of one image through ``model`` (convolutions and matrix products, as
    ``FlopCounterMode`` counts them) and the time they take at ``limit``: no float32 path that
    does the same arithmetic can be faster than that on this CPU."""
    from detforge.apis.inference import _collate
    batch = _collate([sample])
    with torch.inference_mode():
        count, _ = flops.count_flops(model, return_loss=False, rescale=True, **batch)
    return dict(gflop=count / 1e9, limit_gflops=limit['median'],
                floor_ms=count / 1e9 / limit['median'] * 1e3)


# ------------------------------------------------------------------ one model
def run_model(kind, cfg_path, ckpt, tv_state, args, evaluate_ap: bool) -> list[dict]:
    """Time (and optionally evaluate and measure) every row of one model; returns the rows."""
    from detforge.commands._analysis_common import build_test_dataset, load_config
    from detforge.commands.benchmark import (build_backends, evaluate, time_latency,
                                             time_throughput)
    cfg = load_config(str(cfg_path))
    dataset = build_test_dataset(cfg)
    files = {}
    with tempfile.TemporaryDirectory() as workdir:
        models = build_backends(cfg, ckpt, args.backends, threads=args.threads, workdir=workdir,
                                files=files)
        tv = torchvision_model(kind)
        tv.load_state_dict(torch.load(tv_state, map_location='cpu', weights_only=True))
        models = {'torchvision': TorchvisionRows(tv), **models}
        total = args.warmup + args.num_images
        samples = [dataset[k % len(dataset)] for k in range(total)]
        first = {}
        limit_before = float32_limit(samples[0])
        seconds = time_latency(models, samples, args.warmup, first_seconds=first)
        best = time_throughput(models, samples[args.warmup:], [1, 2, 4])
        floor = compute_floor(models['torchvision'], samples[0],
                              flops.merge_matmul(limit_before, float32_limit(samples[0])))
        rows = []
        for name, t in seconds.items():
            row = dict(backend=name, p50_ms=float(np.percentile(t, 50) * 1e3),
                       p90_ms=float(np.percentile(t, 90) * 1e3), img_s=float(len(t) / t.sum()),
                       best_img_s=best[name][0], best_batch=best[name][1],
                       first_image_s=float(first[name]))
            if evaluate_ap and name != 'torchvision':
                row['ap'] = float(evaluate(models[name], dataset)['bbox_mAP'])
            rows.append(row)
        rows[0]['floor'] = floor
        del models
        if not args.no_memory:
            for row in rows:
                row['peak_mib'] = peak_memory(row['backend'], kind, cfg_path, ckpt, tv_state,
                                              files, args)
    return rows


def verdict(row: dict, ref: dict, pytorch: dict | None) -> str:
    """The row against issue 22's goals: float32 paths <= 0.6x torchvision with PyTorch's AP
    to 3 decimals; INT8 <= 0.4x with an AP drop <= 1.0 point."""
    if row['backend'] == 'torchvision':
        return 'baseline'
    ratio = row['p50_ms'] / ref['p50_ms']
    ap, ref_ap = row.get('ap'), (pytorch or {}).get('ap')
    if row['backend'] in FLOAT32:
        parts = [f'{"meets" if ratio <= FLOAT_RATIO else "misses"} <= {FLOAT_RATIO}x']
        if ap is not None and ref_ap is not None:
            same = round(ap, 3) == round(ref_ap, 3)
            parts.append('AP = PyTorch\'s' if same else f'AP differs ({ap - ref_ap:+.4f})')
        return '; '.join(parts)
    if row['backend'].startswith('int8'):
        parts = [f'{"meets" if ratio <= INT8_RATIO else "misses"} <= {INT8_RATIO}x']
    else:  # bfloat16: no goal of its own, a trade-off row (speed against AP)
        parts = ['bfloat16, not a float32 path']
    if ap is not None and ref_ap is not None:
        drop = (ref_ap - ap) * 100
        parts.append(f'AP drop {drop:.1f} point{"s" if abs(drop) != 1 else ""}' + (
            f' ({"<=" if drop <= INT8_AP_DROP else ">"} {INT8_AP_DROP})'
            if row['backend'].startswith('int8') else ''))
    return '; '.join(parts)


def format_rows(rows: list[dict]) -> str:
    ref = rows[0]
    pytorch = next((r for r in rows if r['backend'] == 'pytorch'), None)
    lines = ['| backend | ms/img p50 | ms/img p90 | x torchvision (p50) | img/s batch 1 '
             '| img/s best (batch) | first image s | peak MiB | bbox AP | verdict |',
             '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |']
    for r in rows:
        best = f'{r["best_img_s"]:.2f} ({r["best_batch"]})' if r.get('best_batch') else '-'
        mem = r.get('peak_mib')
        mem = f'{mem:.0f}' if isinstance(mem, float) else (mem or '-')
        ap = f'{r["ap"]:.4f}' if 'ap' in r else '-'
        lines.append(f'| {r["backend"]} | {r["p50_ms"]:.1f} | {r["p90_ms"]:.1f} | '
                     f'{r["p50_ms"] / ref["p50_ms"]:.2f} | {r["img_s"]:.2f} | {best} | '
                     f'{r["first_image_s"]:.1f} | {mem} | {ap} | {verdict(r, ref, pytorch)} |')
    return '\n'.join(lines)


def goal_lines(results: dict) -> list[str]:
    """One line per goal of issue 22, from the measured rows (``results``: title -> rows)."""
    out = []
    for title, rows in results.items():
        ref = rows[0]
        floats = [r for r in rows if r['backend'] in FLOAT32]
        int8 = [r for r in rows if r['backend'].startswith('int8')]
        if floats:
            fast = min(floats, key=lambda r: r['p50_ms'])
            ratio = fast['p50_ms'] / ref['p50_ms']
            out.append(f'- {title}: best float32 path `{fast["backend"]}` at {ratio:.2f}x '
                       f'torchvision (goal <= {FLOAT_RATIO}x): '
                       f'{"met" if ratio <= FLOAT_RATIO else "not met"}.')
        if 'floor' in ref:
            f = ref['floor']
            out.append(f'- {title}: {f["gflop"]:.1f} GFLOP per image; at this CPU\'s float32 '
                       f'convolution limit measured in the same run ({f["limit_gflops"]:.0f} '
                       f'GFLOP/s) that is {f["floor_ms"]:.1f} ms = '
                       f'{f["floor_ms"] / ref["p50_ms"]:.2f}x torchvision: the fastest any '
                       'float32 path doing the same arithmetic could be '
                       f'(torchvision already runs at {f["floor_ms"] / ref["p50_ms"] * 100:.0f}% of that speed).')
        if int8:
            fast = min(int8, key=lambda r: r['p50_ms'])
            ratio = fast['p50_ms'] / ref['p50_ms']
            line = (f'- {title}: best INT8 path `{fast["backend"]}` at {ratio:.2f}x torchvision '
                    f'(goal <= {INT8_RATIO}x): {"met" if ratio <= INT8_RATIO else "not met"}')
            pytorch = next((r for r in rows if r['backend'] == 'pytorch'), {})
            if 'ap' in fast and 'ap' in pytorch:
                drop = (pytorch['ap'] - fast['ap']) * 100
                line += (f'; AP drop {drop:.1f} points (goal <= {INT8_AP_DROP}): '
                         f'{"met" if drop <= INT8_AP_DROP else "not met"}')
            out.append(line + '.')
        with_ap = [r for r in floats if 'ap' in r]
        if with_ap:
            aps = {round(r['ap'], 3) for r in with_ap}
            listed = ', '.join(map(str, sorted(aps)))
            out.append(f'- {title}: float32 paths\' AP equal to 3 decimals: '
                       f'{"yes" if len(aps) == 1 else f"no ({listed})"}.')
    return out


# ------------------------------------------------------------------ the report
def _machine() -> str:
    flags = ', '.join(cpu_flags()) or 'no VNNI/AMX'
    return f'{cpu_name()} ({flags}), {os.cpu_count()} cores, {torch.get_num_threads()} torch threads'


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        epilog='A full run (3 models, every row, 30 images, memory) takes tens of minutes on '
               '2 cores: exports, quantization and the compiled rows\' compilation come first.')
    parser.add_argument('--num-images', type=int, default=30, help='timed images (30)')
    parser.add_argument('--warmup', type=int, default=3,
                        help='untimed images first, >= 1 (3); the compiled rows compile there')
    parser.add_argument('--threads', type=int, default=0, help='0: torch default')
    parser.add_argument('--retina18-checkpoint', help='trained BCCD-320 recipe checkpoint')
    parser.add_argument('--eval', action='store_true',
                        help='test AP of each row (needs --retina18-checkpoint; R18 only)')
    parser.add_argument('--models', nargs='+', default=['retina18', 'retinanet', 'faster_rcnn'],
                        choices=['retina18', 'retinanet', 'faster_rcnn'])
    parser.add_argument('--backends', nargs='+', default=BACKENDS, choices=BACKENDS,
                        help='detforge rows (default: all); the torchvision row is always there')
    parser.add_argument('--no-memory', action='store_true',
                        help='skip the peak-memory column (a fresh process per row)')
    parser.add_argument('--out', default=str(REPO / 'benchmarks' / 'DEPLOY.md'))
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.num_images < 1:
        parser.error('--warmup and --num-images must be >= 1')
    if args.eval and not args.retina18_checkpoint:
        parser.error('--eval needs --retina18-checkpoint (AP of random weights means nothing)')
    if args.retina18_checkpoint and not os.path.isfile(args.retina18_checkpoint):
        parser.error(f'checkpoint not found: {args.retina18_checkpoint}')
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.retina18_checkpoint:
        args.retina18_checkpoint = os.path.abspath(args.retina18_checkpoint)
    load_before, commit = loadavg(), git_commit()  # the state the run starts from
    # the recipe's data (trainval / test at 320) has paths relative to the repository
    os.chdir(REPO)
    titles = {'retina18': 'RetinaNet-R18 BCCD-320 recipe ({})',
              'retinanet': 'RetinaNet-R50-FPN, 640x480, seeded random weights',
              'faster_rcnn': 'Faster R-CNN-R50-FPN, 640x480, seeded random weights'}
    results, sections = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.models:
            ckpt = args.retina18_checkpoint if kind == 'retina18' else None
            title = titles[kind].format('trained checkpoint' if ckpt else
                                        'random weights, speed only')
            cfg, ckpt, tv_state = torchvision_case(kind, Path(tmp), ckpt)
            rows = run_model(kind, cfg, ckpt, tv_state, args,
                             evaluate_ap=args.eval and kind == 'retina18')
            results[title] = rows
            sections += [f'### {title}', '', format_rows(rows), '']
            print('\n'.join(sections[-4:]), flush=True)
    lines = ['# CPU deployment paths (benchmarks/bench_deploy.py)', '',
             f'Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC at commit '
             f'{commit} on {_machine()}; load average before {load_before}, after '
             f'{loadavg()}. {args.num_images} timed images ({args.warmup} warm-up) of the BCCD '
             'test set per row, rows alternating image by image in one process, model forward '
             'only (the test pipeline is excluded). Command: `python benchmarks/bench_deploy.py '
             + ' '.join(argv if argv is not None else sys.argv[1:]) + '`.', '',
             '## Goals (issue 22)', '',
             f'- Best float32 path: single-image latency (p50) <= {FLOAT_RATIO}x torchvision eager '
             'on RetinaNet-R18 BCCD-320 and on RetinaNet-R50 640x480, same detections.',
             f'- INT8: <= {INT8_RATIO}x torchvision eager with an AP drop <= {INT8_AP_DROP} point '
             'on the BCCD test set.',
             '- Every float32 path\'s AP equal to the PyTorch model\'s to 3 decimals.', '',
             '## Measured against the goals', '', *goal_lines(results), '',
             '## Tables', '', *sections]
    Path(args.out).write_text('\n'.join(lines) + '\n')
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
