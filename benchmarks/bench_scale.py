"""COCO-train-size annotations: load time and memory, and loader-worker memory over time.

    python benchmarks/bench_scale.py                          # everything (writes the file once)
    python benchmarks/bench_scale.py --only load --rounds 3
    python benchmarks/bench_scale.py --only workers --batches 500 --workers 0 2 4
    python benchmarks/bench_scale.py --images 5000 --boxes 36000   # a small smoke run

1. Makes (once, cached under ``--cache-dir``) a synthetic annotation file the size of COCO
   train2017: 118,287 images, 860,001 boxes, 80 categories with COCO's ids and names, and
   roughly COCO's statistics (see :func:`make_synthetic_coco`). Its ``file_name``s are a few
   BCCD images referenced many times (their real size differs from the recorded one: the
   worker benchmark does not decode images).
2. ``load``: in a fresh process each (so that RSS is clean), the time and RSS of building
   ``CocoDataset`` (training mode: filtering and groups included), of pycocotools'
   ``COCO()`` and of a plain ``json.load``; every process imports the same modules first.
   Rounds alternate the three.
3. ``workers``: for records pickled in one buffer (``serialize_data=True``, the default)
   and records kept as Python dicts (``serialize_data=False``), and for each number of
   loader workers, iterate ``--batches`` batches of the training set through a
   ``DataLoader`` (aspect-ratio group sampler, a pipeline that reads the record's
   annotations only: ``LoadAnnotations`` and a count, so that images do not blur the
   picture) and sum RSS and PSS (``/proc/PID/smaps_rollup``) of the main process and its
   workers at the first batch and at the last.

Prints one summary line per measure (parsed by ``run_all.py``) and, with ``--json``, writes
every number.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))  # benchmarks/ is not a package: machine.py
BCCD = REPO / 'data' / 'bccd'

COCO_CAT_IDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
                24, 25, 27, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47,
                48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70,
                72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90]


# ---------------------------------------------------------------------------- the file
def make_synthetic_coco(path: Path, num_images: int = 118287, num_boxes: int = 860001,
                        seed: int = 0) -> None:
    """Write a COCO-format file with COCO train2017's counts and roughly its statistics.

    - images: 70% landscape 640 x {480, 427, 426, 428, 424, 360, 512}, 25% portrait, 5%
      640 x 640; COCO's image keys (``license``, ``coco_url``, ``date_captured``,
      ``flickr_url``); ids sorted random integers below 600,000;
    - boxes per image: 1 + a negative binomial, mean ``num_boxes / num_images`` (7.3), 0.9%
      of the images without any, adjusted to exactly ``num_boxes``;
    - categories: "person" 30.5% of the boxes, the other 79 by a power law;
    - box size: sqrt(area) log-normal (median 42 px, sigma 1.05: about 40% small, 35%
      medium, 25% large by COCO's 32/96 px bounds), aspect ratio log-normal, clipped to
      the image; 1 box in 20,000 (at most 40) under 1 px wide (COCO has some);
    - 1% ``iscrowd`` with an uncompressed RLE ``segmentation``, the others one polygon of
      6 to 40 points (two decimals, as COCO), ``area`` 0.7 w h;
    - annotations in random order (not grouped by image).
    """
    import numpy as np
    from detforge.data.coco import CocoDataset
    rng = np.random.default_rng(seed)
    files = sorted(p.name for p in (BCCD / 'JPEGImages').glob('*.jpg'))[:8] or ['image.jpg']

    # image sizes and ids
    kind = rng.choice(3, num_images, p=[0.70, 0.25, 0.05])
    short = rng.choice([480, 427, 426, 428, 424, 360, 512], num_images,
                       p=[0.55, 0.2, 0.07, 0.07, 0.05, 0.03, 0.03])
    widths = np.where(kind == 0, 640, np.where(kind == 1, short, 640))
    heights = np.where(kind == 0, short, 640)
    img_ids = np.sort(rng.choice(600000, num_images, replace=False)) + 1

    # boxes per image: 1 + negative binomial (a long tail, as COCO's up to ~90), and
    # 0.9% of the images without any (COCO train2017: 1,021 of 118,287)
    mean = num_boxes / num_images - 1
    counts = 1 + rng.negative_binomial(1.2, 1.2 / (1.2 + mean), num_images)
    counts[rng.random(num_images) < 0.009] = 0
    diff = num_boxes - int(counts.sum())
    while diff:
        pick = rng.integers(0, num_images, abs(diff))
        if diff > 0:
            np.add.at(counts, pick, 1)
        else:
            counts[pick] = np.maximum(counts[pick] - 1, 0)
        diff = num_boxes - int(counts.sum())
    owner = np.repeat(np.arange(num_images), counts)

    # categories: person 30.5%, the rest by a power law
    rest = 1.0 / np.arange(1, 80) ** 0.9
    probs = np.concatenate([[0.305], 0.695 * rest / rest.sum()])
    cat_index = rng.choice(80, num_boxes, p=probs)

    # box geometry
    side = np.exp(rng.normal(np.log(42.0), 1.05, num_boxes))
    aspect = np.exp(rng.normal(0.0, 0.6, num_boxes))
    bw = np.clip(side * np.sqrt(aspect), 1.0, widths[owner] - 1)
    bh = np.clip(side / np.sqrt(aspect), 1.0, heights[owner] - 1)
    tiny = rng.choice(num_boxes, min(40, num_boxes // 20000 + 1), replace=False)
    bw[tiny] = 0.5
    bx = rng.random(num_boxes) * (widths[owner] - bw)
    by = rng.random(num_boxes) * (heights[owner] - bh)
    crowd = rng.random(num_boxes) < 0.01
    order = rng.permutation(num_boxes)

    npoints = rng.integers(6, 41, num_boxes)
    runs = rng.integers(30, 100, num_boxes)

    def polygons(ks: np.ndarray, x, y, w, h) -> list[list[float]]:
        """One polygon per box: ``k`` points on a wobbly ellipse inside it, 2 decimals."""
        total = int(ks.sum())
        box = np.repeat(np.arange(len(ks)), ks)
        t = rng.random(total) * 2 * np.pi
        r = 0.35 + 0.15 * rng.random(total)
        px = np.round(x[box] + w[box] * (0.5 + r * np.cos(t)), 2)
        py = np.round(y[box] + h[box] * (0.5 + r * np.sin(t)), 2)
        flat = np.stack([px, py], 1).reshape(-1).tolist()
        ends = np.cumsum(2 * ks).tolist()
        return [flat[e - 2 * k:e] for e, k in zip(ends, ks.tolist())]

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix('.part')
    with open(tmp, 'w') as f:
        f.write('{"info": {"description": "synthetic COCO-train-size file (detforge '
                'benchmarks/bench_scale.py)"}, "licenses": [{"id": 1, "name": "synthetic", '
                '"url": ""}], "images": [')
        chunk = []
        for i in range(num_images):
            name = files[i % len(files)]
            chunk.append(json.dumps({
                'license': 1, 'file_name': name,
                'coco_url': f'http://images.cocodataset.org/train2017/{img_ids[i]:012d}.jpg',
                'height': int(heights[i]), 'width': int(widths[i]),
                'date_captured': '2013-11-14 11:18:45',
                'flickr_url': f'http://farm1.staticflickr.com/1/{img_ids[i]}_0000000000_z.jpg',
                'id': int(img_ids[i])}))
            if len(chunk) == 10000 or i == num_images - 1:
                f.write((',' if i >= 10000 else '') + ','.join(chunk))
                chunk = []
        f.write('], "annotations": [')
        step = 20000
        for c in range(0, num_boxes, step):
            ks = order[c:c + step]
            xs, ys = np.round(bx[ks], 2), np.round(by[ks], 2)
            ws, hs = np.round(bw[ks], 2), np.round(bh[ks], 2)
            polys = polygons(npoints[ks], xs, ys, ws, hs)
            rows = zip(ks.tolist(), xs.tolist(), ys.tolist(), ws.tolist(), hs.tolist(), polys)
            for j, (k, x, y, w, h, poly) in enumerate(rows, start=c):
                i = owner[k]
                if crowd[k]:  # an uncompressed RLE of plausible length
                    segm = {'counts': rng.integers(1, max(2, int(w * h / runs[k]) + 2),
                                                   runs[k]).tolist(),
                            'size': [int(heights[i]), int(widths[i])]}
                else:
                    segm = [poly]
                chunk.append(json.dumps({
                    'segmentation': segm, 'area': round(0.7 * w * h, 2),
                    'iscrowd': int(crowd[k]), 'image_id': int(img_ids[i]), 'bbox': [x, y, w, h],
                    'category_id': COCO_CAT_IDS[cat_index[k]], 'id': j + 1}))
            f.write((',' if c else '') + ','.join(chunk))
            chunk = []
        cats = [{'supercategory': 'thing', 'id': cid, 'name': name}
                for cid, name in zip(COCO_CAT_IDS, CocoDataset.CLASSES)]
        f.write('], "categories": ' + json.dumps(cats) + '}')
    os.replace(tmp, path)


# ---------------------------------------------------------------------------- memory
def memory_of(pid: int) -> dict[str, int]:
    """``{'rss', 'pss', 'pss_anon'}`` bytes of one process (``smaps_rollup``; PSS is RSS
    where the kernel has no rollup). ``pss_anon`` leaves out file-backed pages (the shared
    libraries), whose share also depends on unrelated processes mapping the same files."""
    out = {}
    try:
        with open(f'/proc/{pid}/smaps_rollup') as f:
            for line in f:
                key, _, rest = line.partition(':')
                if key in ('Rss', 'Pss', 'Pss_Anon'):
                    out[key.lower()] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    if 'rss' not in out:
        with open(f'/proc/{pid}/status') as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    out['rss'] = int(line.split()[1]) * 1024
    out.setdefault('pss', out['rss'])
    out.setdefault('pss_anon', out['pss'])
    return out


def children_of(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (the loader's workers)."""
    kids = []
    for task in os.listdir(f'/proc/{pid}/task'):
        try:
            with open(f'/proc/{pid}/task/{task}/children') as f:
                kids += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return kids


def total_memory(pid: int) -> dict[str, float]:
    """RSS and PSS (MiB) summed over ``pid`` and its children, and the worker count."""
    pids = [pid] + children_of(pid)
    mems = [memory_of(p) for p in pids]
    return dict(rss_mib=sum(m['rss'] for m in mems) / 2 ** 20,
                pss_mib=sum(m['pss'] for m in mems) / 2 ** 20,
                pss_anon_mib=sum(m['pss_anon'] for m in mems) / 2 ** 20,
                main_pss_mib=mems[0]['pss'] / 2 ** 20, processes=len(pids))


def vm_status() -> dict[str, float]:
    """This process's VmRSS and VmHWM (peak RSS), MiB."""
    out = {}
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(('VmRSS:', 'VmHWM:')):
                out[line.split(':')[0]] = int(line.split()[1]) / 1024
    return out


# ---------------------------------------------------------------------------- children
def _child_load(mode: str, ann_file: str) -> dict:
    """Build one thing from ``ann_file`` in this (fresh) process; time and memory."""
    import pycocotools.coco  # noqa: F401 -- every mode imports the same modules
    import detforge.data  # noqa: F401
    from detforge.data import CocoDataset
    gc.collect()
    before = vm_status()
    # reset the peak to "now" so that it measures the load, not the imports
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')
    start = time.perf_counter()
    cpu = time.process_time()
    if mode == 'json':
        with open(ann_file) as f:
            obj = json.load(f)
    elif mode == 'pycocotools':
        import contextlib
        import io
        with contextlib.redirect_stdout(io.StringIO()):
            obj = pycocotools.coco.COCO(ann_file)
    elif mode in ('detforge', 'detforge-dicts'):
        obj = CocoDataset(ann_file, [], serialize_data=mode == 'detforge')
    else:
        raise ValueError(mode)
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu
    gc.collect()
    after = vm_status()
    out = dict(mode=mode, seconds=seconds, cpu_seconds=cpu, rss_before_mib=before['VmRSS'],
               peak_rss_mib=after['VmHWM'], rss_after_mib=after['VmRSS'],
               ru_maxrss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    if mode.startswith('detforge'):
        out['images'] = len(obj)
        store = obj.data_infos
        out['records_mib'] = getattr(store, 'nbytes', 0) / 2 ** 20
    del obj
    return out


def _count_boxes(results):
    """The pipeline's last step: the number of boxes (keeps the batches tiny)."""
    return dict(boxes=len(results['gt_bboxes']) + len(results.get('gt_bboxes_ignore', ())))


def _collate_counts(samples):
    return sum(s['boxes'] for s in samples)


def _child_workers(ann_file: str, serialize: bool, workers: int, batches: int,
                   batch_size: int) -> dict:
    import torch
    from torch.utils.data import DataLoader
    from detforge.data import CocoDataset
    from detforge.data.pipelines.loading import LoadAnnotations
    from detforge.data.samplers.group_sampler import DistributedGroupSampler
    dataset = CocoDataset(ann_file, [LoadAnnotations(with_bbox=True), _count_boxes],
                          serialize_data=serialize)
    gc.collect()
    sampler = DistributedGroupSampler(dataset, batch_size, 1, 0, seed=0)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                        collate_fn=_collate_counts, multiprocessing_context='fork'
                        if workers else None)
    pid = os.getpid()
    idle = total_memory(pid)
    first = last = None
    boxes = 0
    samples = []
    start = time.perf_counter()
    for b, count in enumerate(loader):
        boxes += count
        if b == 0:
            first = total_memory(pid)
        if (b + 1) % max(1, batches // 10) == 0:
            samples.append(dict(batch=b + 1, **total_memory(pid)))
        if b + 1 == batches:
            last = total_memory(pid)
            break
    seconds = time.perf_counter() - start
    del loader
    return dict(serialize=serialize, workers=workers, batches=batches, batch_size=batch_size,
                idle=idle, first=first, last=last, samples=samples, boxes=boxes,
                seconds=seconds, torch_threads=torch.get_num_threads())


def run_child(kind: str, *args) -> dict:
    """Run ``_child_<kind>(*args)`` in a fresh interpreter and return its result."""
    code = ('import json, sys; sys.path.insert(0, %r); import bench_scale as b; '
            'print("RESULT " + json.dumps(b._child_%s(*json.loads(sys.argv[1]))))'
            % (str(HERE), kind))
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get('PYTHONPATH', ''))
    proc = subprocess.run([sys.executable, '-c', code, json.dumps(args)], cwd=REPO, env=env,
                          text=True, capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f'{kind} {args} failed ({proc.returncode}): {proc.stderr[-2000:]}')
    line = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')][-1]
    return json.loads(line[len('RESULT '):])


# ---------------------------------------------------------------------------- main
def machine() -> dict:
    """Date, commit, CPU and load average when the run starts (``run_all.py`` prints them)."""
    import datetime
    from machine import cpu_name, git_commit
    cpu, commit = cpu_name(), git_commit(dirty_note=' (with uncommitted changes)')
    return dict(date=datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
                commit=commit, cpu=cpu, usable_cpus=len(os.sched_getaffinity(0)),
                load_before=os.getloadavg())


def bench_load(ann_file: str, rounds: int) -> dict:
    modes = ['detforge', 'pycocotools', 'json']
    runs = {m: [] for m in modes}
    for r in range(rounds):
        for mode in (modes if r % 2 == 0 else modes[::-1]):  # alternate the order
            res = run_child('load', mode, ann_file)
            runs[mode].append(res)
            print(f'  round {r + 1} {mode:12s} {res["seconds"]:7.2f} s  peak RSS '
                  f'{res["peak_rss_mib"]:7.0f} MiB  RSS after {res["rss_after_mib"]:7.0f} MiB '
                  f'(before {res["rss_before_mib"]:.0f})', flush=True)
    summary = {}
    for mode, rs in runs.items():
        summary[mode] = dict(
            seconds=statistics.median(x['seconds'] for x in rs),
            cpu_seconds=statistics.median(x['cpu_seconds'] for x in rs),
            peak_rss_mib=statistics.median(x['peak_rss_mib'] for x in rs),
            rss_after_mib=statistics.median(x['rss_after_mib'] for x in rs),
            rss_before_mib=statistics.median(x['rss_before_mib'] for x in rs),
            records_mib=rs[0].get('records_mib'), images=rs[0].get('images'))
    for mode in modes:
        s = summary[mode]
        print(f'load {mode}: median {s["seconds"]:.2f} s (CPU {s["cpu_seconds"]:.2f} s), '
              f'peak RSS {s["peak_rss_mib"]:.0f} MiB, RSS after {s["rss_after_mib"]:.0f} MiB, '
              f'RSS before {s["rss_before_mib"]:.0f} MiB', flush=True)
    return dict(rounds=rounds, runs=runs, summary=summary)


def bench_workers(ann_file: str, workers: list[int], batches: int, batch_size: int) -> list:
    rows = []
    for serialize in (True, False):
        for w in workers:
            res = run_child('workers', ann_file, serialize, w, batches, batch_size)
            rows.append(res)
            f, l = res['first'], res['last']
            print(f'workers={w} records={"serialized" if serialize else "dicts"}: '
                  f'PSS first {f["pss_mib"]:.0f} MiB last {l["pss_mib"]:.0f} MiB '
                  f'(x{l["pss_mib"] / f["pss_mib"]:.3f}); RSS first {f["rss_mib"]:.0f} MiB '
                  f'last {l["rss_mib"]:.0f} MiB (x{l["rss_mib"] / f["rss_mib"]:.3f}); '
                  f'{l["processes"]} processes, {batches} batches of {batch_size}, '
                  f'{res["seconds"]:.1f} s', flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--images', type=int, default=118287)
    parser.add_argument('--boxes', type=int, default=860001)
    parser.add_argument('--cache-dir', default=os.path.join(
        os.environ.get('XDG_CACHE_HOME', os.path.expanduser('~/.cache')), 'detforge_bench'))
    parser.add_argument('--only', default='load,workers', help='load, workers or both')
    parser.add_argument('--rounds', type=int, default=3, help='load rounds (alternating)')
    parser.add_argument('--workers', type=int, nargs='+', default=[0, 2, 4])
    parser.add_argument('--batches', type=int, default=500)
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--json', help='write every number to this file')
    args = parser.parse_args(argv)
    ann_file = Path(args.cache_dir) / f'synthetic_coco_v2_{args.images}_{args.boxes}.json'
    if not ann_file.exists():
        print(f'writing {ann_file} ...', flush=True)
        start = time.perf_counter()
        make_synthetic_coco(ann_file, args.images, args.boxes)
        print(f'  done in {time.perf_counter() - start:.0f} s', flush=True)
    size_mib = ann_file.stat().st_size / 2 ** 20
    print(f'annotation file: {ann_file} ({size_mib:.0f} MiB, {args.images} images, '
          f'{args.boxes} boxes)', flush=True)
    out = dict(file=str(ann_file), file_mib=size_mib, images=args.images, boxes=args.boxes,
               machine=machine(), argv=' '.join(['python benchmarks/bench_scale.py',
                                                  *(argv if argv is not None else sys.argv[1:])]))
    only = {s.strip() for s in args.only.split(',')}
    if 'load' in only:
        out['load'] = bench_load(str(ann_file), args.rounds)
    if 'workers' in only:
        out['workers'] = bench_workers(str(ann_file), args.workers, args.batches, args.batch_size)
    out['machine']['load_after'] = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == '__main__':
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
