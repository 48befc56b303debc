"""Measure inference speed on the config's test images.

    detforge benchmark CONFIG [CHECKPOINT] [--num-images 50] [--warmup 5] [--device cpu]

Runs the model on the first ``warmup + num-images`` test images one at a time; the warm-up
images are not timed. Prints images/s of the model (forward pass, including the
synchronisation of CUDA) and of the whole path (test pipeline + collate + forward).
"""
from __future__ import annotations

import time

import torch

from detforge.commands._analysis_common import add_cfg_options, build_test_dataset, load_config
from detforge.registry import DetforgeError

NAME = 'benchmark'
HELP = 'images per second of a detector on the test set (warm-up excluded)'


def add_arguments(parser):
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', nargs='?', default=None,
                        help='checkpoint (optional: random weights time the same)')
    parser.add_argument('--num-images', type=int, default=50, help='timed images (default 50)')
    parser.add_argument('--warmup', type=int, default=5, help='untimed images first (default 5)')
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda:0'")
    add_cfg_options(parser)


def _sync(device):
    if str(device).startswith('cuda'):
        torch.cuda.synchronize()


def main(args):
    from detforge.apis.inference import _collate, init_detector
    if args.num_images < 1 or args.warmup < 0:
        raise DetforgeError('--num-images must be >= 1 and --warmup >= 0')
    cfg = load_config(args.config, args.cfg_options)
    model = init_detector(cfg, args.checkpoint, device=args.device)
    dataset = build_test_dataset(cfg)
    total = args.warmup + args.num_images
    if len(dataset) == 0:
        raise DetforgeError(f'{args.config}: the test data set is empty')
    model_time = full_time = 0.0
    timed = 0
    for k in range(total):
        start = time.perf_counter()
        batch = _collate([dataset[k % len(dataset)]])
        _sync(args.device)
        forward_start = time.perf_counter()
        with torch.no_grad():
            model(return_loss=False, rescale=True, **batch)
        _sync(args.device)
        end = time.perf_counter()
        if k >= args.warmup:
            model_time += end - forward_start
            full_time += end - start
            timed += 1
            if timed % 10 == 0 or timed == args.num_images:
                print(f'[{timed}/{args.num_images}] {timed / model_time:.2f} img/s (model)')
    print(f'Overall: {timed / model_time:.2f} img/s (model forward), '
          f'{timed / full_time:.2f} img/s (pipeline + forward); '
          f'{args.warmup} warm-up images excluded, device {args.device}, '
          f'{torch.get_num_threads()} CPU threads')
    return 0
