"""The torchvision baseline of issue 20's Penn-Fudan recipe (Mask R-CNN R18-FPN from scratch).

    python benchmarks/bench_accuracy_mask_tv.py                      # the whole recipe
    python benchmarks/bench_accuracy_mask_tv.py --max-iters 3 --test-images 4 --no-record  # smoke

torchvision's ``MaskRCNN`` with its own heads, losses and defaults on a ResNet-18 FPN with
batch norm in train mode (``trainable_layers=5``, nothing pretrained), ``min_size=384,
max_size=512``, 2 classes (background + person). It is trained on exactly what
``configs/mask_rcnn/mask_rcnn_r18_fpn_12e_pennfudan.py`` trains on: ``../shared/data/pennfudan``
``train`` (120 images) read by detforge's ``CocoDataset`` with the config's loading (polygon
masks), resizing (short side 384, long <= 512) and random flip, shuffled, batch 4, 12 epochs,
SGD lr 0.01 momentum 0.9 weight decay 1e-4, linear warm-up over 100 iterations from 0.001 x,
lr x0.1 after epochs 8 and 11, gradient norm clipped at 35. Normalisation and batching are
torchvision's. The 50 test images are given at their original size; torchvision resizes them
and maps boxes and masks back (masks thresholded at 0.5). Box and mask AP are computed by
detforge's ``evaluate_coco(metric=['bbox', 'segm'])``.

Prints box and mask AP, the training wall time and seconds per iteration, and appends a row to
``benchmarks/accuracy.md`` as ``bench_accuracy.py`` does (box AP in the AP columns, mask AP in the
mask columns). ``--device cuda`` trains on a GPU (the recipe unchanged).
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
sys.path.insert(0, str(HERE))

from bench_accuracy_tv import to_tensor  # noqa: E402

DATA_ROOT = REPO.parent / 'shared' / 'data' / 'pennfudan'
CLASSES = ('person',)
EPOCHS, STEPS, BATCH = 12, (8, 11), 4
LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 1e-4
WARMUP_ITERS, WARMUP_RATIO, CLIP = 100, 0.001, 35.0


def build_model():
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    backbone = resnet_fpn_backbone(backbone_name='resnet18', weights=None,
                                   norm_layer=torch.nn.BatchNorm2d, trainable_layers=5)
    return MaskRCNN(backbone, num_classes=len(CLASSES) + 1, min_size=384, max_size=512)


def build_datasets():
    from detforge.data import build_dataset
    load = [dict(type='LoadImageFromFile', channel_order='rgb')]
    common = dict(type='CocoDataset', classes=CLASSES, img_prefix=str(DATA_ROOT / 'images') + '/')
    train = build_dataset(dict(
        common, ann_file=str(DATA_ROOT / 'annotations/train.json'),
        pipeline=load + [dict(type='LoadAnnotations', with_bbox=True, with_mask=True,
                              poly2mask=False),
                         dict(type='Resize', img_scale=(512, 384), keep_ratio=True),
                         dict(type='RandomFlip', flip_ratio=0.5)]))
    test = build_dataset(dict(common, ann_file=str(DATA_ROOT / 'annotations/test.json'),
                              pipeline=load, test_mode=True))
    return train, test


def lr_at(it: int, epoch: int) -> float:
    lr = LR * 0.1 ** sum(epoch >= s for s in STEPS)
    if it < WARMUP_ITERS:
        lr *= 1 - (1 - it / WARMUP_ITERS) * (1 - WARMUP_RATIO)
    return lr


def train(model, dataset, max_iters: int | None, seed: int, device: str = 'cpu'):
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
                            labels=torch.from_numpy(s['gt_labels']).long() + 1,
                            masks=torch.from_numpy(s['gt_masks'].to_ndarray()))
                       for s in samples]
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
def test(model, dataset, num_images: int | None, device: str = 'cpu'):
    """Box and mask AP on ``dataset`` (its first ``num_images``), seconds per image."""
    from detforge.evaluation.coco_metric import evaluate_coco
    model.eval()
    n = len(dataset) if num_images is None else min(num_images, len(dataset))
    results, start = [], time.perf_counter()
    for i in range(n):
        out = {k: v.cpu() for k, v in model([to_tensor(dataset[i]['img']).to(device)])[0].items()}
        dets = torch.cat([out['boxes'], out['scores'][:, None]], 1).numpy()
        labels = out['labels'].numpy() - 1
        masks = (out['masks'][:, 0] >= 0.5).numpy()
        results.append(([dets[labels == c] for c in range(len(CLASSES))],
                        [list(masks[labels == c]) for c in range(len(CLASSES))]))
    seconds = (time.perf_counter() - start) / n
    if n < len(dataset):  # a smoke run: evaluate on the images it saw
        dataset.data_infos, dataset.img_ids = dataset.data_infos[:n], dataset.img_ids[:n]
    return evaluate_coco(dataset, results, metric=['bbox', 'segm']), seconds


def main(argv=None) -> int:
    global EPOCHS, STEPS  # --epochs/--steps replace the recipe's schedule
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
    parser.add_argument('--epochs', type=int, default=EPOCHS,
                        help=f'schedule length (default {EPOCHS}, the config\'s)')
    parser.add_argument('--steps', type=int, nargs='+', default=list(STEPS),
                        help=f'epochs after which lr drops x0.1 (default {list(STEPS)})')
    parser.add_argument('--device', default='cpu', help='train and test on this device '
                        '(e.g. cuda); the row names the machine')
    args = parser.parse_args(argv)
    EPOCHS, STEPS = args.epochs, tuple(args.steps)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    train_set, test_set = build_datasets()
    model = build_model().to(args.device)
    wall, times, iters = train(model, train_set, args.max_iters, args.seed, args.device)
    metrics, s_per_img = test(model, test_set, args.test_images, args.device)
    box_ap, mask_ap = metrics.get('bbox_mAP', 0.0), metrics.get('segm_mAP', 0.0)
    s_iter = wall / iters
    print('\n=== accuracy (torchvision MaskRCNN R18-FPN, Penn-Fudan recipe)')
    print(f'box AP      {box_ap:.4f}  (AP50 {metrics.get("bbox_mAP_50", 0.0):.4f})')
    print(f'mask AP     {mask_ap:.4f}  (AP50 {metrics.get("segm_mAP_50", 0.0):.4f})')
    print(f'train time  {wall:.1f} s ({wall / 60:.1f} min)')
    print(f's/iter      {s_iter:.2f} ({iters} iterations; median {statistics.median(times):.2f})')
    print(f's/test img  {s_per_img:.3f}')
    if not args.no_record:
        from bench_accuracy import append_row, machine
        schedule = 'as configured' if args.max_iters is None else f'{iters} iterations'
        if (EPOCHS, STEPS) != (12, (8, 11)):
            schedule += f'; {EPOCHS} epochs, lr steps {list(STEPS)}'
        append_row(args.results, dict(
            date=datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
            config='torchvision MaskRCNN R18-FPN (bench_accuracy_mask_tv.py)', schedule=schedule,
            AP=box_ap, AP50=metrics.get('bbox_mAP_50', 0.0), train_s=wall, s_per_iter=s_iter,
            s_per_test_image=s_per_img,
            threads=machine(args.device), mask_AP=mask_ap,
            mask_AP50=metrics.get('segm_mAP_50', 0.0)))
        print(f'row appended to {args.results}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
