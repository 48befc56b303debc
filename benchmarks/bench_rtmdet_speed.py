"""Single-image inference of two trained detectors side by side on this CPU (issue 21's goal:
RTMDet-tiny at least 3x faster than RetinaNet-R18 at 320 px).

    python benchmarks/bench_rtmdet_speed.py RTMDET_CKPT RETINA_CKPT [--images 40] [--fuse]
    python benchmarks/bench_rtmdet_speed.py RTMDET_CKPT RETINA_CKPT --backends pytorch onnxruntime

Both models are built from their BCCD-320 configs with their trained checkpoints and timed by
``inference_detector`` (the test pipeline included: loading, resizing, normalising, the model,
post-processing), image by image in turn on the same BCCD ``test`` images, in one process,
after 3 warm-up images each. Prints p50/p90 ms per image and the ratio of the medians.

``--backends``: instead, time the model forward only (as ``detforge benchmark`` does) on each
of these backends of both models, all alternating image by image in one process on the same
test-pipeline outputs (the two configs' test pipelines are the same: short side 320).
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / 'benchmarks'))
from machine import git_commit  # noqa: E402
CONFIGS = {'RTMDet-tiny': 'configs/rtmdet/rtmdet_tiny_bccd320.py',
           'RetinaNet-R18': 'configs/retinanet/retinanet_r18_fpn_gn-head_giou_ms_9e_bccd320.py'}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('rtmdet_checkpoint')
    parser.add_argument('retina_checkpoint')
    parser.add_argument('--images', type=int, default=40)
    parser.add_argument('--fuse', action='store_true', help='fold batch norms (both models)')
    parser.add_argument('--backends', nargs='+', help='forward-only timing of these '
                        '`detforge benchmark` backends of both models')
    args = parser.parse_args(argv)
    if args.backends:
        return forward_only(args)
    from detforge.apis import inference_detector, init_detector
    models = {name: init_detector(str(REPO / cfg), ckpt, device='cpu', fuse=args.fuse)
              for (name, cfg), ckpt in zip(CONFIGS.items(),
                                           (args.rtmdet_checkpoint, args.retina_checkpoint))}
    images = sorted((REPO / 'data' / 'bccd' / 'JPEGImages').glob('*.jpg'))
    if not images:
        sys.exit('no BCCD images under data/bccd/JPEGImages')
    times = {name: [] for name in models}
    load = os.getloadavg()
    for i in range(3 + args.images):
        img = str(images[i % len(images)])
        order = list(models) if i % 2 == 0 else list(models)[::-1]
        for name in order:
            tic = time.perf_counter()
            inference_detector(models[name], img)
            if i >= 3:
                times[name].append(time.perf_counter() - tic)
    sha = git_commit()
    print(f'{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {sha}, '
          f'torch {torch.__version__} with {torch.get_num_threads()} threads, '
          f'{args.images} images, fuse={args.fuse}, load average before/after '
          f'{" ".join(f"{x:.1f}" for x in load)} / '
          f'{" ".join(f"{x:.1f}" for x in os.getloadavg())}')
    print('| model | ms/img p50 | ms/img p90 |\n| --- | ---: | ---: |')
    for name, t in times.items():
        print(f'| {name} | {1e3 * statistics.median(t):.1f} | {1e3 * np.percentile(t, 90):.1f} |')
    r = statistics.median(times['RTMDet-tiny']) / statistics.median(times['RetinaNet-R18'])
    print(f'RTMDet-tiny / RetinaNet-R18 (p50): {r:.2f} ({1 / r:.1f}x faster)')
    return 0


def forward_only(args) -> int:
    import tempfile

    from detforge.commands._analysis_common import build_test_dataset, load_config
    from detforge.commands.benchmark import build_backends, time_latency
    cfgs = {name: load_config(str(REPO / cfg)) for name, cfg in CONFIGS.items()}
    dataset = build_test_dataset(cfgs['RTMDet-tiny'])
    samples = [dataset[k % len(dataset)] for k in range(3 + args.images)]
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as work:
        models = {}
        for (name, cfg), ckpt in zip(cfgs.items(), (args.rtmdet_checkpoint,
                                                    args.retina_checkpoint)):
            built = build_backends(cfg, ckpt, args.backends, workdir=os.path.join(work, name))
            models.update({f'{name} {backend}': m for backend, m in built.items()})
        seconds = time_latency(models, samples, 3)
    print(f'{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, '
          f'torch {torch.__version__} with {torch.get_num_threads()} threads, {args.images} '
          f'images, model forward only, load average before/after '
          f'{" ".join(f"{x:.1f}" for x in load)} / '
          f'{" ".join(f"{x:.1f}" for x in os.getloadavg())}')
    print('| model, backend | ms/img p50 | ms/img p90 |\n| --- | ---: | ---: |')
    for name, t in seconds.items():
        print(f'| {name} | {1e3 * np.median(t):.1f} | {1e3 * np.percentile(t, 90):.1f} |')
    for backend in args.backends:
        r = np.median(seconds[f'RTMDet-tiny {backend}']) / np.median(
            seconds[f'RetinaNet-R18 {backend}'])
        print(f'{backend}: RTMDet-tiny / RetinaNet-R18 (p50) {r:.2f} ({1 / r:.1f}x faster)')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
