"""How close a model step comes to this CPU's own limit: FLOPs per step and matmul throughput.

    python benchmarks/flops.py                       # CPU limit + RetinaNet-R50 FLOPs
    python benchmarks/flops.py --models-json m.json  # + utilisation from bench_models' timings

The limit is the throughput of a large float32 ``torch.mm`` (``2 n^3`` FLOP per product, the
median of several), with the thread count the model benchmarks use. A model's FLOPs per step
come from ``torch.utils.flop_counter.FlopCounterMode``, which counts matrix products and
convolutions (a multiply-add is 2 FLOP) in the forward and, when a loss is backpropagated, in
the backward; element-wise work, NMS and data movement count as zero. Utilisation is then

    achieved GFLOP/s = FLOPs per step / seconds per step,   utilisation = achieved / limit,

so it says what share of the machine's matmul speed the step turns into useful convolution
work. The same ratio per second of process CPU time (all threads) is given beside it: when
other jobs share the cores, wall time counts their time too, CPU time much less. The steps counted are those ``bench_models.py`` times (RetinaNet-R50-FPN, BCCD images at
640x480, 3 classes): inference of 1 image and a training step of 2 images (forward, backward).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

__all__ = ['matmul_gflops', 'conv_gflops', 'merge_matmul', 'count_flops', 'conv2d_flops',
           'model_step_flops', 'utilisation', 'utilisation_table', 'cpu_times_by_step', 'load_bench_models']


def _throughput(fn: Callable, flop: float, repeats: int, warmup: int) -> dict:
    """GFLOP per wall second and per second of process CPU time of ``repeats`` calls of
    ``fn`` (after ``warmup`` calls), each doing ``flop`` FLOP; with their medians."""
    for _ in range(warmup):
        fn()
    runs, cpu_runs = [], []
    for _ in range(repeats):
        cpu, start = time.process_time(), time.perf_counter()
        fn()
        runs.append(flop / (time.perf_counter() - start) / 1e9)
        cpu_runs.append(flop / max(time.process_time() - cpu, 1e-9) / 1e9)
    return dict(threads=torch.get_num_threads(), runs=runs, median=statistics.median(runs),
                cpu_runs=cpu_runs, cpu_median=statistics.median(cpu_runs))


def matmul_gflops(n: int = 4096, repeats: int = 5, warmup: int = 1,
                  dtype: torch.dtype = torch.float32) -> dict:
    """Throughput of ``torch.mm`` of two ``(n, n)`` matrices (``2 n^3`` FLOP per product).

    Returns ``dict(n, threads, runs, median, cpu_runs, cpu_median)``: ``runs`` in GFLOP per
    wall second, ``cpu_runs`` in GFLOP per second of this process's CPU time (all threads),
    which a neighbour's load disturbs much less. Medians of ``repeats`` timed runs.
    """
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    out = torch.empty(n, n, dtype=dtype)
    return dict(n=n, **_throughput(lambda: torch.mm(a, b, out=out), 2.0 * n ** 3, repeats, warmup))


def conv_gflops(channels: int = 256, size: tuple[int, int] = (120, 160), batch: int = 2,
                repeats: int = 5, warmup: int = 1) -> dict:
    """Throughput of a 3x3 ``conv2d`` (``channels`` -> ``channels``, padding 1) on a
    ``(batch, channels, *size)`` float32 input: the convolution library's own speed on the
    layer that dominates a detector (a RetinaNet head conv on P3 of a 640x480 image pair).

    Same keys as :func:`matmul_gflops` (``n`` replaced by ``shape``). Where the BLAS behind
    ``torch.mm`` is less tuned for the CPU than oneDNN (e.g. MKL on AMD), this is the higher
    of the two limits.
    """
    x = torch.randn(batch, channels, *size)
    w = torch.randn(channels, channels, 3, 3)
    flop = conv2d_flops(batch, channels, channels, size[0], size[1], 3, 3)
    return dict(shape=(batch, channels, *size),
                **_throughput(lambda: torch.nn.functional.conv2d(x, w, padding=1), flop,
                              repeats, warmup))


def merge_matmul(*results: dict) -> dict:
    """One limit from several ``matmul_gflops`` (or ``conv_gflops``) results, e.g. before
    and after a benchmark: the medians over all their runs."""
    merged = dict(results[0], runs=[r for m in results for r in m['runs']],
                  cpu_runs=[r for m in results for r in m['cpu_runs']])
    merged['median'] = statistics.median(merged['runs'])
    merged['cpu_median'] = statistics.median(merged['cpu_runs'])
    merged['medians_per_batch'] = [m['median'] for m in results]
    return merged


def count_flops(fn: Callable, *args, **kwargs) -> tuple[int, Any]:
    """FLOPs of ``fn(*args, **kwargs)`` as ``FlopCounterMode`` counts them, and its result.

    Runs ``fn`` for real (the tensors are real), so a backward inside ``fn`` is counted too.
    """
    counter = FlopCounterMode(display=False)
    with counter:
        result = fn(*args, **kwargs)
    return counter.get_total_flops(), result


def conv2d_flops(n: int, c_in: int, c_out: int, h_out: int, w_out: int, kh: int, kw: int,
                 groups: int = 1) -> int:
    """Hand count of a conv2d forward: ``2 * N * C_out * H_out * W_out * (C_in / groups) * kh * kw``
    (2 FLOP per multiply-add; the bias add is not counted, as ``FlopCounterMode`` does)."""
    return 2 * n * c_out * h_out * w_out * (c_in // groups) * kh * kw


def load_bench_models():
    """``benchmarks/bench_models.py`` as a module: its builders and the steps it times."""
    spec = importlib.util.spec_from_file_location('bench_models', HERE / 'bench_models.py')
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault('bench_models', module)
    spec.loader.exec_module(module)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return module


def model_step_flops(model: str = 'retinanet', seed: int = 0) -> dict:
    """FLOPs of the steps ``bench_models.py --model MODEL`` times, for ours and the baseline.

    Returns ``{'ours': {'infer': F, 'train': F}, 'base': {...}}``: ``infer`` is the forward of
    1 BCCD image (640x480), ``train`` the forward and backward of the 2-image training step.
    """
    bench = load_bench_models()
    if model not in bench.BUILDERS:
        raise KeyError(f'bench_models.py has no model {model!r}; it has {sorted(bench.BUILDERS)}')
    build_o, train_o, infer_o, build_b, train_b, infer_b = bench.BUILDERS[model]
    samples = bench.load_images(2)
    out = {}
    for who, build, train, infer in (('ours', build_o, train_o, infer_o),
                                     ('base', build_b, train_b, infer_b)):
        torch.manual_seed(seed)
        net = build()
        net.eval()
        infer_flops, _ = count_flops(infer, net, samples[:1])
        net.train()
        optimizer = bench.make_optimizer(net)
        train_flops, _ = count_flops(train, net, optimizer, samples)
        out[who] = dict(infer=infer_flops, train=train_flops)
        del net, optimizer
    return out


def utilisation(flops: float, seconds: float, limit_gflops: float) -> dict:
    """``achieved`` GFLOP/s of a step of ``flops`` FLOP taking ``seconds``, and ``achieved /
    limit_gflops`` as ``utilisation`` (a fraction; 1.0 = the matmul speed)."""
    achieved = flops / seconds / 1e9
    return dict(gflop=flops / 1e9, seconds=seconds, achieved_gflops=achieved,
                utilisation=achieved / limit_gflops)


STEP_FUNCTIONS = {'ours_train': 1, 'ours_infer': 2, 'base_train': 4, 'base_infer': 5}


def utilisation_table(step_flops: dict, median_s: dict, limit_gflops: float,
                      median_cpu_s: dict | None = None, cpu_limit_gflops: float | None = None,
                      conv_limit_gflops: float | None = None) -> list[dict]:
    """Rows ``(who, step, gflop, seconds, achieved_gflops, utilisation)`` from
    ``model_step_flops`` and the ``median_s`` of a ``bench_models.py --json`` file (keys
    ``ours_train``, ``base_train``, ``ours_infer``, ``base_infer``).

    With ``median_cpu_s`` (the same keys, seconds of process CPU time) and
    ``cpu_limit_gflops`` (``matmul_gflops()['cpu_median']``) each row also gets
    ``cpu_seconds`` and ``cpu_utilisation``: the same ratio in GFLOP per CPU-second, which
    holds when other jobs share the cores (wall time then counts their time too). With
    ``conv_limit_gflops`` (``conv_gflops()['median']``) a ``conv_utilisation`` too.
    """
    rows = []
    for step in ('train', 'infer'):
        for who in ('ours', 'base'):
            key = f'{who}_{step}'
            if median_s.get(key) is None:
                continue
            row = dict(who=who, step=step,
                       **utilisation(step_flops[who][step], median_s[key], limit_gflops))
            if median_cpu_s and cpu_limit_gflops and median_cpu_s.get(key):
                cpu = utilisation(step_flops[who][step], median_cpu_s[key], cpu_limit_gflops)
                row.update(cpu_seconds=cpu['seconds'], cpu_utilisation=cpu['utilisation'])
            if conv_limit_gflops:
                row['conv_utilisation'] = row['achieved_gflops'] / conv_limit_gflops
            rows.append(row)
    return rows


def cpu_times_by_step(bench_json: dict, model: str = 'retinanet') -> dict:
    """``bench_models.py --json``'s ``median_cpu_s`` (keyed by the timed functions' names)
    re-keyed as ``ours_train``, ``ours_infer``, ``base_train``, ``base_infer``."""
    entry = load_bench_models().BUILDERS[model]
    by_name = bench_json.get('median_cpu_s') or {}
    return {key: by_name.get(entry[i].__name__) for key, i in STEP_FUNCTIONS.items()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--n', type=int, default=4096, help='matrix size of the torch.mm')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    parser.add_argument('--model', default='retinanet', help='a bench_models.py --model choice')
    parser.add_argument('--no-model', action='store_true', help='only the matmul throughput')
    parser.add_argument('--models-json', help="a bench_models.py --json file: add the "
                        "utilisation of its median step times")
    parser.add_argument('--json', help='write the results to this file')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    mm = matmul_gflops(args.n, args.repeats)
    print(f'torch.mm {args.n}x{args.n} float32, {mm["threads"]} threads: median '
          f'{mm["median"]:.1f} GFLOP/s (runs {", ".join(f"{r:.1f}" for r in mm["runs"])}); '
          f'{mm["cpu_median"]:.1f} GFLOP per CPU-second', flush=True)
    conv = conv_gflops(repeats=args.repeats)
    print(f'conv2d 3x3 {conv["shape"]} float32: median {conv["median"]:.1f} GFLOP/s; '
          f'{conv["cpu_median"]:.1f} GFLOP per CPU-second', flush=True)
    result = dict(matmul=mm, conv=conv)
    if not args.no_model:
        step_flops = model_step_flops(args.model)
        result['step_flops'] = step_flops
        for who, name in (('ours', 'detforge'), ('base', 'baseline')):
            print(f'{args.model} {name}: forward 1 image {step_flops[who]["infer"] / 1e9:.1f} '
                  f'GFLOP, train step (2 images, fwd+bwd) {step_flops[who]["train"] / 1e9:.1f} '
                  f'GFLOP')
        if args.models_json:
            bench_json = json.loads(Path(args.models_json).read_text())
            rows = utilisation_table(step_flops, bench_json['median_s'], mm['median'],
                                     cpu_times_by_step(bench_json, args.model), mm['cpu_median'],
                                     conv['median'])
            result['utilisation'] = rows
            for r in rows:
                print(f'{r["who"]:4s} {r["step"]:5s}: {r["gflop"]:.1f} GFLOP in {r["seconds"]:.2f}s '
                      f'= {r["achieved_gflops"]:.1f} GFLOP/s, {100 * r["utilisation"]:.0f}% of '
                      f'the limit' + (f'; per CPU-second {100 * r["cpu_utilisation"]:.0f}%'
                                      if 'cpu_utilisation' in r else '')
                      + f'; {100 * r["conv_utilisation"]:.0f}% of the conv2d speed')
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == '__main__':
    main()
