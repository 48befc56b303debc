"""Images per second of the standard training data path: detforge vs torchvision.transforms.v2.

Both sides do the same work on the raccoon images (VOC XML boxes): read and decode the JPEG,
resize keep-ratio to fit 1333x800 (short side 800, long side <= 1333), random horizontal flip
(p=0.5) with the boxes, pack to a uint8 (3, H, W) tensor, and collate a batch padded to a
multiple of 32. detforge: ``XMLDataset`` + the MMDetection-style pipeline + ``build_dataloader``
(OpenCV decode and resize). torchvision: ``torchvision.io.decode_image``, ``v2.Resize(800,
max_size=1333)``, ``v2.RandomHorizontalFlip`` on ``tv_tensors.BoundingBoxes``, and torch's
default collate after padding. Rounds alternate between the two; the median is reported.

    python benchmarks/bench_data.py --rounds 5 --workers 0 2
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data._utils.collate import default_collate

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from detforge.data import build_dataloader, build_dataset  # noqa: E402


def ours_dataset(root: str):
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='Resize', img_scale=(1333, 800), keep_ratio=True),
        dict(type='RandomFlip', flip_ratio=0.5),
        dict(type='Normalize', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
             to_rgb=True),
        dict(type='Pad', size_divisor=32),
        dict(type='DefaultFormatBundle'),
        dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels']),
    ]
    return build_dataset(dict(type='XMLDataset', ann_file=None, img_prefix=root,
                              img_subdir='images', ann_subdir='annotations',
                              classes=('raccoon',), pipeline=pipeline))


class TorchvisionDataset(Dataset):
    """The same records, decoded and transformed with torchvision.transforms.v2."""

    def __init__(self, records):
        from torchvision.transforms import v2
        self.records = records  # (path, boxes float32 (n, 4), labels int64 (n,))
        self.transform = v2.Compose([
            v2.Resize(size=800, max_size=1333),
            v2.RandomHorizontalFlip(p=0.5),
        ])

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        from torchvision import tv_tensors
        from torchvision.io import ImageReadMode, decode_image, read_file
        path, boxes, labels = self.records[i]
        img = decode_image(read_file(path), mode=ImageReadMode.RGB)
        target = dict(boxes=tv_tensors.BoundingBoxes(torch.from_numpy(boxes), format='XYXY',
                                                     canvas_size=img.shape[-2:]),
                      labels=torch.from_numpy(labels))
        img, target = self.transform(tv_tensors.Image(img), target)
        return img.as_subclass(torch.Tensor), target


def pad_collate(batch, divisor: int = 32):
    imgs = [b[0] for b in batch]
    h = max(i.shape[1] for i in imgs)
    w = max(i.shape[2] for i in imgs)
    h, w = -(-h // divisor) * divisor, -(-w // divisor) * divisor
    padded = [torch.nn.functional.pad(i, (0, w - i.shape[2], 0, h - i.shape[1])) for i in imgs]
    return default_collate(padded), [b[1] for b in batch]


def epoch_rate(loader) -> float:
    n = 0
    start = time.perf_counter()
    for batch in loader:
        img = batch['img'] if isinstance(batch, dict) else batch[0]
        n += img.shape[0]
    return n / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    default_root = REPO.parent / 'shared' / 'data' / 'raccoon'
    parser.add_argument('--root', default=str(default_root))
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--workers', type=int, nargs='+', default=[0, 2])
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--threads', type=int, default=None,
                        help='intra-op threads of torch and OpenCV in the main process '
                             '(default: their own defaults); 1 is fairest on a busy machine')
    args = parser.parse_args(argv)

    import cv2
    import torchvision
    if args.threads is not None:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    ours = ours_dataset(args.root)
    records = [(os.path.join(ours.img_prefix, info['filename']), info['ann']['bboxes'],
                info['ann']['labels']) for info in ours.data_infos]
    theirs = TorchvisionDataset(records)
    print(f'{len(ours)} raccoon images, batch {args.batch}, {args.rounds} rounds, '
          f'torch {torch.__version__} ({torch.get_num_threads()} threads), torchvision '
          f'{torchvision.__version__}, OpenCV {cv2.__version__} ({cv2.getNumThreads()} threads), '
          f'{os.cpu_count()} CPUs')
    for workers in args.workers:
        ours_loader = build_dataloader(ours, args.batch, workers, seed=0,
                                       persistent_workers=workers > 0)
        their_loader = DataLoader(theirs, batch_size=args.batch, shuffle=True,
                                  num_workers=workers, collate_fn=pad_collate,
                                  persistent_workers=workers > 0)
        epoch_rate(ours_loader), epoch_rate(their_loader)  # warm up (workers, caches)
        rates = {'detforge': [], 'torchvision': []}
        for r in range(args.rounds):
            pairs = [('detforge', ours_loader), ('torchvision', their_loader)]
            for name, loader in (pairs if r % 2 == 0 else pairs[::-1]):
                rates[name].append(epoch_rate(loader))
        a = statistics.median(rates['detforge'])
        b = statistics.median(rates['torchvision'])
        print(f'workers={workers}: detforge {a:7.1f} img/s   torchvision.v2 {b:7.1f} img/s   '
              f'ratio {a / b:.2f}   (rounds: detforge '
              f'{[round(x, 1) for x in rates["detforge"]]}, torchvision '
              f'{[round(x, 1) for x in rates["torchvision"]]})')
        del ours_loader, their_loader


if __name__ == '__main__':
    main()
