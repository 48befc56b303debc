"""Write one self-contained HTML page about a training run.

    detforge report WORK_DIR [--checkpoint X] [--split test|val] [--results R.pkl] [--out F]

The page (default ``WORK_DIR/report.html``; images embedded, no external file, no
JavaScript) shows the training curves (loss, lr, mAP from ``WORK_DIR/*.log.json``), COCO
box AP per class, precision-recall curves, the confusion matrix, the best and worst images
with their detections drawn, the config and the environment.

The config is the one ``detforge train`` wrote into the work dir (``--config`` picks
another). The detections come from ``--results`` (``detforge test --out``), else from the
checkpoint (``--checkpoint``; default the newest ``best_*``, else ``latest.pth`` or the
highest ``epoch_N``/``iter_N``) run once on the config's ``data.test`` (or ``data.val``
with ``--split val``); they are kept in ``WORK_DIR/report_<checkpoint>_<split>_<hash>.pkl``
and reused while the checkpoint is older than that file (the hash: of the checkpoint's path,
the split's and the model's settings).
"""
from __future__ import annotations

import glob
import os
import os.path as osp
import pickle
import sys

from detforge.commands._analysis_common import add_cfg_options, load_config
from detforge.registry import DetforgeError, build_context

NAME = 'report'
HELP = 'write a self-contained HTML report of a work dir (curves, AP, PR, confusion, images)'


def add_arguments(parser):
    parser.add_argument('work_dir', help='the work dir of a `detforge train` run')
    parser.add_argument('--config', help='config file (default: the one in WORK_DIR)')
    parser.add_argument('--checkpoint', help='checkpoint to evaluate (default: the newest '
                        'best_*, else latest.pth / the last epoch_N or iter_N)')
    parser.add_argument('--split', choices=['test', 'val'], default='test',
                        help="which data set of the config to evaluate on (default 'test')")
    parser.add_argument('--results', help='detections from `detforge test --out` (.pkl/.json) '
                        'instead of running the checkpoint')
    parser.add_argument('--no-eval', action='store_true',
                        help='no evaluation: curves, config and environment only')
    parser.add_argument('--out', help='the HTML file (default WORK_DIR/report.html)')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='score threshold for the confusion matrix and the drawings '
                        '(default 0.3)')
    parser.add_argument('--topk', type=int, default=4,
                        help='best and worst images to show (default 4 each)')
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda:0'")
    add_cfg_options(parser)


def find_config(work_dir: str) -> str:
    """The config ``detforge train`` dumped into ``work_dir`` (the newest ``*.py``)."""
    configs = sorted(glob.glob(osp.join(work_dir, '*.py')), key=osp.getmtime)
    if not configs:
        raise DetforgeError(f'{work_dir}: no config (*.py) in the work dir; give --config')
    return configs[-1]


def find_checkpoint(work_dir: str) -> str:
    """``best_*`` (newest), else ``latest.pth`` / the highest ``epoch_N`` or ``iter_N``."""
    from detforge.engine.checkpoint import find_latest_checkpoint
    best = [p for ext in ('pth', 'safetensors')
            for p in glob.glob(osp.join(work_dir, f'best_*.{ext}'))]
    if best:
        return max(best, key=osp.getmtime)
    for suffix in ('pth', 'safetensors'):
        found = find_latest_checkpoint(work_dir, suffix)
        if found:
            return found
    raise DetforgeError(f'{work_dir}: no checkpoint (best_*.pth, latest.pth, epoch_N.pth) in '
                        'the work dir; give --checkpoint, --results or --no-eval')


def build_split_dataset(cfg, split: str):
    """``cfg.data.<split>`` in test mode (every image, dataset order)."""
    import copy
    split_cfg = (cfg.get('data') or {}).get(split)
    if split_cfg is None:
        other = 'val' if split == 'test' else 'test'
        raise DetforgeError(f'{cfg.filename}: the config has no data.{split} to evaluate on; '
                            f'use --split {other}, --config, or --no-eval')
    split_cfg = copy.deepcopy(split_cfg)
    if isinstance(split_cfg, dict):
        split_cfg['test_mode'] = True
    from detforge.data import build_dataset
    with build_context('data', split, filename=cfg.filename):
        return build_dataset(split_cfg)


def run_checkpoint(cfg, config_path, checkpoint, dataset, device, cfg_options=None) -> list:
    """Detections of ``checkpoint`` on every image of ``dataset`` (the test command's loop)."""
    from detforge.apis.inference import init_detector
    from detforge.apis.test import single_gpu_test
    from detforge.apis.train import _build_loader
    model = init_detector(config_path, checkpoint, device=device, cfg_options=cfg_options)
    loader_cfg = dict(samples_per_gpu=1, workers_per_gpu=cfg.data.get('workers_per_gpu', 2),
                      dist=False, shuffle=False)
    loader_cfg.update(dict(cfg.data.get('test_dataloader', {}) or {}))
    return single_gpu_test(model, _build_loader(dataset, loader_cfg))


def cached_results(work_dir, cfg, config_path, checkpoint, dataset, split, device,
                   cfg_options=None) -> tuple[list, str]:
    """Results of ``checkpoint`` on ``split``, from the cache file if it is newer than the
    checkpoint and has one result per image, else computed and cached. The file name holds
    a hash of the checkpoint's path, the split's and the model's settings: another data set
    (an edited ``ann_file``) or test_cfg (``--cfg-options model.test_cfg...``) is another
    file."""
    import hashlib
    import json
    from detforge.evaluation.results_io import load_results
    stem = osp.splitext(osp.basename(checkpoint))[0]
    key = json.dumps([osp.abspath(checkpoint), cfg.data.get(split), cfg.get('model')],
                     sort_keys=True, default=str)
    digest = hashlib.sha1(key.encode('utf-8')).hexdigest()[:8]
    cache = osp.join(work_dir, f'report_{stem}_{split}_{digest}.pkl')
    if osp.isfile(cache) and osp.getmtime(cache) >= osp.getmtime(checkpoint):
        try:
            results = load_results(cache)
            if len(results) == len(dataset.data_infos):
                return results, f'detections read from {cache}'
        except DetforgeError:
            pass  # a damaged cache is recomputed
    results = run_checkpoint(cfg, config_path, checkpoint, dataset, device, cfg_options)
    with open(cache, 'wb') as f:
        pickle.dump(results, f, protocol=pickle.HIGHEST_PROTOCOL)
    return results, f'detections computed with {osp.basename(checkpoint)}, kept in {cache}'


def main(args):
    from detforge.commands.collect_env import collect_env
    from detforge.visualization.report import ReportInputs, write_report
    work_dir = args.work_dir
    if not osp.isdir(work_dir):
        raise DetforgeError(f'work dir not found: {work_dir}')
    if args.topk < 1:
        raise DetforgeError(f'--topk must be at least 1, got {args.topk}')
    if not 0 <= args.score_thr <= 1:
        raise DetforgeError(f'--score-thr must be in [0, 1], got {args.score_thr}')
    config_path = args.config or find_config(work_dir)
    cfg = load_config(config_path, args.cfg_options)
    with open(config_path, encoding='utf-8') as f:
        config_text = f.read()
    inputs = ReportInputs(work_dir=work_dir, config_path=config_path, config_text=config_text,
                          split=args.split, score_thr=args.score_thr, topk=args.topk,
                          json_logs=sorted(glob.glob(osp.join(work_dir, '*.log.json'))),
                          env=dict(collect_env()))
    if not args.no_eval:
        dataset = build_split_dataset(cfg, args.split)
        if args.results:
            from detforge.commands._analysis_common import load_checked_results
            results = load_checked_results(args.results, dataset)
            inputs.notes.append(f'detections read from {args.results}')
        else:
            checkpoint = args.checkpoint or find_checkpoint(work_dir)
            if not osp.isfile(checkpoint):
                raise DetforgeError(f'checkpoint file not found: {checkpoint}')
            inputs.checkpoint = checkpoint
            results, note = cached_results(work_dir, cfg, config_path, checkpoint, dataset,
                                           args.split, args.device, args.cfg_options)
            inputs.notes.append(note)
        inputs.dataset, inputs.results = dataset, results
    out = args.out or osp.join(work_dir, 'report.html')
    write_report(inputs, out)
    size = os.path.getsize(out) / 1e6
    print(f'wrote {out} ({size:.1f} MB)', file=sys.stdout)
    return 0
