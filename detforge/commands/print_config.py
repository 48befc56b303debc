"""Print a config with its _base_ files merged and the --cfg-options applied.

The output is a Python config (or YAML/JSON with --format) that loads back to the same
values, so it can be saved and used as a config of its own:

    detforge print-config configs/retinanet/retinanet_r18_fpn_1x_bccd.py \\
        --cfg-options model.bbox_head.num_classes=3 lr_config.step="[8,11]"
"""
from __future__ import annotations

import sys

from detforge.config import Config, DictAction

NAME = 'print-config'
HELP = 'print a config with its _base_ files and --cfg-options resolved'


def add_arguments(parser) -> None:
    parser.add_argument('config', help='config file (.py, .yaml, .yml or .json)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
        help='override settings, e.g. model.bbox_head.num_classes=3 lr_config.step="[8,11]" '
             'data.train.pipeline.2.img_scale="(640,480)"')
    parser.add_argument('--format', choices=('py', 'yaml', 'json'), default='py',
                        help='output format (default: py)')
    parser.add_argument('--upgrade', action='store_true',
                        help='rewrite 1.x-era keys to their current form first, as train and '
                             'test do (a warning for each old key goes to stderr)')


def main(args) -> int:
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.upgrade:
        from detforge.compat import compat_cfg
        cfg = compat_cfg(cfg)
    sys.stdout.write(cfg.dumps(args.format))
    return 0
