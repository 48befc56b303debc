"""Long-run memory check: train a tiny model on BCCD for many iterations with loader workers
and sample the memory of the whole process tree; it should not grow beyond noise.

    python benchmarks/check_long_run.py                       # 2,000 iterations, 2 workers
    python benchmarks/check_long_run.py --iters 300 --json out.json

The model is RetinaNet with a ResNet-18 of 8 base channels (``tests/configs``' tiny BCCD
config, images resized to 213x160), the data BCCD ``trainval`` through the config's training
pipeline, batch 2, SGD. The loader's workers persist over epochs (``persistent_workers``,
so that their memory is followed for the whole run, not reset each epoch). Every
``--every`` iterations it prints the summed RSS, PSS and anonymous PSS
(``/proc/PID/smaps_rollup``) of the main process and its workers; at the end, the growth
from the first sample after warm-up (iteration ``--every``) to the last, and exits 1 when
the anonymous PSS grew by more than ``--max-growth`` (a fraction; 10% by default). Anonymous
PSS is the judge because the PSS of shared libraries also moves with unrelated processes
that map them. Not run by CI (minutes on a few cores).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from bench_scale import total_memory  # noqa: E402 -- benchmarks/ is not a package


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--iters', type=int, default=2000)
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--every', type=int, default=100, help='sample memory every N iterations')
    parser.add_argument('--threads', type=int, default=1, help='torch threads of the main process')
    parser.add_argument('--max-growth', type=float, default=0.10)
    parser.add_argument('--no-serialize', action='store_true',
                        help='keep the records as Python dicts (serialize_data=False)')
    parser.add_argument('--json', help='write the samples to this file')
    args = parser.parse_args(argv)

    import os
    import torch
    from detforge.compat import load_config
    from detforge.data import build_dataloader, build_dataset
    from detforge.models.builder import build_detector
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    cfg = load_config(str(REPO / 'tests' / 'configs' / 'retinanet_r18_tiny_bccd.py'))
    train = cfg.data.train
    train.ann_file = str(REPO / train.ann_file)  # the config's paths are relative to the repository
    train.img_prefix = str(REPO / train.img_prefix)
    train.serialize_data = not args.no_serialize
    dataset = build_dataset(train)
    model_cfg = cfg.model
    model_cfg.backbone.base_channels = 8
    model_cfg.neck.in_channels = [8, 16, 32, 64]
    model_cfg.neck.out_channels = 16
    model_cfg.bbox_head.in_channels = 16
    model_cfg.bbox_head.feat_channels = 16
    model_cfg.bbox_head.stacked_convs = 1
    model = build_detector(model_cfg)
    model.init_weights()
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=1e-4)
    loader = build_dataloader(dataset, samples_per_gpu=2, workers_per_gpu=args.workers, seed=0,
                              persistent_workers=args.workers > 0)

    pid = os.getpid()
    samples = []
    it = 0
    start = time.perf_counter()
    print(f'{len(dataset)} images, {args.workers} workers, {args.iters} iterations, records '
          f'{type(dataset.data_infos).__name__}', flush=True)
    while it < args.iters:
        for batch in loader:
            outputs = model.train_step(batch, optimizer)
            optimizer.zero_grad()
            outputs['loss'].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 35)
            optimizer.step()
            it += 1
            if it % args.every == 0 or it == 1:
                mem = total_memory(pid)
                samples.append(dict(iter=it, seconds=time.perf_counter() - start,
                                    loss=outputs['loss'].item(), **mem))
                print(f'iter {it:5d}  loss {outputs["loss"].item():7.4f}  RSS '
                      f'{mem["rss_mib"]:7.1f} MiB  PSS {mem["pss_mib"]:7.1f} MiB (anonymous '
                      f'{mem["pss_anon_mib"]:.1f}; main {mem["main_pss_mib"]:.1f}; '
                      f'{mem["processes"]} processes)  {time.perf_counter() - start:6.0f} s',
                      flush=True)
            if it >= args.iters:
                break
    base = next((s for s in samples if s['iter'] >= args.every), samples[0])
    last = samples[-1]
    growth = {key: last[key] / base[key] - 1 for key in ('pss_anon_mib', 'pss_mib', 'rss_mib')}
    print(f'from iteration {base["iter"]} to {last["iter"]}: anonymous PSS '
          f'{base["pss_anon_mib"]:.1f} -> {last["pss_anon_mib"]:.1f} MiB '
          f'({100 * growth["pss_anon_mib"]:+.1f}%), PSS {base["pss_mib"]:.1f} -> '
          f'{last["pss_mib"]:.1f} MiB ({100 * growth["pss_mib"]:+.1f}%), RSS '
          f'{base["rss_mib"]:.1f} -> {last["rss_mib"]:.1f} MiB ({100 * growth["rss_mib"]:+.1f}%)',
          flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(dict(args=vars(args), samples=samples,
                                                   growth=growth), indent=2))
    return 0 if growth['pss_anon_mib'] <= args.max_growth else 1


if __name__ == '__main__':
    raise SystemExit(main())
