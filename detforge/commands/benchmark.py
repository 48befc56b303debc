"""Measure inference speed (and optionally accuracy) of a detector on every CPU path, side by side.

    detforge benchmark CONFIG [CHECKPOINT] [--backends pytorch fused compiled onnxruntime ...]
                       [--num-images 50] [--warmup 5] [--batch-sizes 1 2 4] [--eval]
                       [--threads N] [--device cpu] [--out table.json]

Each backend is built from the same weights: ``pytorch`` (the eager model), ``fused`` (batch
norm folded into the convolutions, :func:`~detforge.models.fuse_conv_bn.fuse_detector`),
``fused-cl`` (fused, weights channels_last), ``compiled`` (fused, then backbone, neck and
the dense heads' forward through ``torch.compile`` with TorchInductor and frozen weights,
:func:`~detforge.models.compile_parts.compile_detector_parts`; it compiles during the
warm-up, once per padded input size), ``compiled-cl`` (the same, channels_last),
``onnxruntime`` / ``openvino`` (the graph ``detforge export`` writes, static input at the
config's test scale), ``openvino-bf16`` (that graph, OpenVINO computing in bfloat16: for CPUs
with AVX-512 BF16 or AMX), ``int8`` / ``int8-openvino`` (that graph quantized by ``detforge
quantize``, calibrated on ``--calib`` training images). The timed images are run one at a time,
alternating between the backends image by image, so that every row sees the same machine
state; the warm-up images are not timed. Per row: the model's latency per image (p50, p90;
the test pipeline is excluded), images/s at batch 1 and at the best of ``--batch-sizes``, the
peak resident memory of a fresh process that builds the backend and runs a few images, and
with ``--eval`` the test set's metric (COCO bbox mAP or VOC mAP).
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import tempfile
import time

import numpy as np
import torch

from detforge.commands._analysis_common import add_cfg_options, build_test_dataset, load_config
from detforge.registry import DetforgeError

NAME = 'benchmark'
HELP = 'latency, throughput, memory and AP of a detector on each CPU path, side by side'

#: the PyTorch paths: ``init_detector`` options of each
TORCH_BACKENDS = {
    'pytorch': {},
    'fused': dict(fuse=True),
    'fused-cl': dict(fuse=True, channels_last=True),
    'compiled': dict(fuse=True, compile=True),
    'compiled-cl': dict(fuse=True, channels_last=True, compile=True),
}
#: the exported paths: (runtime, precision) of each; they share one float32 ONNX export, the
#: int8 ones its INT8 quantization
EXPORTED_BACKENDS = {
    'onnxruntime': ('onnxruntime', 'f32'),
    'openvino': ('openvino', 'f32'),
    'openvino-bf16': ('openvino', 'bf16'),
    'int8': ('onnxruntime', 'f32'),
    'int8-openvino': ('openvino', 'f32'),
}
ALL_BACKENDS = tuple(TORCH_BACKENDS) + tuple(EXPORTED_BACKENDS)


def add_arguments(parser):
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', nargs='?', default=None,
                        help='checkpoint (optional: random weights time the same)')
    parser.add_argument('--backends', nargs='+', default=['pytorch'], choices=ALL_BACKENDS,
                        metavar='BACKEND', help=f'paths to compare (default pytorch): '
                        f'{", ".join(ALL_BACKENDS)}')
    parser.add_argument('--num-images', type=int, default=50, help='timed images (default 50)')
    parser.add_argument('--warmup', type=int, default=5, help='untimed images first (default 5)')
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[1],
                        help='batch sizes for the throughput column (default 1)')
    parser.add_argument('--eval', action='store_true',
                        help='also evaluate every backend on the whole test set')
    parser.add_argument('--calib', type=int, default=32,
                        help='int8: calibration images from data.train (default 32)')
    parser.add_argument('--threads', type=int, default=0,
                        help='threads of every backend (default: torch\'s current setting)')
    parser.add_argument('--no-memory', action='store_true',
                        help='skip the peak-memory column (one child process per backend)')
    parser.add_argument('--device', default='cpu',
                        help="'cpu' or 'cuda:0' (the PyTorch paths: pytorch, fused*, compiled*)")
    parser.add_argument('--out', help='also write the table as JSON here')
    add_cfg_options(parser)


def _sync(device):
    if str(device).startswith('cuda'):
        torch.cuda.synchronize()


def build_backends(cfg, checkpoint, names, device='cpu', threads=0, calib=32,
                   workdir=None, files: dict | None = None) -> dict:
    """``{name: model}`` for each backend name, all from the same weights.

    The ONNX-based rows share one static float32 export (and one INT8 quantization of it)
    written to ``workdir``; ``files``, if given, receives ``{name: exported file}``.
    """
    from detforge.apis.inference import init_detector
    models = {}
    exported = [n for n in names if n not in TORCH_BACKENDS]
    if exported and not str(device).startswith('cpu'):
        raise DetforgeError(f'the exported backends run on the CPU, not --device {device}')
    eager = init_detector(cfg, checkpoint, device=device)
    for name in names:
        if name == 'pytorch':
            models[name] = eager
        elif name in TORCH_BACKENDS:
            models[name] = init_detector(cfg, checkpoint, device=device, **TORCH_BACKENDS[name])
    if not exported:
        return models
    from detforge.commands.export import default_shape, norm_cfg_from_config
    from detforge.deployment import build_backend_model, export_onnx
    workdir = workdir or tempfile.mkdtemp(prefix='detforge-benchmark-')
    shape = default_shape(eager.cfg)
    fp32 = os.path.join(workdir, 'model.onnx')
    export_onnx(eager, fp32, input_shape=shape, norm_cfg=norm_cfg_from_config(eager.cfg),
                class_names=eager.CLASSES)
    files_out, files = files, {'onnxruntime': fp32, 'openvino': fp32, 'openvino-bf16': fp32}
    if any(n.startswith('int8') for n in exported):
        from detforge.commands.quantize import DEFAULT_KEEP_FLOAT, _calibration_images
        from detforge.deployment.quantize import calibration_batches, quantize_onnx
        int8 = os.path.join(workdir, 'model_int8.onnx')
        feeds = calibration_batches(eager.cfg, _calibration_images(eager.cfg, calib), shape)
        quantize_onnx(fp32, int8, feeds, keep_float=DEFAULT_KEEP_FLOAT)
        files.update({'int8': int8, 'int8-openvino': int8})
    if files_out is not None:
        files_out.update({n: files[n] for n in exported})
    for name in exported:
        runtime, precision = EXPORTED_BACKENDS[name]
        models[name] = build_backend_model(eager.cfg, files[name], backend=runtime,
                                           num_threads=threads, precision=precision)
    return models


def _forward(model, batch, device):
    with torch.inference_mode():
        _sync(device)
        start = time.perf_counter()
        model(return_loss=False, rescale=True, **batch)
        _sync(device)
        return time.perf_counter() - start


def _to_device(batch, device):
    if str(device).startswith('cpu'):
        return batch
    img = batch['img']
    if isinstance(img, (list, tuple)):
        return dict(batch, img=[i.to(device) for i in img])
    return dict(batch, img=img.to(device))


def time_latency(models: dict, samples: list, warmup: int, device='cpu',
                 first_seconds: dict | None = None) -> dict:
    """Seconds per image of each model, alternating between the models image by image.

    Args:
        models: ``{name: model}``.
        samples: test-pipeline outputs, one image each; the first ``warmup`` are not timed.
        first_seconds: if given, receives ``{name: seconds of the first image}`` (for a
            compiled model, the compilation is in it).

    Returns:
        ``{name: np.ndarray}`` of the timed seconds per image.
    """
    from detforge.apis.inference import _collate
    times = {name: [] for name in models}
    for k, sample in enumerate(samples):
        batch = _to_device(_collate([sample]), device)
        for name, model in models.items():
            seconds = _forward(model, batch, device)
            if k == 0 and first_seconds is not None:
                first_seconds[name] = seconds
            if k >= warmup:
                times[name].append(seconds)
    return {name: np.asarray(t) for name, t in times.items()}


def time_throughput(models: dict, samples: list, batch_sizes, device='cpu') -> dict:
    """``{name: (best images/s, its batch size)}``: each batch size runs ``len(samples)``
    images (after one untimed batch), alternating between the models batch by batch."""
    from detforge.apis.inference import _collate
    best = {name: (0.0, None) for name in models}
    for bs in batch_sizes:
        batches = [_to_device(_collate(samples[i:i + bs]), device)
                   for i in range(0, len(samples) - bs + 1, bs)]
        if len(batches) < 2:
            continue
        spent = {name: 0.0 for name in models}
        for j, batch in enumerate(batches):
            for name, model in models.items():
                seconds = _forward(model, batch, device)
                if j:
                    spent[name] += seconds
        for name in models:
            rate = (len(batches) - 1) * bs / spent[name]
            if rate > best[name][0]:
                best[name] = (rate, bs)
    return best


def _peak_rss_mib() -> float:
    """This process's peak resident memory. ``VmHWM`` belongs to the address space, which
    ``exec`` replaces; ``ru_maxrss`` would carry the forking parent's peak over."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _memory_child(queue, config, checkpoint, cfg_options, name, threads, model_file, n_images):
    try:
        if threads:
            torch.set_num_threads(threads)
        cfg = load_config(config, cfg_options)
        if model_file is None:
            model = build_backends(cfg, checkpoint, [name], threads=threads)[name]
        else:
            from detforge.deployment import build_backend_model
            runtime, precision = EXPORTED_BACKENDS[name]
            model = build_backend_model(cfg, model_file, backend=runtime, num_threads=threads,
                                        precision=precision)
        dataset = build_test_dataset(cfg)
        from detforge.apis.inference import _collate
        for k in range(n_images):
            _forward(model, _collate([dataset[k % len(dataset)]]), 'cpu')
        queue.put(_peak_rss_mib())
    except Exception as e:  # noqa: BLE001 - reported in the table, not fatal
        queue.put(f'error: {e}')


def peak_memory_mib(args, name: str, model_file: str | None = None, n_images: int = 3):
    """Peak resident memory (MiB) of a fresh process that builds backend ``name`` (from the
    checkpoint, or loads the exported ``model_file``) and runs ``n_images`` test images; the
    interpreter, torch and the data set are included."""
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    child = ctx.Process(target=_memory_child, args=(queue, args.config, args.checkpoint,
                                                    args.cfg_options, name, args.threads,
                                                    model_file, n_images))
    child.start()
    result = queue.get()
    child.join()
    return result


def evaluate(model, dataset) -> dict:
    """The test set's metric for one backend (COCO ``bbox_mAP`` or VOC ``mAP``)."""
    from detforge.apis.test import single_gpu_test
    from detforge.apis.train import _build_loader
    loader = _build_loader(dataset, dict(samples_per_gpu=1, workers_per_gpu=0, dist=False,
                                         shuffle=False))
    outputs = single_gpu_test(model, loader)
    metric = 'mAP' if type(dataset).__name__ in ('VOCDataset', 'XMLDataset') else 'bbox'
    return dict(dataset.evaluate(outputs, metric=metric))


def format_table(rows: list[dict]) -> str:
    """A Markdown table, one row per backend."""
    head = ('| backend | ms/img p50 | ms/img p90 | img/s batch 1 | img/s best (batch) '
            '| peak MiB | metric |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |')
    lines = [head]
    for r in rows:
        best = f'{r["best_img_s"]:.2f} ({r["best_batch"]})' if r.get('best_batch') else '-'
        mem = r.get('peak_mib')
        mem = f'{mem:.0f}' if isinstance(mem, float) else (mem or '-')
        metric = r.get('metric')
        metric = f'{metric:.4f}' if isinstance(metric, float) else '-'
        lines.append(f'| {r["backend"]} | {r["p50_ms"]:.1f} | {r["p90_ms"]:.1f} | '
                     f'{r["img_s"]:.2f} | {best} | {mem} | {metric} |')
    return '\n'.join(lines)


def main(args):
    if args.num_images < 1 or args.warmup < 0:
        raise DetforgeError('--num-images must be >= 1 and --warmup >= 0')
    if args.warmup < 1 and any(n.startswith('compiled') for n in args.backends):
        raise DetforgeError('--warmup must be >= 1 with a compiled backend: it compiles at '
                            'its first image, which must not be timed')
    if any(b < 1 for b in args.batch_sizes):
        raise DetforgeError(f'--batch-sizes must be >= 1, got {args.batch_sizes}')
    if args.checkpoint is not None and not os.path.isfile(args.checkpoint):
        raise DetforgeError(f'checkpoint file not found: {args.checkpoint}')
    if args.threads:
        torch.set_num_threads(args.threads)
    names = list(dict.fromkeys(args.backends))
    cfg = load_config(args.config, args.cfg_options)
    dataset = build_test_dataset(cfg)
    if len(dataset) == 0:
        raise DetforgeError(f'{args.config}: the test data set is empty')
    with tempfile.TemporaryDirectory(prefix='detforge-benchmark-') as workdir:
        files = {}
        models = build_backends(cfg, args.checkpoint, names, device=args.device,
                                threads=args.threads, calib=args.calib, workdir=workdir,
                                files=files)
        total = args.warmup + args.num_images
        samples = [dataset[k % len(dataset)] for k in range(total)]
        first = {}
        seconds = time_latency(models, samples, args.warmup, args.device, first)
        best = time_throughput(models, samples[args.warmup:], args.batch_sizes, args.device)
        rows = []
        for name in names:
            t = seconds[name]
            row = dict(backend=name, p50_ms=float(np.percentile(t, 50) * 1e3),
                       p90_ms=float(np.percentile(t, 90) * 1e3), img_s=float(len(t) / t.sum()),
                       best_img_s=float(best[name][0]), best_batch=best[name][1],
                       first_image_s=float(first[name]))
            if args.eval:
                metrics = evaluate(models[name], dataset)
                key = 'bbox_mAP' if 'bbox_mAP' in metrics else 'mAP'
                row['metric'] = float(metrics[key])
                row['metric_name'] = key
            rows.append(row)
        del models
        if not args.no_memory and str(args.device).startswith('cpu'):
            for row in rows:
                row['peak_mib'] = peak_memory_mib(args, row['backend'], files.get(row['backend']))
    print(format_table(rows))
    print(f'{args.num_images} timed images ({args.warmup} warm-up excluded), alternating between '
          f'backends; {torch.get_num_threads()} torch threads, device {args.device}; model '
          'forward only (test pipeline excluded)')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(dict(config=args.config, checkpoint=args.checkpoint,
                           num_images=args.num_images, warmup=args.warmup,
                           threads=torch.get_num_threads(), rows=rows), f, indent=1)
    return 0
