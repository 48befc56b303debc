"""One speed report: every benchmark of detforge against its baseline, into benchmarks/RESULTS.md.

    python benchmarks/run_all.py                 # the full report (about 20 min on 2 idle cores)
    python benchmarks/run_all.py --quick         # a smoke run, 1 timed iteration/round each (~8 min)
    python benchmarks/run_all.py --only models,eval

Runs the benchmarks as subprocesses through their command lines, each in a fresh interpreter:

- ``data``: ``bench_data.py``, images/s of the training data path, detforge vs
  torchvision.transforms.v2, per number of loader workers;
- ``models``: ``bench_models.py --memory --json`` for every model it offers (RetinaNet and
  Faster R-CNN): training step, inference and peak memory vs torchvision; then, with
  ``flops.py``, this CPU's matmul throughput (measured just before and just after the
  RetinaNet timings) and the RetinaNet-R50 FLOPs per step, for the utilisation of the
  training step and of inference (ours and torchvision's);
- ``eval``: ``bench_eval.py``, COCO box evaluation, ``evaluate_coco`` (both backends) vs plain
  pycocotools;
- ``scale``: ``bench_scale.py``, a COCO-train-size annotation file: ``CocoDataset``'s load
  time and peak RSS vs pycocotools' ``COCO()`` and ``json.load``, and the summed RSS/PSS of
  the loader's processes over 500 batches with 0, 2 and 4 workers, records serialised vs
  Python dicts (memory numbers hold on a shared machine; times do not).

``--only`` with some of the sections updates just those sections of an existing report
(each new section carries its own date, commit and load line) and keeps the others.

Every ratio is ``ours time / baseline time`` (for a rate: baseline rate / our rate), so a ratio
at most 1.0 means ours is no slower (issue 10's goal). The raw numbers also go to
``--raw-json``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from machine import cpu_name, git_commit  # noqa: E402 -- benchmarks/ is not a package
from tee import tee  # noqa: E402

SECTIONS = ('data', 'models', 'eval', 'scale')


# ---------------------------------------------------------------------------- running
class BenchFailed(RuntimeError):
    """A benchmark exited non-zero or printed no summary line to parse."""


def run_bench(args: list[str], title: str) -> str:
    """Run ``python benchmarks/ARGS...`` from the repository root, echo its output as it
    comes, and return the output (stdout and stderr). Raise ``BenchFailed`` on a non-zero
    exit, with the last lines of its output."""
    code, out, wall = tee([sys.executable, *args], title, indent='    ')
    print(f'=== {title}: exit {code} after {wall:.0f}s', flush=True)
    if code != 0:
        raise BenchFailed(f'{" ".join(args)} exited with {code}: '
                          + ' | '.join(l.strip() for l in out.splitlines()[-4:]))
    return out


def _flops():
    """``benchmarks/flops.py`` (imported late: it imports torch, which ``--help`` need not)."""
    import flops
    return flops


def models_available() -> list[str]:
    """The ``--model`` choices ``bench_models.py`` offers now (its ``BUILDERS``)."""
    return sorted(_flops().load_bench_models().BUILDERS)


# ---------------------------------------------------------------------------- benchmarks
def parse_data_output(out: str) -> list[dict]:
    """Rows ``{workers, ours_img_s, base_img_s}`` from bench_data.py's printed summary.

    bench_data.py has no --json: this parses its per-worker summary lines,
      "workers=0: detforge   41.2 img/s   torchvision.v2   35.0 img/s   ratio 1.18 ..."
    (img/s, higher is better); output with none of them is a failure.
    """
    pattern = re.compile(r'workers=(\d+):\s*detforge\s+([\d.]+)\s*img/s\s+torchvision\S*\s+'
                         r'([\d.]+)\s*img/s')
    rows = [dict(workers=int(w), ours_img_s=float(a), base_img_s=float(b))
            for w, a, b in pattern.findall(out)]
    if not rows:
        raise BenchFailed('bench_data.py printed no "workers=N: detforge X img/s '
                          'torchvision.v2 Y img/s" line')
    return rows


def bench_data(quick: bool) -> dict:
    opts = ['--rounds', '1', '--workers', '0'] if quick else ['--rounds', '5', '--workers', '0', '2']
    out = run_bench(['benchmarks/bench_data.py', *opts], 'data')
    return dict(options=opts, rows=parse_data_output(out))


def bench_model(model: str, quick: bool, threads: int, tmp: Path) -> dict:
    out_json = tmp / f'models_{model}.json'
    opts = ['--model', model, '--threads', str(threads), '--memory', '--json', str(out_json)]
    opts += ['--iters', '1', '--warmup', '1'] if quick else ['--iters', '11', '--warmup', '2']
    run_bench(['benchmarks/bench_models.py', *opts], f'models ({model})')
    result = json.loads(out_json.read_text())
    result['options'] = opts
    return result


def measure_limit(threads: int, quick: bool, when: str) -> tuple[dict, dict]:
    """This CPU's limits now: ``torch.mm`` 4096x4096 and a 256-channel 3x3 conv2d, float32."""
    import torch
    torch.set_num_threads(threads)
    fl = _flops()
    mm = fl.matmul_gflops(n=4096, repeats=3 if quick else 5)
    conv = fl.conv_gflops(repeats=3 if quick else 5)
    print(f'\n=== limit ({when}), {threads} threads: torch.mm 4096x4096 median '
          f'{mm["median"]:.1f} GFLOP/s ({mm["cpu_median"]:.1f} per CPU-second); conv2d 3x3 '
          f'{conv["median"]:.1f} GFLOP/s ({conv["cpu_median"]:.1f} per CPU-second)', flush=True)
    return mm, conv


def bench_flops(threads: int) -> dict:
    """RetinaNet-R50's FLOPs per step (ours and torchvision's), counted in this process."""
    import torch
    torch.set_num_threads(threads)
    print('\n=== FLOPs per step: RetinaNet-R50-FPN, 640x480', flush=True)
    step_flops = _flops().model_step_flops('retinanet')
    for who in ('ours', 'base'):
        print(f'    {who}: forward 1 image {step_flops[who]["infer"] / 1e9:.1f} GFLOP, train '
              f'step 2 images {step_flops[who]["train"] / 1e9:.1f} GFLOP', flush=True)
    return step_flops


def parse_eval_output(out: str) -> dict:
    """``{base_s, backends: {name: {ours_s, max_ap_difference}}}`` from bench_eval.py's
    printed summary (it has no --json). Lines parsed, one per backend of ours:
      "AP/AP50/... detforge/BACKEND  0.1 ...  (max |difference| 0.00e+00)"
      "median time: plain pycocotools 12.34s, detforge/BACKEND 3.21s -> ratio 0.26"
    """
    times = re.findall(r'median time:\s*plain pycocotools\s+([\d.]+)\s*s,\s*detforge/(\w+)\s+'
                       r'([\d.]+)\s*s', out)
    if not times:
        raise BenchFailed('bench_eval.py printed no "median time: plain pycocotools Xs, '
                          'detforge/BACKEND Ys" line')
    diffs = dict(re.findall(r'detforge/(\w+)\s.*\(max \|difference\| ([-+.\deE]+)\)', out))
    return dict(base_s=float(times[0][0]),
                backends={name: dict(ours_s=float(ours),
                                     max_ap_difference=float(diffs.get(name, 'nan')))
                          for _, name, ours in times})


def bench_eval(quick: bool) -> dict:
    # bench_eval.py exits 1 when the AP numbers disagree (> 1e-6): reported as a failure
    opts = ['--num-images', '500', '--rounds', '1'] if quick else \
        ['--num-images', '5000', '--dets', '100', '--rounds', '3']
    out = run_bench(['benchmarks/bench_eval.py', *opts], 'eval')
    return dict(options=opts, **parse_eval_output(out))


def scale_from_json(paths: list[str]) -> dict:
    """The scale results of earlier ``bench_scale.py --json`` runs (e.g. one ``--only load``
    and one ``--only workers``), each part with the machine of its own run."""
    merged: dict = {}
    for path in paths:
        part = json.loads(Path(path).read_text())
        if 'workers' in part and 'load' not in part and 'machine' in merged:
            part['workers_machine'] = part.pop('machine', None)
        for key, value in part.items():
            merged.setdefault(key, value)
    merged['options'] = ['; '.join(json.loads(Path(p).read_text()).get('argv', Path(p).name)
                                   for p in paths)]
    return merged


def bench_scale(quick: bool, tmp: Path) -> dict:
    out_json = tmp / 'scale.json'
    opts = (['--images', '11829', '--boxes', '86000', '--rounds', '1', '--batches', '100']
            if quick else ['--rounds', '3', '--batches', '500'])
    opts += ['--workers', '0', '2', '4']
    run_bench(['benchmarks/bench_scale.py', *opts, '--json', str(out_json)], 'scale')
    result = json.loads(out_json.read_text())
    result['options'] = opts
    return result


# ---------------------------------------------------------------------------- report
def machine_info(threads: int) -> dict:
    import torch
    import torchvision
    cpu, commit = cpu_name(), git_commit(dirty_note=' (with uncommitted changes)')
    return dict(cpu=cpu, logical_cpus=os.cpu_count(), usable_cpus=len(os.sched_getaffinity(0)),
                threads=threads, python=platform.python_version(), torch=torch.__version__,
                torchvision=torchvision.__version__, platform=platform.platform(),
                date=datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
                commit=commit, load_before=os.getloadavg())


def _ratio(ours: float, base: float) -> str:
    return f'{ours / base:.2f}' if base else 'n/a'


def _goal(ours: float, base: float) -> str:
    return 'yes' if ours <= base else 'no'


DEFAULT_BASELINE = 'Baseline: torchvision. BCCD images at 640x480'
MODEL_BASELINES = {  # where bench_models.py compares something else (see its docstring)
    'mask_rcnn': 'Baseline: torchvision `maskrcnn_resnet50_fpn`. BCCD images at 640x480 with '
                 'inscribed-ellipse masks',
    'rtmdet_tiny': 'RTMDet-tiny against detforge RetinaNet-R18 (the BCCD-320 recipe\'s model; '
                   '"baseline" below), random weights, BCCD images at 320x427 padded to 320x448; '
                   'issue 21\'s goal is an inference ratio of at most 0.33',
}


def render(info: dict, results: dict, errors: dict, quick: bool) -> str:
    md = ['# detforge speed report', '',
          'Written by `python benchmarks/run_all.py' + (' --quick' if quick else '') + '`. '
          'Ratio = ours time / baseline time: at most 1.0 means ours is no slower (the goal '
          'of issue 10). Medians over the timed iterations/rounds.']
    if quick:
        md += ['', '**Quick run** (1 timed iteration or round each, smaller evaluation set): '
               'a smoke test of the report, not numbers to quote.']
    md += ['', '## Machine', '',
           f'- CPU: {info["cpu"]}, {info["logical_cpus"]} logical CPUs ({info["usable_cpus"]} '
           f'usable), torch threads {info["threads"]}',
           f'- Python {info["python"]}, torch {info["torch"]}, torchvision '
           f'{info["torchvision"]}, {info["platform"]}',
           f'- date {info["date"]}, detforge commit {info["commit"]}',
           f'- load average before / after: {" ".join(f"{x:.1f}" for x in info["load_before"])}'
           f' / {" ".join(f"{x:.1f}" for x in info.get("load_after", ()))} (the machine is '
           'shared: a load above the thread count slows both sides)']

    if 'data' in results:
        r = results['data']
        md += ['', '## Data pipeline (`bench_data.py`)', '',
               'Raccoon images (VOC), decode + resize to 1333x800 + flip + collate, batch 2. '
               f'Baseline: torchvision.transforms.v2. Options: `{" ".join(r["options"])}`.', '',
               '| loader workers | ours (img/s) | baseline (img/s) | ratio (time) | ours no slower |',
               '| --- | ---: | ---: | ---: | --- |']
        for row in r['rows']:
            a, b = row['ours_img_s'], row['base_img_s']
            md.append(f'| {row["workers"]} | {a:.1f} | {b:.1f} | {_ratio(b, a)} | {_goal(b, a)} |')

    for key in sorted(k for k in results if k.startswith('models/')):
        r = results[key]
        med = r['median_s']
        md += ['', f'## Model: {r["model"]} (`bench_models.py`)', '',
               f'{MODEL_BASELINES.get(r["model"], DEFAULT_BASELINE)}, 3 classes, {r["threads"]} '
               f'threads, options `{" ".join(r["options"])}`. Peak memory: peak RSS of a fresh '
               'process running one phase (interpreter and torch included: compare differences).',
               '', '| measure | ours | baseline | ratio | ours no slower |',
               '| --- | ---: | ---: | ---: | --- |']
        for step, label in (('train', 'train step, batch 2 (s)'), ('infer', 'inference, 1 image (s)')):
            a, b = med[f'ours_{step}'], med[f'base_{step}']
            md.append(f'| {label} | {a:.3f} | {b:.3f} | {_ratio(a, b)} | {_goal(a, b)} |')
        if r.get('train_cpu_ratio') is not None:
            md.append(f'| process CPU time ratio, train / inference | | | '
                      f'{r["train_cpu_ratio"]:.2f} / {r["infer_cpu_ratio"]:.2f} | |')
        peaks = r.get('peak_rss_mib') or {}
        for step in ('train', 'infer'):
            a, b = peaks.get(f'ours-{step}'), peaks.get(f'base-{step}')
            if a is not None and b is not None:
                md.append(f'| peak RSS, {step} (MiB) | {a:.0f} | {b:.0f} | {_ratio(a, b)} | '
                          f'{_goal(a, b)} |')

    if 'utilisation' in results:
        u = results['utilisation']
        mm = u['matmul']
        conv = u.get('conv')
        md += ['', '## Utilisation: RetinaNet-R50-FPN against this CPU\'s limit (`flops.py`)', '',
               f'Limit: `torch.mm` of 4096x4096 float32 with {mm["threads"]} threads, median of '
               f'{len(mm["runs"])} runs just before and after the RetinaNet timings: '
               f'**{mm["median"]:.1f} GFLOP/s** (batch medians '
               f'{", ".join(f"{x:.1f}" for x in mm.get("medians_per_batch", [mm["median"]]))}); '
               f'{mm["cpu_median"]:.1f} GFLOP per second of process CPU time.'
               + (f' For comparison, a 3x3 conv2d {tuple(conv["shape"])} (the head conv on P3 '
                  f'of 2 images) at the same moments: {conv["median"]:.1f} GFLOP/s, '
                  f'{conv["cpu_median"]:.1f} per CPU-second.' if conv else ''),
               '', 'FLOPs per step by `torch.utils.flop_counter.FlopCounterMode` (convolutions '
               'and matrix products, 2 FLOP per multiply-add); times are the medians of the '
               'RetinaNet table above. "achieved / limit" uses wall time (issue 10\'s measure; '
               'other jobs on the cores make it noisy); "per CPU-second" uses process CPU time '
               'on both sides, which holds up under load; "of conv2d" divides by the conv2d '
               'speed instead of the matmul. Goal: training at >= 80% of the limit.', '',
               '| step | model | GFLOP per step | median s | achieved GFLOP/s | achieved / limit '
               '| per CPU-second | of conv2d |',
               '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |']
        pct = lambda row, key: f'{100 * row[key]:.0f}%' if key in row else 'n/a'  # noqa: E731
        for row in u.get('rows', []):
            who = 'ours' if row['who'] == 'ours' else 'torchvision'
            step = 'train step, 2 images (fwd+bwd)' if row['step'] == 'train' else \
                'inference, 1 image (fwd)'
            md.append(f'| {step} | {who} | {row["gflop"]:.1f} | {row["seconds"]:.3f} | '
                      f'{row["achieved_gflops"]:.1f} | {pct(row, "utilisation")} | '
                      f'{pct(row, "cpu_utilisation")} | {pct(row, "conv_utilisation")} |')
        if not u.get('rows'):
            md.append('| (no RetinaNet timings: the models benchmark did not run or failed) '
                      '| | | | | | | |')

    if 'eval' in results:
        r = results['eval']
        b = r['base_s']
        md += ['', '## COCO evaluation (`bench_eval.py`)', '',
               'Synthetic detections, from per-class arrays to the AP numbers. Baseline: plain '
               'pycocotools (JSON dicts, loadRes, COCOeval). Ours: `evaluate_coco` with each '
               'backend: `pycocotools` (the same COCOeval fed arrays) and `faster_coco_eval` '
               '(its C++ COCOeval: most of that row\'s speed-up is faster-coco-eval\'s, not '
               f'detforge\'s). Options: `{" ".join(r["options"])}`.', '',
               '| measure | ours (s) | baseline (s) | ratio | ours no slower | max AP difference |',
               '| --- | ---: | ---: | ---: | --- | ---: |']
        for name, row in r['backends'].items():
            a = row['ours_s']
            md.append(f'| evaluate, backend `{name}` | {a:.2f} | {b:.2f} | {_ratio(a, b)} | '
                      f'{_goal(a, b)} | {row["max_ap_difference"]:.1e} |')

    if 'scale' in results:
        md += render_scale(info, results['scale'])

    if errors:
        md += ['', '## Failed or missing', '']
        md += [f'- **{name}**: {msg}' for name, msg in errors.items()]
    return '\n'.join(md) + '\n'


SCALE_TITLE = '## Scale: COCO-train-size annotations and loader memory (`bench_scale.py`)'


def _measured(info: dict) -> str:
    return (f'{info["date"]}, detforge commit {info["commit"]}, on {info["cpu"]} '
            f'({info["usable_cpus"]} usable CPUs), load average before / after '
            f'{" ".join(f"{x:.1f}" for x in info["load_before"])} / '
            f'{" ".join(f"{x:.1f}" for x in info.get("load_after", ()))}')


def render_scale(info: dict, r: dict) -> list[str]:
    """The scale section: load time/peak RSS vs pycocotools and json; loader memory.
    ``r`` may carry the machine of its own run(s) (``machine``, ``workers_machine``)."""
    load = r.get('load', {}).get('summary', {})
    where = f'Measured {_measured(r.get("machine") or info)}'
    if r.get('workers_machine'):
        where = (f'Loading measured {_measured(r.get("machine") or info)}; loader memory '
                 f'measured {_measured(r["workers_machine"])}')
    md = ['', SCALE_TITLE, '',
          f'{where}. **The machine was '
          'shared with other jobs during the run: the memory numbers are valid, the times '
          'are indicative only** (each process\'s CPU time is given too; it suffers less '
          'from the other jobs than wall time).', '',
          f'Synthetic annotation file of COCO train2017\'s size: {r["images"]:,} images, '
          f'{r["boxes"]:,} boxes, 80 categories, {r["file_mib"]:.0f} MiB of JSON (polygons of '
          '6-40 points, 1% crowd RLE, COCO-like box sizes). Options: '
          f'`{" ".join(r.get("options", []))}`.']
    if load:
        base = load['pycocotools']
        md += ['', 'Loading, each in a fresh process that imported the same modules first '
               f'(median of {r["load"]["rounds"]} rounds, alternating). "Peak RSS" is the '
               'process\'s high-water mark during the load; "RSS after" what stays (ours: the '
               'records; pycocotools: its index and the parsed JSON). `CocoDataset` is built '
               'in training mode (filtering and aspect-ratio groups included).', '',
               '| load | wall s | CPU s | peak RSS (MiB) | RSS after (MiB) | RSS before (MiB) '
               '| time vs pycocotools | peak RSS vs pycocotools |',
               '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |']
        names = {'detforge': '`CocoDataset` (records serialised)',
                 'pycocotools': "pycocotools `COCO()`", 'json': 'plain `json.load`'}
        for mode in ('detforge', 'pycocotools', 'json'):
            x = load.get(mode)
            if x is None:
                continue
            md.append(f'| {names[mode]} | {x["seconds"]:.1f} | {x["cpu_seconds"]:.1f} | '
                      f'{x["peak_rss_mib"]:.0f} | {x["rss_after_mib"]:.0f} | '
                      f'{x["rss_before_mib"]:.0f} | {_ratio(x["seconds"], base["seconds"])} '
                      f'(CPU {_ratio(x["cpu_seconds"], base["cpu_seconds"])}) | '
                      f'{_ratio(x["peak_rss_mib"], base["peak_rss_mib"])} |')
        ours = load.get('detforge')
        if ours and ours.get('records_mib'):
            md += ['', f'The records of the {ours["images"]:,} training images take '
                   f'{ours["records_mib"]:.0f} MiB serialised.']
    rows = r.get('workers') or []
    if rows:
        b = rows[0]
        md += ['', f'Loader memory: the training set through a `DataLoader` (group sampler, '
               f'batch {b["batch_size"]}, a pipeline reading the record\'s annotations only), '
               'RSS and PSS summed over the main process and its workers (PSS divides shared '
               'pages among the processes sharing them: the sum is the memory really used; '
               'RSS counts shared pages once per process; anonymous PSS leaves out the shared '
               'libraries, whose share also moves with unrelated processes mapping them). '
               f'"first": at the first batch; "last": after batch {b["batches"]}. Goal: PSS '
               'last <= 1.2 x first with 4 workers, and no higher than with Python-dict '
               'records.', '',
               '| records | workers | PSS first (MiB) | PSS last (MiB) | last / first '
               '| anon. PSS first / last (MiB) | RSS first (MiB) | RSS last (MiB) |',
               '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |']
        for row in rows:
            f, l = row['first'], row['last']
            kind = 'serialised' if row['serialize'] else 'Python dicts'
            anon = (f'{f["pss_anon_mib"]:.0f} / {l["pss_anon_mib"]:.0f}'
                    if 'pss_anon_mib' in f else 'n/a')
            md.append(f'| {kind} | {row["workers"]} | {f["pss_mib"]:.0f} | {l["pss_mib"]:.0f} '
                      f'| {l["pss_mib"] / f["pss_mib"]:.3f} | {anon} | {f["rss_mib"]:.0f} | '
                      f'{l["rss_mib"]:.0f} |')
    return md


def splice_report(old: str, new: str) -> str:
    """``old`` with its ``## `` sections replaced by those of ``new`` of the same title
    (new ones go before "Failed or missing", or at the end); the header and the Machine
    section of ``old`` stay."""
    def split(md: str) -> tuple[list[str], list[tuple[str, list[str]]]]:
        head, sections = [], []
        for line in md.rstrip('\n').split('\n'):
            if line.startswith('## '):
                sections.append((line, [line]))
            elif sections:
                sections[-1][1].append(line)
            else:
                head.append(line)
        return head, sections
    head, old_sections = split(old)
    _, new_sections = split(new)
    failed = '## Failed or missing'
    updates = {t: body for t, body in new_sections if t not in ('## Machine', failed)}
    # failures of the sections run now join the old list (without their earlier entries)
    new_failures = [l for t, b in new_sections if t == failed for l in b[1:] if l.startswith('- ')]
    if new_failures:
        ran = [l.split('**')[1] for l in new_failures if l.count('**') >= 2]
        old_failures = [l for t, b in old_sections if t == failed for l in b[1:]
                        if l.startswith('- ') and not any(f'**{n}' in l for n in ran)]
        old_sections = [(t, b) for t, b in old_sections if t != failed]
        old_sections.append((failed, [failed, ''] + old_failures + new_failures))
    out = list(head)
    done = set()
    for title, body in old_sections:
        if title == failed:
            for t, b in updates.items():
                if t not in done:
                    out += b + ([''] if b[-1] else [])
                    done.add(t)
        if title in updates:
            out += updates[title]
            done.add(title)
        else:
            out += body
    for t, b in updates.items():
        if t not in done:
            out += ([''] if out and out[-1] else []) + b
    return '\n'.join(out) + '\n'


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='few iterations and rounds: a smoke run of the whole report')
    parser.add_argument('--only', default=','.join(SECTIONS),
                        help=f'comma-separated subset of {",".join(SECTIONS)}')
    parser.add_argument('--threads', type=int, default=None,
                        help="torch threads of the model benchmarks and the matmul limit "
                             "(default: torch's default, the usable CPUs)")
    parser.add_argument('--output', default=str(HERE / 'RESULTS.md'), help='the report (markdown)')
    parser.add_argument('--raw-json', help='also write every raw number to this JSON file')
    parser.add_argument('--scale-json', nargs='+',
                        help='report the scale section from these bench_scale.py --json files '
                             '(each with the date, commit and load of its own run) instead of '
                             'running it')
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(',') if s.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        parser.error(f'--only: unknown section(s) {", ".join(unknown)}; choose from '
                     f'{", ".join(SECTIONS)}')

    import torch
    if args.threads is None:
        args.threads = torch.get_num_threads()
    info = machine_info(args.threads)
    results, errors, missing = {}, {}, {}
    with tempfile.TemporaryDirectory(prefix='detforge_run_all_') as tmp:
        if 'data' in only:
            try:
                results['data'] = bench_data(args.quick)
            except BenchFailed as e:
                errors['data'] = str(e)
        if 'models' in only:
            limits = []
            for model in models_available():
                # the limit is measured just before and after the RetinaNet timings, so that
                # it sees about the same load from other jobs as the steps it is compared with
                if model == 'retinanet':
                    limits.append(measure_limit(args.threads, args.quick, 'before RetinaNet'))
                try:
                    results[f'models/{model}'] = bench_model(model, args.quick, args.threads,
                                                             Path(tmp))
                except (BenchFailed, OSError, ValueError) as e:
                    errors[f'models ({model})'] = str(e)
                if model == 'retinanet':
                    limits.append(measure_limit(args.threads, args.quick, 'after RetinaNet'))
            if not any('rcnn' in m.replace('_', '').replace('-', '') for m in models_available()):
                missing['models (Faster R-CNN)'] = ('bench_models.py has no Faster R-CNN '
                                                    '--model choice yet; nothing measured')
            try:
                fl = _flops()
                limits = limits or [measure_limit(args.threads, args.quick, 'no RetinaNet timing')]
                mm = fl.merge_matmul(*(m for m, _ in limits))
                conv = fl.merge_matmul(*(c for _, c in limits))
                util = dict(matmul=mm, conv=conv, step_flops=bench_flops(args.threads), rows=[])
                timing = results.get('models/retinanet')
                if timing:
                    util['rows'] = fl.utilisation_table(
                        util['step_flops'], timing['median_s'], mm['median'],
                        fl.cpu_times_by_step(timing, 'retinanet'), mm['cpu_median'],
                        conv['median'])
                results['utilisation'] = util
            except Exception as e:  # noqa: BLE001 -- report any failure, keep the other sections
                errors['utilisation'] = f'{type(e).__name__}: {e}'
        if 'eval' in only:
            try:
                results['eval'] = bench_eval(args.quick)
            except BenchFailed as e:
                errors['eval'] = str(e)
        if 'scale' in only:
            try:
                results['scale'] = (scale_from_json(args.scale_json) if args.scale_json
                                    else bench_scale(args.quick, Path(tmp)))
            except (BenchFailed, OSError, ValueError, KeyError) as e:
                errors['scale'] = str(e)
    info['load_after'] = os.getloadavg()

    report = render(info, results, {**errors, **missing}, args.quick)
    output = Path(args.output)
    if set(only) != set(SECTIONS) and output.exists() and not args.quick:
        report = splice_report(output.read_text(), report)
    output.write_text(report)
    print(f'\nwrote {args.output}' + (f' ({len(errors)} section(s) failed)' if errors else ''))
    if args.raw_json:
        Path(args.raw_json).write_text(json.dumps(dict(machine=info, results=results,
                                                       errors=errors, missing=missing),
                                                  indent=2, default=str))
    return 1 if errors else 0


if __name__ == '__main__':
    raise SystemExit(main())
