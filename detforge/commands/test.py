"""Evaluate a checkpoint on the test set of a config.

    detforge test CONFIG CHECKPOINT --eval bbox --out results.pkl

Shows a progress bar, prints the COCO (or VOC) metrics and writes the raw detections with
``--out`` (``.pkl``, or ``.json``: per image, per class, a list of
``[x1, y1, x2, y2, score]``; for a mask detector per image ``[that, per class lists of COCO
RLE masks]``). ``--eval bbox segm`` gives box and mask AP. ``--slice 512 --overlap 0.2``
evaluates sliced inference (overlapping tiles of each original image, merged; see
``detforge infer``; one process). Distributed: ``torchrun ... -m detforge test ... --launcher
pytorch``.
"""
from __future__ import annotations

import json
import os
import os.path as osp
import pickle
import time

from detforge.commands._analysis_common import (add_backend_arguments, add_slice_arguments,
                                                build_detect_fn, check_backend_arguments,
                                                check_precision_argument)
from detforge.registry import DetforgeError, build_context

NAME = 'test'
HELP = 'evaluate a checkpoint (COCO / VOC metrics) and save the detections'


def add_arguments(parser) -> None:
    from detforge.config import DictAction
    parser.add_argument('config', help='test config file')
    parser.add_argument('checkpoint', help='checkpoint file (.pth), or the exported model '
                        'with --backend onnxruntime|openvino (.onnx, .xml)')
    add_backend_arguments(parser)
    add_slice_arguments(parser)
    parser.add_argument('--work-dir', help='where to write the metrics as JSON')
    parser.add_argument('--out', help='write the detections to this .pkl or .json file')
    parser.add_argument('--eval', nargs='+', metavar='METRIC',
                        help='metrics, e.g. bbox (COCO) or mAP (VOC)')
    parser.add_argument('--format-only', action='store_true',
                        help='only write the results as COCO JSON (PREFIX.bbox.json; needs '
                        '--eval-options jsonfile_prefix=PREFIX), no metrics')
    parser.add_argument('--show-dir', help='draw the detections into this folder')
    parser.add_argument('--show-score-thr', type=float, default=0.3,
                        help='score threshold for drawing (default 0.3)')
    parser.add_argument('--gpu-collect', action='store_true',
                        help='gather distributed results through the process group')
    parser.add_argument('--tmpdir', help='shared folder for gathering distributed results')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='override config settings')
    parser.add_argument('--eval-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='arguments for dataset.evaluate, e.g. classwise=True')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none')
    parser.add_argument('--device', choices=['cpu', 'cuda'], default=None)
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help=__import__('argparse').SUPPRESS)


def _to_plain(obj):
    import numpy as np
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (list, tuple)):
        return [_to_plain(x) for x in obj]
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def write_results(outputs, path: str) -> None:
    ext = osp.splitext(path)[1].lower()
    if ext not in ('.pkl', '.pickle', '.json'):
        raise DetforgeError(f'--out must end in .pkl or .json, got {path}')
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    if ext == '.json':
        with open(path, 'w', encoding='utf-8') as f:
            json.dump(_to_plain(outputs), f)
    else:
        with open(path, 'wb') as f:
            pickle.dump(outputs, f, protocol=pickle.HIGHEST_PROTOCOL)


def main(args) -> int:
    import torch
    from detforge.apis.test import multi_gpu_test, single_gpu_test
    from detforge.apis.train import _build_loader
    from detforge.commands.train import (check_gpu_request, init_launcher, load_config,
                                         setup_multi_processes)
    from detforge.engine import get_dist_info, load_checkpoint, wrap_distributed
    from detforge.utils.setup_env import model_to_device, setup_speed_switches

    if args.out is None and not args.eval and not args.format_only and not args.show_dir:
        raise DetforgeError('say what to do with the results: --out FILE, --eval bbox, '
                            '--format-only or --show-dir DIR')
    if args.format_only and not (args.eval_options or {}).get('jsonfile_prefix'):
        raise DetforgeError('--format-only writes PREFIX.bbox.json: give the prefix with '
                            '--eval-options jsonfile_prefix=PATH')
    if args.out is not None:
        if osp.splitext(args.out)[1].lower() not in ('.pkl', '.pickle', '.json'):
            raise DetforgeError(f'--out must end in .pkl or .json, got {args.out}')
    cfg = load_config(args.config, args.cfg_options)
    setup_multi_processes(cfg)
    setup_speed_switches(cfg)
    if not osp.isfile(args.checkpoint) and '://' not in args.checkpoint:
        raise DetforgeError(f'checkpoint {args.checkpoint} does not exist')
    check_precision_argument(args)
    if args.backend != 'pytorch' and args.launcher != 'none':
        raise DetforgeError(f'--backend {args.backend} runs in one process; '
                            f'drop --launcher {args.launcher}')
    # the checkpoint provides every weight: no pretrained download
    cfg.model['pretrained'] = None
    if isinstance(cfg.model.get('backbone', None), dict):
        cfg.model.backbone['init_cfg'] = None
    distributed = init_launcher(args.launcher, cfg)
    rank, world_size = get_dist_info()
    check_gpu_request(cfg, world_size)

    from detforge.data import build_dataset
    from detforge.models import build_detector
    with build_context('data', 'test', filename=args.config):
        dataset = build_dataset(cfg.data.test, dict(test_mode=True))
    loader_cfg = dict(samples_per_gpu=1, workers_per_gpu=cfg.data.get('workers_per_gpu', 2),
                      dist=distributed, shuffle=False)
    loader_cfg.update(dict(cfg.data.get('test_dataloader', {}) or {}))
    data_loader = _build_loader(dataset, loader_cfg)

    if args.backend == 'pytorch':
        cfg.model['train_cfg'] = None
        with build_context('model', filename=args.config):
            model = build_detector(cfg.model, test_cfg=cfg.get('test_cfg', None))
        checkpoint = load_checkpoint(model, args.checkpoint, map_location='cpu')
        report = checkpoint['load_report']
        if report.missing or report.mismatched:
            raise DetforgeError(f'checkpoint {args.checkpoint} does not fit the model of '
                                f'{args.config}: {report}')
        meta = checkpoint.get('meta', {}) or {}
        model.CLASSES = tuple(meta['CLASSES']) if 'CLASSES' in meta else dataset.CLASSES
        device = args.device or cfg.get('device', None) or (
            'cuda' if torch.cuda.is_available() else 'cpu')
        if device == 'cuda' and not torch.cuda.is_available():
            raise DetforgeError('--device cuda: no CUDA GPU is available here; use --device cpu')
        model = model_to_device(model, device, cfg)
        if getattr(args, 'fuse', False):
            from detforge.models.fuse_conv_bn import fuse_detector
            fuse_detector(model.eval())
        if getattr(args, 'compile', False):
            from detforge.models.compile_parts import (INFERENCE_COMPILE,
                                                          compile_detector_parts)
            compile_detector_parts(model.eval(), **INFERENCE_COMPILE)
    else:
        from detforge.deployment import build_backend_model
        check_backend_arguments(args)
        model = build_backend_model(cfg, args.checkpoint, device=args.device or 'cpu',
                                    backend=args.backend, num_threads=args.threads,
                                    precision=args.precision)
        model.CLASSES = model.CLASSES or dataset.CLASSES

    start = time.time()
    if getattr(args, 'slice', None) is not None:
        from detforge.apis.sliced_inference import sliced_dataset_test
        if distributed:
            raise DetforgeError('--slice runs in one process; drop --launcher '
                                f'{args.launcher}')
        if getattr(model, 'cfg', None) is None:
            model.cfg = cfg  # the tiles go through the config's test pipeline
        model.eval()
        outputs = sliced_dataset_test(build_detect_fn(model, args), dataset,
                                      out_dir=args.show_dir, show_score_thr=args.show_score_thr)
    elif not distributed:
        outputs = single_gpu_test(model, data_loader, show=False, out_dir=args.show_dir,
                                  show_score_thr=args.show_score_thr)
    else:
        from detforge.engine.dist_utils import clear_dist_failures
        model = wrap_distributed(model)
        gpu_collect = args.gpu_collect or cfg.get('evaluation', {}).get('gpu_collect', False)
        with clear_dist_failures():  # a dead or hung rank: one clear line, not a traceback
            outputs = multi_gpu_test(model, data_loader, args.tmpdir, gpu_collect)
    if rank != 0:
        return 0
    print(f'\ntested {len(outputs)} images in {time.time() - start:.1f} s')
    if args.out:
        write_results(outputs, args.out)
        print(f'detections written to {args.out}')
    kwargs = dict(args.eval_options or {})
    if args.format_only:
        if not hasattr(dataset, 'format_results'):
            raise DetforgeError(f'--format-only: {type(dataset).__name__} has no result format '
                                '(COCO-style data sets write PREFIX.bbox.json)')
        result_files, _ = dataset.format_results(outputs, **kwargs)
        print('results written to ' + ', '.join(sorted(set(result_files.values()))))
    if args.eval:
        eval_kwargs = dict(cfg.get('evaluation', {}) or {})
        for key in ('interval', 'tmpdir', 'start', 'gpu_collect', 'save_best', 'rule',
                    'dynamic_intervals', 'by_epoch'):
            eval_kwargs.pop(key, None)
        eval_kwargs.update(dict(metric=args.eval, **kwargs))
        metric = dataset.evaluate(outputs, **eval_kwargs)
        print(dict(metric))
        if args.work_dir is not None:
            os.makedirs(args.work_dir, exist_ok=True)
            stamp = time.strftime('%Y%m%d_%H%M%S', time.localtime())
            with open(osp.join(args.work_dir, f'eval_{stamp}.json'), 'w') as f:
                json.dump(dict(config=args.config, checkpoint=args.checkpoint,
                               metric=_to_plain(dict(metric))), f, indent=1)
    return 0
