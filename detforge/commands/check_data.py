"""Check a data set before training on it: ``detforge check-data PATH|CONFIG``.

    detforge check-data ../shared/data/raccoon --out-dir work_dirs/raccoon_check
    detforge check-data configs/retinanet/retinanet_r18_fpn_1x_bccd.py

PATH is a data set folder (COCO, Roboflow COCO, VOC, YOLO, LabelMe; a data.yaml or a JSON file
too); CONFIG a config file, whose data splits are checked and whose anchors are compared with
the boxes. Prints one report (errors, warnings, numbers) and writes PNG plots and the report
as JSON (``check_data.json``) into --out-dir.
Exit status 1 when there is an error, 0 on warnings only. See
:mod:`detforge.data.data_check` for every kind of finding.
"""
from __future__ import annotations

NAME = 'check-data'
HELP = 'report what in a data set would hurt training (exit 1 on errors)'


def add_arguments(parser) -> None:
    from detforge.config import DictAction
    parser.add_argument('source', metavar='PATH|CONFIG',
                        help='data set folder / data.yaml / COCO JSON, or a config file (.py)')
    parser.add_argument('--out-dir', help='write the PNG plots and check_data.json here')
    parser.add_argument('--no-images', action='store_true',
                        help='check the annotations only (do not open the images)')
    parser.add_argument('--imbalance', type=float, default=20.0,
                        help='warn when the most frequent class has more than this many times '
                             'the boxes of the least frequent (default 20)')
    parser.add_argument('--anchor-warn', type=float, default=0.05,
                        help='warn when more than this fraction of the gt boxes match no anchor '
                             'at pos_iou_thr (default 0.05)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='override config settings (with a CONFIG)')


def main(args) -> int:
    from detforge.data.data_check import check_data
    report = check_data(args.source, images=not args.no_images, cfg_options=args.cfg_options,
                        imbalance=args.imbalance, anchor_warn=args.anchor_warn)
    print(report.summary())
    if args.out_dir:
        import json
        import os.path as osp

        from detforge.visualization.data_plots import plot_data_report
        paths = plot_data_report(report, args.out_dir)
        paths.append(osp.join(args.out_dir, 'check_data.json'))
        with open(paths[-1], 'w', encoding='utf-8') as f:
            json.dump(report.to_dict(), f, indent=1)
        for path in paths:
            print(f'wrote {path}')
    return report.exit_status
