"""Plot training curves from JSON logs.

    detforge plot-curves WORK_DIR/*.log.json --keys loss_cls loss_bbox bbox_mAP --out curves.png

Each key is drawn against the iteration (training keys) or the epoch (validation keys such
as ``bbox_mAP``), one line per log file.
"""
from __future__ import annotations

import os

from detforge.registry import DetforgeError

NAME = 'plot-curves'
HELP = 'plot losses and metrics of *.log.json training logs to a PNG'


def add_arguments(parser):
    parser.add_argument('json_logs', nargs='+', help='WORK_DIR/<timestamp>.log.json files')
    parser.add_argument('--keys', nargs='+', default=['loss'],
                        help='log keys to plot (default: loss)')
    parser.add_argument('--out', default='curves.png', help='output image (default curves.png)')
    parser.add_argument('--title', default=None, help='figure title')


def main(args):
    for path in args.json_logs:
        if not os.path.isfile(path):
            raise DetforgeError(f'log file not found: {path}')
    from detforge.visualization.curves import plot_curves
    plot_curves(args.json_logs, args.keys, args.out, title=args.title)
    if not os.path.isfile(args.out):
        raise DetforgeError(f'plot_curves did not write {args.out}')
    print(f'wrote {args.out}')
    return 0
