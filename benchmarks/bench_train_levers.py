"""CPU levers for the training step, side by side: which ones make it faster with the same losses.

    python benchmarks/bench_train_levers.py [--steps 5] [--warmup 2] [--threads 0]
        [--variants baseline channels_last compile mkldnn-off bf16] [--rtol 1e-3]
        [--out benchmarks/TRAIN_LEVERS.md]

The model is the BCCD-320 recipe's (``retinanet_r18_fpn_gn-head_giou_ms_9e_bccd320.py``:
RetinaNet-R18-FPN from scratch, batch norm in train mode, GroupNorm head, GIoU loss), the
batches are real BCCD ``trainval`` images through the recipe's multi-scale train pipeline,
batch 4 (short side 288-352, padded to 32: several input shapes, as in training). One
training step = forward, losses, backward, gradient clipping at 35, SGD step (the recipe's
optimizer at its first iteration's warm-up learning rate, 1e-5, so that every variant stays
comparable over the steps). Variants (``--variants``; ``all`` for every one):

- ``baseline``: eager float32, NCHW, PyTorch's default oneDNN settings.
- ``channels_last``: weights NHWC (the config's ``channels_last = True``).
- ``compile``: backbone, neck and the head's ``forward`` (its convolutions; targets and
  losses stay eager) through ``torch.compile`` (TorchInductor, ``dynamic=None``:
  static shapes first, symbolic after the first recompile; the config's
  ``compile = dict(backend='inductor')``).
- ``compile-cl``: both of the above.
- ``compile-model``: the whole training forward through ``torch.compile`` (heads, targets
  and losses included: many graph breaks; slow to compile).
- ``mkldnn-off``: ``torch.backends.mkldnn.enabled = False`` (PyTorch's own convolutions).
- ``onednn-bf16``: ``torch.backends.mkldnn.conv.fp32_precision = 'bf16'`` (oneDNN may run
  float32 convolutions in bfloat16 internally); only where the CPU has bf16 instructions.
- ``bf16``: bfloat16 autocast of the forward (the config's ``amp = dict(dtype='bfloat16')``);
  only where the CPU has bf16 instructions (AVX512-BF16 or AMX), else reported as skipped.

All variants live in ONE process, start from the same weights and see the same batches in
the same order; they alternate step by step, so that every variant sees the same machine
state. The first ``--warmup`` steps are not timed (the compiled variants compile there: the
warm-up batches have two different shapes, so the dynamic-shape recompile happens in the
warm-up too); their time above the baseline's is reported as compile time, and any graph
compiled during the timed steps is counted. A variant's losses (the total loss and each
component, every step) are compared with the baseline's: "same losses" means every
relative difference is at most ``--rtol`` (default 1e-3: float32 reordering of sums; a
bfloat16 lever is held to the same bar and reported with its measured difference). A lever
is worth adopting when its median step is >= 10% shorter than the baseline's with the same
losses.

Prints (and with ``--out`` writes) a Markdown table with the date, commit, machine and load
average. Default: 2 warm-up + 5 timed steps of 5 variants, a few minutes on 2 cores (an
eager step of batch 4 at 320 px takes about 4 s there; compiling backbone, neck and head for
training takes minutes on 2 cores).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import os
import random
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / 'benchmarks'))
from machine import cpu_name, git_commit, loadavg  # noqa: E402

CONFIG = 'configs/retinanet/retinanet_r18_fpn_gn-head_giou_ms_9e_bccd320.py'
DEFAULT_VARIANTS = ['baseline', 'channels_last', 'compile', 'mkldnn-off', 'bf16']
ALL_VARIANTS = ['baseline', 'channels_last', 'compile', 'compile-cl', 'compile-model',
                'mkldnn-off', 'onednn-bf16', 'bf16']
FIRST_LR = 0.01 * 0.001  # the recipe's lr x warmup_ratio: its first iteration's learning rate


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bfloat16 natively (AVX512-BF16 or AMX), as oneDNN reports it."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@dataclass
class Variant:
    """One way to run the same training step."""
    name: str
    channels_last: bool = False
    compile_parts: dict | None = None  # compile_detector_parts's arguments
    compile_model: bool = False
    mkldnn: dict = field(default_factory=dict)  # torch.backends.mkldnn attributes
    amp_dtype: torch.dtype | None = None
    needs_bf16: bool = False


VARIANTS = {
    'baseline': Variant('baseline'),
    'channels_last': Variant('channels_last', channels_last=True),
    'compile': Variant('compile', compile_parts=dict(backend='inductor')),
    'compile-cl': Variant('compile-cl', channels_last=True,
                          compile_parts=dict(backend='inductor')),
    'compile-model': Variant('compile-model', compile_model=True),
    'mkldnn-off': Variant('mkldnn-off', mkldnn={'enabled': False}),
    'onednn-bf16': Variant('onednn-bf16', mkldnn={'conv.fp32_precision': 'bf16'},
                           needs_bf16=True),
    'bf16': Variant('bf16', amp_dtype=torch.bfloat16, needs_bf16=True),
}


@contextlib.contextmanager
def mkldnn_settings(settings: dict):
    """Set ``torch.backends.mkldnn`` attributes (dotted: ``conv.fp32_precision``) for the
    duration of one step, then restore them: the variants share one process."""
    saved = []
    try:
        for dotted, value in settings.items():
            *path, attr = dotted.split('.')
            obj = torch.backends.mkldnn
            for p in path:
                obj = getattr(obj, p)
            saved.append((obj, attr, getattr(obj, attr)))
            setattr(obj, attr, value)
        yield
    finally:
        for obj, attr, value in reversed(saved):
            setattr(obj, attr, value)


def load_batches(cfg, n_batches: int, batch_size: int, seed: int) -> list[dict]:
    """``n_batches`` collated training batches of real images (the recipe's train pipeline,
    seeded), ordered so that the first two have different input shapes."""
    from detforge.data import build_dataset
    from detforge.data.loader import collate
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    dataset = build_dataset(cfg.data.train)
    order = np.random.RandomState(seed).permutation(len(dataset))
    batches, k = [], 0
    while len(batches) < n_batches:
        samples = []
        while len(samples) < batch_size:
            sample = dataset[int(order[k % len(order)])]
            k += 1
            if sample is not None:
                samples.append(sample)
        batches.append(collate(samples))
    shape = batches[0]['img'].shape
    other = next((i for i, b in enumerate(batches) if b['img'].shape != shape), None)
    if other is not None:
        batches.insert(1, batches.pop(other))
    return batches


class Runner:
    """A variant's own model copy, optimizer and step function."""

    def __init__(self, variant: Variant, model, cfg):
        from detforge.engine.optimizer import build_optimizer
        from detforge.models.compile_parts import compile_detector_parts
        self.variant = variant
        self.model = copy.deepcopy(model)
        if variant.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if variant.compile_parts is not None:
            compile_detector_parts(self.model, **variant.compile_parts)
        self.forward = self.model
        if variant.compile_model:
            self.forward = torch.compile(self.model, backend='inductor')
        optimizer_cfg = dict(cfg.optimizer, lr=FIRST_LR)
        self.optimizer = build_optimizer(self.model, optimizer_cfg)
        self.max_norm = ((cfg.get('optimizer_config') or {}).get('grad_clip') or {}).get(
            'max_norm')
        self.losses: list[dict] = []
        self.seconds: list[float] = []
        self.new_graphs: list[int] = []
        self.error: str | None = None

    def step(self, batch: dict) -> None:
        """One training step; its losses, seconds and newly compiled graphs are recorded."""
        from detforge.models.detectors.base import BaseDetector
        batch = {k: (copy.deepcopy(v) if k == 'img_metas' else v) for k, v in batch.items()}
        autocast = (torch.autocast('cpu', dtype=self.variant.amp_dtype)
                    if self.variant.amp_dtype is not None else contextlib.nullcontext())
        graphs = _compiled_graphs()
        start = time.perf_counter()
        with mkldnn_settings(self.variant.mkldnn):
            self.optimizer.zero_grad(set_to_none=True)
            with autocast:
                losses = self.forward(**batch)
            loss, log_vars = BaseDetector._parse_losses(losses)
            loss.backward()
            if self.max_norm:
                torch.nn.utils.clip_grad_norm_(
                    [p for p in self.model.parameters() if p.grad is not None], self.max_norm)
            self.optimizer.step()
        self.seconds.append(time.perf_counter() - start)
        self.new_graphs.append(_compiled_graphs() - graphs)
        self.losses.append(dict(log_vars))


def _compiled_graphs() -> int:
    """Graphs TorchDynamo has compiled so far in this process (0 before any compile)."""
    try:
        from torch._dynamo.utils import counters
        return int(counters['stats']['unique_graphs'])
    except Exception:  # noqa: BLE001 - the count is informative only
        return 0


def loss_difference(losses: list[dict], reference: list[dict]) -> float:
    """The largest relative difference of any logged loss over the steps both ran."""
    worst = 0.0
    for mine, ref in zip(losses, reference):
        for key, value in ref.items():
            if 'loss' in key and key in mine:
                worst = max(worst, abs(mine[key] - value) / max(abs(value), 1e-8))
    return worst


def machine() -> str:
    return f'{cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, ' \
           f'torch {torch.__version__}, oneDNN bf16: {"yes" if cpu_has_bf16() else "no"}'



def report(runners: dict, skipped: dict, args, load_before: str,
           commit_id: str = 'unknown') -> str:
    base = runners.get('baseline')
    timed = slice(args.warmup, None)
    base_median = statistics.median(base.seconds[timed]) if base and not base.error else None
    base_warm = sum(base.seconds[:args.warmup]) if base and not base.error else None
    lines = ['# Training-step levers on the CPU (benchmarks/bench_train_levers.py)', '',
             f'Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC at commit '
             f'{commit_id} on {machine()}. Load average before: {load_before}; after: '
             f'{loadavg()}.', '',
             f'RetinaNet-R18 BCCD-320 recipe, batch {args.batch_size}, real BCCD trainval images '
             f'(multi-scale 288-352), {args.warmup} warm-up + {args.steps} timed steps per '
             'variant, variants alternating step by step in one process; '
             f'same losses = every logged loss within relative {args.rtol:g} of the baseline\'s '
             f'over all {args.warmup + args.steps} steps.', '',
             '| variant | median s/step | speed-up | compile s (warm-up minus baseline\'s) '
             '| graphs compiled while timed | max rel. loss diff | same losses | verdict |',
             '| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |']
    for name, r in runners.items():
        if r.error:
            lines.append(f'| {name} | - | - | - | - | - | - | failed: {r.error} |')
            continue
        median = statistics.median(r.seconds[timed])
        speedup = base_median / median if base_median else float('nan')
        compiles = r.variant.compile_parts is not None or r.variant.compile_model
        compile_s = (f'{sum(r.seconds[:args.warmup]) - base_warm:.1f}'
                     if compiles and base_warm is not None else '-')
        diff = loss_difference(r.losses, base.losses) if base and not base.error else 0.0
        same = diff <= args.rtol
        if name == 'baseline':
            verdict = 'reference'
        elif not same:
            verdict = 'no: losses differ'
        elif diff == 0 and r.variant.mkldnn.get('conv.fp32_precision'):
            verdict = 'no effect on this CPU (bit-identical losses)'
        elif speedup >= 1.10:
            verdict = 'adopt (>= 10% faster)'
        else:
            verdict = 'no: < 10% faster'
        lines.append(f'| {name} | {median:.3f} | {speedup:.2f}x | '
                     f'{compile_s} | {sum(r.new_graphs[timed])} | {diff:.1e} | '
                     f'{"yes" if same else "no"} | {verdict} |')
    for name, why in skipped.items():
        lines.append(f'| {name} | - | - | - | - | - | - | skipped: {why} |')
    if base and not base.error:
        first = base.losses[0]
        lines += ['', 'Baseline losses at step 1: ' + ', '.join(
            f'{k} {v:.5f}' for k, v in first.items() if 'loss' in k) + '.']
    return '\n'.join(lines) + '\n'


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--steps', type=int, default=5, help='timed steps per variant (5)')
    parser.add_argument('--warmup', type=int, default=2,
                        help='untimed steps first, >= 2: compilation and the second input '
                        'shape happen there (2)')
    parser.add_argument('--batch-size', type=int, default=4, help='images per step (4)')
    parser.add_argument('--batches', type=int, default=4,
                        help='distinct batches, cycled over the steps (4)')
    parser.add_argument('--variants', nargs='+', default=DEFAULT_VARIANTS,
                        help=f'default: {" ".join(DEFAULT_VARIANTS)}; "all": '
                        f'{" ".join(ALL_VARIANTS)}')
    parser.add_argument('--rtol', type=float, default=1e-3,
                        help='relative loss difference allowed for "same losses" (1e-3)')
    parser.add_argument('--threads', type=int, default=0, help='torch threads (0: default)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--config', default=CONFIG, help='config (default: the recipe)')
    parser.add_argument('--out', help='also write the Markdown report here')
    args = parser.parse_args(argv)
    names = ALL_VARIANTS if args.variants == ['all'] else list(dict.fromkeys(args.variants))
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f'unknown variant {unknown[0]!r}; choose from {", ".join(ALL_VARIANTS)}')
    if args.steps < 1 or args.warmup < 0 or args.batches < 1 or args.batch_size < 1:
        parser.error('--steps, --batches and --batch-size must be >= 1, --warmup >= 0')
    if 'baseline' in names:
        names.remove('baseline')
    names.insert(0, 'baseline')  # the reference of every comparison
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before, commit_id = loadavg(), git_commit()  # the state the run starts from
    os.chdir(REPO)  # the recipe's data paths are relative to the repository

    from detforge.compat import load_config
    from detforge.models.builder import build_detector
    cfg = load_config(args.config)
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(args.seed)
    model = build_detector(cfg.model).train()
    batches = load_batches(cfg, args.batches, args.batch_size, args.seed)
    shapes = sorted({tuple(b['img'].shape[-2:]) for b in batches})
    print(f'{len(batches)} batches of {args.batch_size}, input shapes {shapes}', flush=True)

    skipped, runners = {}, {}
    for name in names:
        variant = VARIANTS[name]
        if variant.needs_bf16 and not cpu_has_bf16():
            skipped[name] = 'this CPU has no bf16 instructions (AVX512-BF16 / AMX)'
            continue
        runners[name] = Runner(variant, model, cfg)
    for k in range(args.warmup + args.steps):
        batch = batches[k % len(batches)]
        for name, r in runners.items():
            if r.error:
                continue
            try:
                r.step(batch)
            except Exception as e:  # noqa: BLE001 - a lever that fails is reported, not fatal
                r.error = f'{type(e).__name__}: {str(e).splitlines()[0][:160]}'
                traceback.print_exc()
            if not r.error:
                print(f'step {k + 1} {name}: {r.seconds[-1]:.2f} s, loss '
                      f'{r.losses[-1]["loss"]:.5f}', flush=True)
    text = report(runners, skipped, args, load_before, commit_id)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
        print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
