"""Accuracy of a training recipe end to end: train, test, and record AP against wall time.

    python benchmarks/bench_accuracy.py                        # the issue-10 BCCD-320 recipe
    python benchmarks/bench_accuracy.py --config CFG --work-dir work_dirs/acc_mine
    python benchmarks/bench_accuracy.py --max-iters 4 --results /tmp/acc.md   # a smoke run

Runs ``detforge train CONFIG --work-dir DIR --no-validate`` and then ``detforge test CONFIG
DIR/latest.pth --eval bbox`` (the config's ``data.test``: BCCD ``test`` for the BCCD-320
configs), each as a subprocess, and prints COCO box AP, AP50, the training wall time, seconds
per training iteration and seconds per test image. A row (date, config, schedule, AP, AP50,
wall time, s/iter, s/test image, torch threads) is appended to ``--results`` (default
``benchmarks/accuracy.md``).

``--max-iters N`` shortens the schedule for a smoke run or a budget study: the runner becomes
an ``IterBasedRunner`` of N iterations, the step epochs of ``lr_config`` are scaled to
iterations in the same proportion (steps at 8 and 11 of 12 epochs -> 8/12 and 11/12 of N),
the warmup stays as many iterations as configured, and one checkpoint is written at the end.
``--resume`` continues from the latest checkpoint of the work dir (``detforge train
--auto-resume``); the wall time then covers only the resumed part.
"""
from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import os.path as osp
import re
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from tee import tee  # noqa: E402 -- benchmarks/ is not a package

DEFAULT_CONFIG = 'configs/retinanet/retinanet_r18_fpn_12e_bccd320.py'
RESULTS_HEADER = (
    '# Accuracy runs (`benchmarks/bench_accuracy.py`)\n\n'
    'One row per run, appended by the script. AP and AP50: COCO box AP on the config\'s test '
    'set; mask AP and AP50 the same for segmentation (`--eval bbox segm`). Train wall time: '
    'training only (no evaluation). Machine: torch threads of this machine / its CPUs, or the '
    'GPU the run trained and tested on (`--device cuda`).\n\n'
    '| date | config | schedule | AP | AP50 | train wall time (min) | s/iter | s/test image '
    '| machine | mask AP | mask AP50 |\n'
    '| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |\n')


def schedule_options(config: str, max_iters: int) -> list[str]:
    """``--cfg-options`` that turn ``config``'s epoch schedule into ``max_iters`` iterations."""
    sys.path.insert(0, str(REPO))
    from detforge.config import Config
    from detforge.registry import DetforgeError
    cfg = Config.fromfile(config)
    runner = dict(cfg.get('runner', None) or {})
    lr = dict(cfg.get('lr_config', None) or {})
    opts = ['runner.type=IterBasedRunner', f'runner.max_iters={max_iters}',
            'runner.max_epochs=None', 'checkpoint_config.by_epoch=False',
            f'checkpoint_config.interval={max_iters}',
            f'log_config.interval={max(1, min(50, max_iters // 10))}']
    # the hooks count iterations now (mmcv's IterBasedRunner sets these defaults itself)
    log_hooks = (cfg.get('log_config', None) or {}).get('hooks', [])
    opts += [f'log_config.hooks.{i}.by_epoch=False' for i in range(len(log_hooks))]
    if lr.get('by_epoch', True):
        epochs = runner.get('max_epochs', cfg.get('total_epochs', None))
        step = lr.get('step', None)
        if step is not None:
            if not epochs:
                raise DetforgeError(f'{config}: lr_config.step counts epochs but runner has no '
                                    f'max_epochs to scale it by for --max-iters')
            steps = [step] if isinstance(step, int) else list(step)
            iters = [max(1, round(s * max_iters / epochs)) for s in steps]
            opts.append(f'lr_config.step=[{",".join(map(str, iters))}]')
        opts.append('lr_config.by_epoch=False')
    return opts


def run(cmd: list[str], title: str) -> tuple[str, float]:
    """Run ``cmd`` from the repository root, echo its output live; return it and the wall
    time in seconds. Exit with its status when it fails."""
    code, out, wall = tee(cmd, title)
    if code != 0:
        sys.exit(f'{title} failed (exit {code}); see the output above')
    return out, wall


def checkpoint_iter(path: str) -> int | None:
    """The iteration count stored in a checkpoint's meta (``None`` if unreadable)."""
    import torch
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
        return int(ckpt['meta']['iter'])
    except Exception:  # noqa: BLE001 -- only a nicety for the s/iter figure
        return None


def logged_iter_times(work_dir: str, since: float) -> list[float]:
    """The ``time`` (s/iteration, averaged over each logging interval) of the train entries of
    the JSON logs written in ``work_dir`` after ``since`` (a ``time.time()``)."""
    times = []
    for path in sorted(glob.glob(osp.join(work_dir, '*.log.json'))):
        if osp.getmtime(path) < since:
            continue
        with open(path) as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get('mode') == 'train' and 'time' in entry:
                    times.append(float(entry['time']))
    return times


def test_metrics(out: str, metrics_dir: str) -> dict:
    """AP and AP50 from the JSON ``detforge test --work-dir`` wrote, and the image count and
    seconds from its ``tested N images in T s`` line."""
    files = sorted(glob.glob(osp.join(metrics_dir, 'eval_*.json')), key=osp.getmtime)
    if not files:
        sys.exit(f'detforge test wrote no eval_*.json into {metrics_dir}')
    metric = json.loads(Path(files[-1]).read_text())['metric']
    if 'bbox_mAP' not in metric:
        # the COCO evaluation returns no numbers when the model detected nothing at all (an
        # untrained model, all scores under score_thr): its AP is 0
        if not re.search(r'results of the whole dataset is empty', out):
            sys.exit(f'no bbox_mAP in {files[-1]}: {metric}')
        print('no detections on the whole test set: AP and AP50 are 0')
        metric = dict(bbox_mAP=0.0, bbox_mAP_50=0.0)
    m = re.search(r'tested (\d+) images in ([\d.]+) s', out)
    images, seconds = (int(m.group(1)), float(m.group(2))) if m else (None, None)
    masks = {}
    if 'segm_mAP' in metric:
        masks = dict(mask_AP=float(metric['segm_mAP']), mask_AP50=float(metric['segm_mAP_50']))
    return dict(AP=float(metric['bbox_mAP']), AP50=float(metric['bbox_mAP_50']),
                test_images=images, test_s=seconds, **masks)


def machine(device: str | None) -> str:
    """The row's machine cell: the GPU's name when the run used one, else torch's threads."""
    import torch
    if device != 'cpu' and torch.cuda.is_available():
        return f'{torch.cuda.get_device_name(0)} (GPU), {os.cpu_count()} CPUs'
    return f'{torch.get_num_threads()} of {os.cpu_count()} CPUs'


def append_row(results: str, row: dict) -> None:
    path = Path(results)
    if not path.exists() or not path.read_text().strip():
        path.write_text(RESULTS_HEADER)
    fmt = lambda v, spec: format(v, spec) if v is not None else 'n/a'  # noqa: E731
    line = (f'| {row["date"]} | `{row["config"]}` | {row["schedule"]} | {row["AP"]:.3f} | '
            f'{row["AP50"]:.3f} | {row["train_s"] / 60:.1f} | {fmt(row["s_per_iter"], ".2f")} | '
            f'{fmt(row["s_per_test_image"], ".3f")} | {row["threads"]} | '
            f'{fmt(row.get("mask_AP"), ".3f")} | {fmt(row.get("mask_AP50"), ".3f")} |\n')
    with path.open('a') as f:
        f.write(line)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--config', default=DEFAULT_CONFIG, help=f'default {DEFAULT_CONFIG}')
    parser.add_argument('--work-dir', help='default work_dirs/bench_accuracy/CONFIG_NAME '
                        '(+ _itersN with --max-iters)')
    parser.add_argument('--max-iters', type=int, help='train N iterations instead of the '
                        "config's epochs (an IterBasedRunner, lr steps scaled)")
    parser.add_argument('--resume', action='store_true',
                        help='continue from the latest checkpoint in the work dir')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                        help='more overrides for both train and test, as detforge takes them')
    parser.add_argument('--results', default=str(HERE / 'accuracy.md'),
                        help='markdown table to append the row to')
    parser.add_argument('--no-record', action='store_true', help='do not append a row')
    parser.add_argument('--device', choices=['cpu', 'cuda'], default=None,
                        help='train and test on this device (detforge\'s default: cuda if '
                        'available); the row names the machine')
    parser.add_argument('--eval', nargs='+', default=['bbox'], choices=['bbox', 'segm'],
                        help='metrics of the test (segm: mask AP too, for Mask R-CNN)')
    args = parser.parse_args(argv)
    if args.max_iters is not None and args.max_iters < 1:
        parser.error('--max-iters must be at least 1')
    config = osp.relpath(osp.abspath(args.config), REPO)
    if not osp.isfile(REPO / config):
        parser.error(f'--config {args.config}: no such file')
    stem = osp.splitext(osp.basename(config))[0]
    work_dir = args.work_dir or osp.join(
        'work_dirs', 'bench_accuracy', stem + (f'_iters{args.max_iters}' if args.max_iters else ''))
    work_dir = osp.abspath(work_dir)
    os.makedirs(work_dir, exist_ok=True)

    train_opts = list(args.cfg_options)
    if args.max_iters is not None:
        train_opts = schedule_options(str(REPO / config), args.max_iters) + train_opts
    detforge = [sys.executable, '-m', 'detforge']
    cmd = [*detforge, 'train', config, '--work-dir', work_dir, '--no-validate',
           '--seed', str(args.seed)]
    if args.resume:
        cmd.append('--auto-resume')
    if args.device:
        cmd += ['--device', args.device]
    if train_opts:
        cmd += ['--cfg-options', *train_opts]
    latest = osp.join(work_dir, 'latest.pth')
    start_iter = checkpoint_iter(latest) if args.resume and osp.isfile(latest) else 0
    started = time.time()
    out, wall = run(cmd, 'train')
    m = re.search(r'training finished in ([\d.]+) s', out)
    train_s = float(m.group(1)) if m else wall
    if not osp.isfile(latest):
        sys.exit(f'training wrote no {latest}')
    end_iter = checkpoint_iter(latest)
    iters = end_iter - (start_iter or 0) if end_iter is not None else None
    logged = logged_iter_times(work_dir, started)

    metrics_dir = osp.join(work_dir, 'test_metrics')
    test_cmd = [*detforge, 'test', config, latest, '--eval', *args.eval, '--work-dir',
                metrics_dir]
    if args.device:
        test_cmd += ['--device', args.device]
    if args.cfg_options:
        test_cmd += ['--cfg-options', *args.cfg_options]
    out, test_wall = run(test_cmd, 'test')
    metrics = test_metrics(out, metrics_dir)

    import torch
    row = dict(
        date=datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
        config=config,
        schedule=(f'max_iters={args.max_iters}' if args.max_iters else 'as configured')
        + (' (resumed)' if args.resume and start_iter else '')
        + (f'; --cfg-options {" ".join(args.cfg_options)}' if args.cfg_options else ''),
        AP=metrics['AP'], AP50=metrics['AP50'], train_s=train_s,
        s_per_iter=train_s / iters if iters else None,
        s_per_test_image=(metrics['test_s'] / metrics['test_images']
                          if metrics['test_images'] else None),
        threads=machine(args.device),
        **{k: metrics[k] for k in ('mask_AP', 'mask_AP50') if k in metrics})
    print('\n=== accuracy')
    print(f'config      {config} ({row["schedule"]})')
    print(f'AP          {row["AP"]:.4f}')
    print(f'AP50        {row["AP50"]:.4f}')
    if 'mask_AP' in row:
        print(f'mask AP     {row["mask_AP"]:.4f}  (AP50 {row["mask_AP50"]:.4f})')
    print(f'train time  {train_s:.1f} s ({train_s / 60:.1f} min; process wall {wall:.1f} s)')
    if iters:
        print(f's/iter      {row["s_per_iter"]:.2f} ({iters} iterations, train time / iterations'
              + (f'; logged median {statistics.median(logged):.2f}' if logged else '') + ')')
    if row['s_per_test_image'] is not None:
        print(f's/test img  {row["s_per_test_image"]:.3f} ({metrics["test_images"]} images; '
              f'test process wall {test_wall:.1f} s)')
    if not args.no_record:
        append_row(args.results, row)
        print(f'row appended to {args.results}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
