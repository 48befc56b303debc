"""Convert any data set detforge reads (COCO, Roboflow COCO, VOC, YOLO, LabelMe) to YOLO.

    detforge convert to-yolo SRC OUT [--images {copy, link}]

Writes OUT/data.yaml, OUT/images/SPLIT/, OUT/labels/SPLIT/*.txt. SRC is recognised as
``detforge check-data`` and ``detforge train --data`` recognise it
(:func:`detforge.data.formats.detect_format`); every split it has is written.
Boxes are the boxes detforge trains on (invalid ones dropped and counted); see
:mod:`detforge.data.format_writers` for the details of the format.
"""
from __future__ import annotations

NAME = 'to-yolo'
HELP = 'any data set folder (COCO/Roboflow/VOC/YOLO/LabelMe) -> YOLO layout'


def add_arguments(parser):
    parser.add_argument('src', help='data set folder, data.yaml or COCO/LabelMe .json file')
    parser.add_argument('out', help='output folder')
    parser.add_argument('--images', choices=('copy', 'link'), default='copy',
                        help='copy the images, symlink them, or keep them where they are and '
                             'point at them (default: copy)')


def main(args):
    from detforge.data.format_writers import read_splits, write_yolo
    found, datasets = read_splits(args.src)
    write_yolo(datasets, found.classes, args.out, images=args.images)
    sizes = ', '.join(f'{split} {len(ds)} images' for split, ds in datasets.items())
    print(f'{found.format} data set {found.root} ({sizes}; classes {list(found.classes)}) '
          f'-> YOLO in {args.out}')
    return 0
