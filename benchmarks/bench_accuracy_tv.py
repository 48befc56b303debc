"""The torchvision baseline of issue 10's BCCD-320 recipe, measured on this machine.

    python benchmarks/bench_accuracy_tv.py                      # the whole recipe (about an hour)
    python benchmarks/bench_accuracy_tv.py --max-iters 3 --test-images 4 --no-record  # smoke run

torchvision's ``RetinaNet`` with its own head, loss, anchors and defaults on a ResNet-18 with
batch norm in train mode (``trainable_layers=5``, nothing pretrained) and FPN P3-P7 with P6/P7
made from P5 (``LastLevelP6P7(256, 256)``), ``min_size=320, max_size=427``. It is trained on
exactly what ``configs/retinanet/retinanet_r18_fpn_12e_bccd320.py`` trains on: the bundled
BCCD ``trainval`` split read by detforge's ``CocoDataset`` with the config's loading, resizing
(short side 320, long <= 427) and random flip, shuffled, batch 4, 12 epochs (876 iterations),
SGD lr 0.01 momentum 0.9 weight decay 1e-4, linear warm-up over 100 iterations from 0.001 x,
lr x0.1 after epochs 8 and 11, gradient norm clipped at 35. Normalisation and batching are
torchvision's (its ``GeneralizedRCNNTransform``). The test images (BCCD ``test``, 72) are given
at their original size; torchvision resizes them and maps the boxes back. COCO box AP is
computed by detforge's ``evaluate_coco`` (checked equal to pycocotools by ``bench_eval.py``).

Prints AP, AP50, the training wall time and seconds per iteration, and appends a row to
``benchmarks/accuracy.md`` as ``bench_accuracy.py`` does.
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

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

DATA_ROOT = REPO / 'data' / 'bccd'
CLASSES = ('RBC', 'WBC', 'Platelets')
EPOCHS, STEPS, BATCH = 12, (8, 11), 4
LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 1e-4
WARMUP_ITERS, WARMUP_RATIO, CLIP = 100, 0.001, 35.0


def build_model():
    from torchvision.models.detection import RetinaNet
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7
    backbone = resnet_fpn_backbone(backbone_name='resnet18', weights=None,
                                   norm_layer=torch.nn.BatchNorm2d, trainable_layers=5,
                                   returned_layers=[2, 3, 4],
                                   extra_blocks=LastLevelP6P7(256, 256))
    return RetinaNet(backbone, num_classes=len(CLASSES), min_size=320, max_size=427)


def build_datasets():
    from detforge.data import build_dataset
    load = [dict(type='LoadImageFromFile', channel_order='rgb')]
    train = build_dataset(dict(
        type='CocoDataset', classes=CLASSES, ann_file=str(DATA_ROOT / 'annotations/trainval.json'),
        img_prefix=str(DATA_ROOT) + '/',
        pipeline=load + [dict(type='LoadAnnotations', with_bbox=True),
                         dict(type='Resize', img_scale=(427, 320), keep_ratio=True),
                         dict(type='RandomFlip', flip_ratio=0.5)]))
    test = build_dataset(dict(
        type='CocoDataset', classes=CLASSES, ann_file=str(DATA_ROOT / 'annotations/test.json'),
        img_prefix=str(DATA_ROOT) + '/', pipeline=load, test_mode=True))
    return train, test


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """RGB uint8 HWC -> float CHW in [0, 1], as torchvision's detection models take images."""
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255)


def lr_at(it: int, epoch: int) -> float:
    """The recipe's step schedule with linear warm-up (MMDetection's ``warmup='linear'``)."""
    lr = LR * 0.1 ** sum(epoch >= s for s in STEPS)
    if it < WARMUP_ITERS:
        lr *= 1 - (1 - it / WARMUP_ITERS) * (1 - WARMUP_RATIO)
    return lr


def train(model, dataset, max_iters: int | None, seed: int, device: str = 'cpu') -> tuple[float, list[float], int]:
    """Train the recipe (or its first ``max_iters`` iterations); returns the wall time, the
    per-iteration times and the number of iterations."""
    from torch.utils.data import DataLoader
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, drop_last=False,
                        collate_fn=list, generator=generator, num_workers=2,
                        persistent_workers=True)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    total = max_iters or EPOCHS * len(loader)
    model.train()
    it, times, start = 0, [], time.perf_counter()
    for epoch in range(EPOCHS):
        for samples in loader:
            tic = time.perf_counter()
            for group in optimizer.param_groups:
                group['lr'] = lr_at(it, epoch)
            images = [to_tensor(s['img']).to(device) for s in samples]
            targets = [dict(boxes=torch.from_numpy(s['gt_bboxes']).float(),
                            labels=torch.from_numpy(s['gt_labels']).long()) for s in samples]
            targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
            losses = model(images, targets)
            loss = sum(losses.values())
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, CLIP)
            optimizer.step()
            times.append(time.perf_counter() - tic)
            it += 1
            if it % 50 == 0 or it == total:
                print(f'epoch {epoch + 1} iter {it}/{total}  lr {optimizer.param_groups[0]["lr"]:.2e}  '
                      + '  '.join(f'{k} {v.item():.4f}' for k, v in losses.items())
                      + f'  {times[-1]:.2f} s/iter', flush=True)
            if it == total:
                return time.perf_counter() - start, times, it
    return time.perf_counter() - start, times, it


@torch.no_grad()
def test(model, dataset, num_images: int | None, device: str = 'cpu') -> tuple[dict, float]:
    """COCO box AP of ``model`` on ``dataset`` (its first ``num_images``); returns the metrics
    and seconds per image."""
    from detforge.evaluation.coco_metric import evaluate_coco
    model.eval()
    n = len(dataset) if num_images is None else min(num_images, len(dataset))
    results, start = [], time.perf_counter()
    for i in range(n):
        out = {k: v.cpu() for k, v in model([to_tensor(dataset[i]['img']).to(device)])[0].items()}
        dets = torch.cat([out['boxes'], out['scores'][:, None]], 1).numpy()
        labels = out['labels'].numpy()
        results.append([dets[labels == c] for c in range(len(CLASSES))])
    seconds = (time.perf_counter() - start) / n
    if n < len(dataset):  # a smoke run: evaluate on the images it saw
        dataset.data_infos, dataset.img_ids = dataset.data_infos[:n], dataset.img_ids[:n]
    metrics = evaluate_coco(dataset, results, metric='bbox')
    return metrics, seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--max-iters', type=int, default=None,
                        help='stop after N iterations (a smoke run; the schedule is unchanged)')
    parser.add_argument('--test-images', type=int, default=None,
                        help='evaluate on the first N test images only (a smoke run)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=int, default=None, help='torch threads (default: all)')
    parser.add_argument('--results', default=str(HERE / 'accuracy.md'),
                        help='markdown table to append the row to')
    parser.add_argument('--no-record', action='store_true', help='do not append a row')
    parser.add_argument('--device', default='cpu', help='train and test on this device '
                        '(e.g. cuda); the row names the machine')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    train_set, test_set = build_datasets()
    model = build_model().to(args.device)
    wall, times, iters = train(model, train_set, args.max_iters, args.seed, args.device)
    metrics, s_per_img = test(model, test_set, args.test_images, args.device)
    ap, ap50 = metrics.get('bbox_mAP', 0.0), metrics.get('bbox_mAP_50', 0.0)
    s_iter = wall / iters
    print('\n=== accuracy (torchvision RetinaNet, BCCD-320 recipe)')
    print(f'AP          {ap:.4f}\nAP50        {ap50:.4f}')
    print(f'train time  {wall:.1f} s ({wall / 60:.1f} min)')
    print(f's/iter      {s_iter:.2f} ({iters} iterations; median {statistics.median(times):.2f})')
    print(f's/test img  {s_per_img:.3f}')
    if not args.no_record:
        sys.path.insert(0, str(HERE))
        from bench_accuracy import append_row, machine
        schedule = 'as configured' if args.max_iters is None else f'{iters} iterations'
        append_row(args.results, dict(
            date=datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
            config='torchvision RetinaNet R18-FPN (bench_accuracy_tv.py)', schedule=schedule,
            AP=ap, AP50=ap50, train_s=wall, s_per_iter=s_iter, s_per_test_image=s_per_img,
            threads=machine(args.device)))
        print(f'row appended to {args.results}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
