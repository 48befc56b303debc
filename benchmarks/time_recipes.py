"""Seconds per training iteration of each recipe on this machine's CPU, for wall-time budgets.

    python benchmarks/time_recipes.py --iters 16 \
        configs/retinanet/retinanet_r18_fpn_gn-head_giou_ms_9e_bccd320.py configs/rtmdet/rtmdet_tiny_bccd320.py
    python benchmarks/time_recipes.py --iters 12 --tv-maskrcnn --tv-retinanet

Each detforge config is trained for ``--iters`` iterations as configured (its data pipeline,
loader workers, batch size and model; ``detforge train --no-validate`` with the schedule cut by
``bench_accuracy.schedule_options``), one after the other, and its JSON log's ``time`` entries
(seconds per iteration, data loading included) are read; the first logging interval is dropped
as warm-up and the median of the rest is reported. ``--tv-retinanet``/``--tv-maskrcnn`` time
the torchvision baselines of ``bench_accuracy_tv.py``/``bench_accuracy_mask_tv.py`` the same
way (their printed median step time).

Why: an accuracy run may be trained elsewhere (a GPU), but the issues' goals compare recipes
at equal wall time *on this CPU*; this script gives each recipe's CPU cost per iteration, which
times the schedule's iteration count estimates that wall time. Prints a Markdown table with the
date, commit, machine and load average.
"""
from __future__ import annotations

import argparse
import datetime
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from bench_accuracy import logged_iter_times, schedule_options  # noqa: E402
from machine import cpu_name, git_commit  # noqa: E402
from tee import tee  # noqa: E402


def iteration_config(config: str, work_dir: str) -> str:
    """``config``, or where it switches pipelines by epoch (``PipelineSwitchHook``, which an
    iteration-based run cannot take) a copy without that hook: the first stage's pipeline (the
    mosaic/mixup one, the costlier) is what gets timed."""
    from detforge.config import Config
    hooks = Config.fromfile(str(REPO / config)).get('custom_hooks', None) or []
    kept = [dict(h) for h in hooks if h.get('type') != 'PipelineSwitchHook']
    if len(kept) == len(hooks):
        return config
    path = os.path.join(work_dir, 'timed_' + os.path.basename(config))
    with open(path, 'w') as f:
        f.write(f'_base_ = [{str(REPO / config)!r}]\ncustom_hooks = {kept!r}\n')
    print(f'{config}: timed without its PipelineSwitchHook (stage-1 pipeline)')
    return path


def time_config(config: str, iters: int, work_dir: str) -> list[float]:
    """Per-logging-interval seconds per iteration of ``iters`` training iterations."""
    config = iteration_config(config, work_dir)
    cmd = [sys.executable, '-m', 'detforge', 'train', config, '--work-dir', work_dir,
           '--no-validate', '--seed', '0', '--cfg-options',
           *schedule_options(str(REPO / config) if not os.path.isabs(config) else config,
                                             iters)]
    code, out, _ = tee(cmd, f'train {iters} iterations', indent='    ')
    if code != 0:
        sys.exit(f'{config}: training failed (exit {code})')
    return logged_iter_times(work_dir, 0.0)


def time_tv(script: str, iters: int) -> list[float]:
    cmd = [sys.executable, str(HERE / script), '--max-iters', str(iters), '--test-images', '1',
           '--no-record']
    code, out, _ = tee(cmd, f'{script} {iters} iterations', indent='    ')
    m = re.search(r'median ([\d.]+)\)', out)
    if code != 0 or not m:
        sys.exit(f'{script} failed (exit {code})')
    return [float(m.group(1))]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('configs', nargs='*', help='detforge configs to time')
    parser.add_argument('--iters', type=int, default=16, help='iterations per recipe')
    parser.add_argument('--tv-retinanet', action='store_true',
                        help="time bench_accuracy_tv.py's torchvision RetinaNet")
    parser.add_argument('--tv-maskrcnn', action='store_true',
                        help="time bench_accuracy_mask_tv.py's torchvision Mask R-CNN")
    args = parser.parse_args(argv)
    if args.iters < 4:
        parser.error('--iters must be at least 4 (the first logging interval is warm-up)')
    load_before = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
    rows = []
    for config in args.configs:
        config = os.path.relpath(os.path.abspath(config), REPO)
        with tempfile.TemporaryDirectory(prefix='time_recipes_') as work_dir:
            times = time_config(config, args.iters, work_dir)
        if len(times) < 2:
            sys.exit(f'{config}: fewer than 2 logged intervals; use more --iters')
        rows.append((f'`{config}`', statistics.median(times[1:]), len(times) - 1))
    for flag, script, name in ((args.tv_retinanet, 'bench_accuracy_tv.py', 'torchvision RetinaNet'),
                               (args.tv_maskrcnn, 'bench_accuracy_mask_tv.py',
                                'torchvision Mask R-CNN')):
        if flag:
            rows.append((f'{name} (`{script}`)', time_tv(script, args.iters)[0], None))
    import torch
    print(f'\n## CPU seconds per training iteration (`benchmarks/time_recipes.py`)\n\n'
          f'{started}, detforge commit {git_commit()}, {cpu_name()}, '
          f'{os.cpu_count()} CPUs, torch {torch.__version__} with {torch.get_num_threads()} '
          f'threads; load average before / after: {" ".join(f"{x:.1f}" for x in load_before)}'
          f' / {" ".join(f"{x:.1f}" for x in os.getloadavg())}. Options: --iters {args.iters}.\n')
    print('| recipe | s/iter (median) | logged intervals |\n| --- | ---: | ---: |')
    for name, s_iter, n in rows:
        print(f'| {name} | {s_iter:.3f} | {n if n is not None else "median step"} |')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
