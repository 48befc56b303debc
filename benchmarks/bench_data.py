"""Images per second of the standard training data path: detforge vs torchvision.transforms.v2.

Both sides load the same 200 raccoon images with their VOC boxes, in a shuffled order, in
batches of ``--batch`` (2), through a ``torch.utils.data.DataLoader`` with 0 and 2 workers:

detforge (``XMLDataset`` + ``build_dataloader(seed=0)``, the MMDetection 2.x train pipeline):
    ``LoadImageFromFile`` (file read, ``cv2.imdecode`` to BGR uint8 HWC, EXIF check),
    ``LoadAnnotations``, ``Resize(img_scale=(1333, 800), keep_ratio=True)`` (``cv2.resize``,
    bilinear ``INTER_LINEAR``, boxes scaled), ``RandomFlip(0.5)`` (``cv2.flip``, boxes
    flipped), ``Normalize`` and ``Pad(size_divisor=32)`` (record only; uint8 pixels stay
    untouched until the model), ``DefaultFormatBundle`` (uint8 CHW tensor), ``Collect``
    (metas), then ``collate``: zero-pad to the batch max rounded up to 32, stack.
torchvision: ``read_file`` + ``decode_image(mode=RGB)`` (uint8 CHW),
    ``v2.Resize(800, max_size=1333, antialias=False)`` (bilinear like ``cv2.INTER_LINEAR``,
    the same keep-ratio rule, sizes rounded down where ours round to nearest;
    ``--tv-antialias`` for torchvision's default ``antialias=True``) and
    ``v2.RandomHorizontalFlip(0.5)`` on a ``tv_tensors.Image`` with
    ``tv_tensors.BoundingBoxes``, then ``pad_collate`` (zero-pad to a multiple of 32 and
    stack, as Detectron2's ``ImageList``; the targets stay a list).

Neither side normalises to float (that is the model's job on its device). detforge's order
comes from its aspect-ratio group sampler, torchvision's from ``shuffle=True``. Each loader
first runs one warm-up epoch; then the rounds alternate (detforge first in even rounds,
torchvision first in odd ones) and the median epoch rate of each side is reported, with the
ratio detforge / torchvision of the medians and the median of the per-round ratios (steadier
on a shared machine, since both runs of a round see the same load). Torch and OpenCV run one
intra-op thread in the main process by default (as in the loader's workers); ``--threads 0``
keeps the libraries' own defaults.

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
from torch.utils.data import DataLoader, Dataset, get_worker_info

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

    def __init__(self, records, antialias: bool = False):
        from torchvision.transforms import v2
        self.records = records  # (path, boxes float32 (n, 4), labels int64 (n,))
        self.transform = v2.Compose([
            v2.Resize(size=800, max_size=1333, antialias=antialias),
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
    """Zero-pad the images to the batch max rounded up to ``divisor`` and stack them, as
    Detectron2's ``ImageList.from_tensors`` does (one zero-filled batch, one copy per image);
    in a worker the batch is allocated in shared memory, as torch's ``default_collate`` does."""
    imgs = [img for img, _ in batch]
    h = -(-max(i.shape[1] for i in imgs) // divisor) * divisor
    w = -(-max(i.shape[2] for i in imgs) // divisor) * divisor
    shape = (len(imgs), imgs[0].shape[0], h, w)
    if get_worker_info() is not None:
        storage = imgs[0]._typed_storage()._new_shared(len(imgs) * imgs[0].shape[0] * h * w,
                                                       device='cpu')
        out = imgs[0].new(storage).view(shape).zero_()
    else:
        out = imgs[0].new_zeros(shape)
    for img, slot in zip(imgs, out):
        slot[:, :img.shape[1], :img.shape[2]].copy_(img)
    return out, [target for _, target in batch]


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
    parser.add_argument('--threads', type=int, default=1,
                        help='intra-op threads of torch and OpenCV in the main process '
                             '(default 1, as in the workers; 0: the libraries\' defaults)')
    parser.add_argument('--tv-antialias', action='store_true',
                        help="torchvision's default Resize(antialias=True) instead of plain "
                             'bilinear (cv2.INTER_LINEAR has no antialiasing)')
    args = parser.parse_args(argv)

    import cv2
    import torchvision
    if args.threads:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    ours = ours_dataset(args.root)
    records = [(os.path.join(ours.img_prefix, info['filename']), info['ann']['bboxes'],
                info['ann']['labels']) for info in ours.data_infos]
    theirs = TorchvisionDataset(records, antialias=args.tv_antialias)
    print(f'{len(ours)} raccoon images, batch {args.batch}, {args.rounds} rounds, '
          f'torch {torch.__version__} ({torch.get_num_threads()} threads), torchvision '
          f'{torchvision.__version__}, OpenCV {cv2.__version__} ({cv2.getNumThreads()} threads), '
          f'{os.cpu_count()} CPUs, torchvision antialias={args.tv_antialias}')
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
        # the two runs of one round share the machine's load: their ratio is steadier
        paired = statistics.median(x / y for x, y in zip(rates['detforge'], rates['torchvision']))
        print(f'workers={workers}: detforge {a:7.1f} img/s   torchvision.v2 {b:7.1f} img/s   '
              f'ratio {a / b:.2f} (median of per-round ratios {paired:.2f})   (rounds: detforge '
              f'{[round(x, 1) for x in rates["detforge"]]}, torchvision '
              f'{[round(x, 1) for x in rates["torchvision"]]})')
        del ours_loader, their_loader


if __name__ == '__main__':
    main()
