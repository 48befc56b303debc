"""Train a detector from a config, or from a folder of labelled images and a model name.

    detforge train configs/retinanet/retinanet_r18_fpn_1x_bccd.py --work-dir work_dirs/bccd_demo
    detforge train --data ../shared/data/raccoon --model retinanet_r18 [--epochs N] [--img-size S]

With ``--data`` the format (COCO, Roboflow COCO, Pascal VOC, YOLO, LabelMe) and the classes
are detected, a complete config is written into the work dir (``MODEL_DATANAME.py``: edit it
and train again with ``detforge train THAT_FILE``) and trained; ``detforge list-models`` lists
the model names.

The work dir receives the resolved config, the text log (``{timestamp}.log``), the JSON-lines
log (``{timestamp}.log.json``), the checkpoints (``epoch_N.pth``, ``latest.pth``, ``best_*``)
and a plot of the loss, lr and mAP curves (``{timestamp}_curves.png``). Distributed:

    torchrun --nproc_per_node 2 -m detforge train CONFIG --launcher pytorch
"""
from __future__ import annotations

import copy
import os
import os.path as osp
import time
import warnings

from detforge.registry import DetforgeError, build_context

NAME = 'train'
HELP = 'train a detector from a config (checkpoints, logs and plots go to --work-dir)'


def add_arguments(parser) -> None:
    from detforge.config import DictAction
    parser.add_argument('config', nargs='?', help='train config file (or use --data and --model)')
    parser.add_argument('--data', metavar='PATH',
                        help='a folder of labelled images (COCO / Roboflow COCO / VOC / YOLO / '
                             'LabelMe), a YOLO data.yaml or a COCO JSON: write a config for it '
                             'into the work dir and train it')
    parser.add_argument('--model', metavar='NAME', default=None,
                        help='with --data: a model name of `detforge list-models` (default '
                             'retinanet_r18)')
    parser.add_argument('--epochs', type=int, default=None,
                        help="with --data: epochs to train (default: the model's; lr steps "
                             'scale with it)')
    parser.add_argument('--img-size', type=int, default=None, metavar='S',
                        help="with --data: the test image's short side in pixels (default: the "
                             "model's, 320 for the BCCD-320 models); training sizes scale with it")
    parser.add_argument('--batch-size', type=int, default=None,
                        help="with --data: images per iteration (default: the model's)")
    parser.add_argument('--work-dir', help='where to save logs and checkpoints (default: '
                        'work_dirs/CONFIG_NAME)')
    parser.add_argument('--resume-from', help='checkpoint to resume from (exactly: weights, '
                        'optimizer, schedule, sampler position and RNG states)')
    parser.add_argument('--auto-resume', action='store_true',
                        help='resume from the latest complete checkpoint in the work dir')
    parser.add_argument('--no-validate', action='store_true',
                        help='do not evaluate checkpoints during training')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='override config settings, e.g. runner.max_epochs=2')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by (GPUs x samples per GPU) / '
                             'auto_scale_lr.base_batch_size')
    parser.add_argument('--seed', type=int, default=None, help='random seed')
    parser.add_argument('--diff-seed', action='store_true',
                        help='a different seed on each rank')
    parser.add_argument('--deterministic', action='store_true',
                        help='deterministic algorithms (bitwise reproducible on the CPU)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none',
                        help='job launcher for distributed training')
    parser.add_argument('--device', choices=['cpu', 'cuda'], default=None,
                        help='device (default: cuda when available)')
    parser.add_argument('--no-progress', action='store_true',
                        help='no progress bar (it is drawn only when stderr is a terminal '
                             'anyway; TQDM_DISABLE=1 turns off every bar)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help=argparse_suppress())


def argparse_suppress():
    import argparse
    return argparse.SUPPRESS


def load_config(path: str, cfg_options: dict | None):
    """See :func:`detforge.compat.load_config` (every entry point loads configs with it)."""
    from detforge.compat import load_config as load
    return load(path, cfg_options)


def check_gpu_request(cfg, world_size: int) -> None:
    """A ``gpus=N`` config key (or --cfg-options gpus=N) is not how detforge picks devices:
    one process runs per GPU (``--launcher pytorch`` under torchrun) and ``--device`` picks
    CPU or CUDA. ``gpus`` that the launch does not fulfil is an error, not ignored.
    (``gpu_ids`` is overwritten from the launch, as MMDetection 2.x's tools do, because
    dumped configs carry the one of their training run.)"""
    value = cfg.get('gpus', None)
    if value is None:
        return
    wanted = value if isinstance(value, int) else len(list(value))
    if wanted != world_size:
        raise DetforgeError(
            f'{cfg.filename}: gpus={value!r} asks for {wanted} GPU(s) but this run has '
            f'{world_size} process(es); detforge runs one process per GPU: launch with '
            f'`torchrun --nproc_per_node {wanted} -m detforge ... --launcher pytorch` and '
            'remove gpus from the config')


def setup_multi_processes(cfg) -> None:
    """OpenCV threads and the multiprocessing start method, as MMDetection sets them."""
    import platform
    if platform.system() != 'Windows':
        import torch.multiprocessing as mp
        method = cfg.get('mp_start_method', 'fork')
        current = mp.get_start_method(allow_none=True)
        if current is not None and current != method:
            warnings.warn(f'multiprocessing start method is {current}; the config asks for '
                          f'{method} (kept as is)')
        elif current is None:
            mp.set_start_method(method, force=True)
    try:
        import cv2
        cv2.setNumThreads(cfg.get('opencv_num_threads', 0))
    except ImportError:
        pass
    workers = cfg.get('data', {}).get('workers_per_gpu', 1) if cfg.get('data') else 1
    if 'OMP_NUM_THREADS' not in os.environ and workers > 1:
        os.environ['OMP_NUM_THREADS'] = '1'


def init_launcher(launcher: str, cfg) -> bool:
    """Start the process group for ``launcher``; return whether training is distributed."""
    if launcher == 'none':
        return False
    import torch
    from detforge.engine.dist_utils import init_dist
    params = dict(cfg.get('dist_params', None) or {})
    backend = params.pop('backend', None)
    if backend == 'nccl' and not torch.cuda.is_available():
        warnings.warn('dist_params.backend is nccl but no CUDA GPU is available; using gloo')
        backend = 'gloo'
    timeout = params.pop('timeout', 1800)
    init_dist(launcher, backend=backend, timeout_s=timeout, **params)
    return True


def check_training_data(datasets, cfg, logger) -> None:
    """The cheap part of ``detforge check-data`` (annotations only, no image opened) on the
    datasets just built, before the first iteration: warnings are logged; errors (e.g. boxes
    of a category id with no name, a class only in val) stop the run with one message.
    ``check_data = False`` in the config skips it."""
    from detforge.data.data_check import check_before_training
    check_before_training(datasets, cfg, logger)


def write_config_for_data(args) -> str:
    """``--data PATH --model NAME``: write the complete config into the work dir (with
    ``--cfg-options`` applied, so that re-running the file trains the same) and return its
    path."""
    import re
    from detforge.apis.config_from_data import config_from_data, render_config
    from detforge.config import Config
    if args.config is not None:
        raise DetforgeError(f'give either a config file ({args.config}) or --data, not both')
    model = args.model or 'retinanet_r18'
    data_name = re.sub(r'[^A-Za-z0-9_.-]+', '_', osp.basename(osp.normpath(
        osp.abspath(args.data)))) or 'data'
    data_name = osp.splitext(data_name)[0] if data_name.endswith(('.yaml', '.yml', '.json')) \
        else data_name
    work_dir = args.work_dir or osp.join('work_dirs', f'{model}_{data_name}')
    cfg, notes = config_from_data(args.data, model, epochs=args.epochs, img_size=args.img_size,
                                  batch_size=args.batch_size, work_dir=work_dir)
    if args.cfg_options:
        merged = Config(cfg)
        merged.merge_from_dict(args.cfg_options)
        cfg = merged._cfg_dict.to_dict()
    argv = ['train', '--data', args.data, '--model', model]
    for flag, value in (('--epochs', args.epochs), ('--img-size', args.img_size),
                        ('--batch-size', args.batch_size), ('--work-dir', args.work_dir)):
        if value is not None:
            argv += [flag, str(value)]
    if args.cfg_options:
        argv += ['--cfg-options'] + [f'{k}={v}' for k, v in args.cfg_options.items()]
    text = render_config(cfg, model, argv=argv, notes=notes)
    from detforge.engine.runner.base_runner import _ensure_writable
    _ensure_writable(osp.abspath(work_dir))
    path = osp.join(osp.abspath(work_dir), f'{model}_{data_name}.py')
    if osp.isfile(path):
        with open(path, encoding='utf-8') as f:
            if f.read() != text:  # edited since, or written by another command: keep it
                raise DetforgeError(
                    f'{path} exists and differs from the config this command writes (edited?); '
                    f'train it with `detforge train {path}`, or give another --work-dir')
    part = f'{path}.{os.getpid()}.part'  # each process of a distributed launch its own
    with open(part, 'w', encoding='utf-8') as f:
        f.write(text)
    os.replace(part, path)
    print(f'detforge train: wrote {path}\n  ' + '\n  '.join(notes) +
          f'\n  edit it and train again with: detforge train {path}', flush=True)
    return path


def main(args) -> int:
    import torch
    from detforge.apis.train import init_random_seed, set_random_seed, train_detector
    from detforge.engine.dist_utils import get_dist_info
    from detforge.engine.runner.base_runner import _ensure_writable
    from detforge.utils.setup_env import setup_speed_switches

    if args.data is not None:
        args.config = write_config_for_data(args)
        args.cfg_options = None  # written into the file
    elif args.config is None:
        raise DetforgeError('give a config file (detforge train CONFIG) or a data folder and a '
                            'model (detforge train --data PATH --model retinanet_r18)')
    elif args.model is not None or args.epochs is not None or args.img_size is not None or \
            args.batch_size is not None:
        raise DetforgeError('--model, --epochs, --img-size and --batch-size go with --data; '
                            'with a config file, edit it or use --cfg-options')
    cfg = load_config(args.config, args.cfg_options)
    if args.auto_scale_lr:
        if cfg.get('auto_scale_lr', None) is not None:
            cfg.auto_scale_lr['enable'] = True
        else:
            raise DetforgeError('--auto-scale-lr needs auto_scale_lr = dict(base_batch_size=16) '
                                f'in {args.config} (default_runtime.py has it)')
    setup_multi_processes(cfg)
    setup_speed_switches(cfg)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.resume_from is not None:
        cfg.resume_from = args.resume_from
    cfg.auto_resume = args.auto_resume
    if args.device is not None:
        cfg.device = args.device
    if args.no_progress:
        cfg.progress_bar = False
    if cfg.get('device', None) == 'cuda' and not torch.cuda.is_available():
        raise DetforgeError('--device cuda: no CUDA GPU is available here; use --device cpu')
    if cfg.get('optimizer', None) is None:
        raise DetforgeError(f"{args.config} has no 'optimizer'; add e.g. optimizer = dict("
                            f"type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001) or "
                            f"inherit '../_base_/schedules/schedule_1x.py'")

    distributed = init_launcher(args.launcher, cfg)
    rank, world_size = get_dist_info()
    check_gpu_request(cfg, world_size)
    cfg.gpu_ids = list(range(world_size)) if distributed else [0]

    work_dir = osp.abspath(cfg.work_dir)
    _ensure_writable(work_dir)
    dumped = osp.join(work_dir, osp.basename(args.config))
    if rank == 0 and osp.abspath(dumped) != osp.abspath(args.config):
        cfg.dump(dumped)  # (never over the config being trained: it keeps its comments)
    timestamp = time.strftime('%Y%m%d_%H%M%S', time.localtime())
    from detforge.utils.logging import get_root_logger
    logger = get_root_logger(log_file=osp.join(work_dir, f'{timestamp}.log'),
                             log_level=cfg.get('log_level', 'INFO'))
    meta = {}
    env = f'detforge {__import__("detforge").__version__}, torch {torch.__version__}, ' \
          f'CUDA available: {torch.cuda.is_available()}'
    meta['env_info_short'] = env
    logger.info('Environment: %s', env)
    logger.info('Distributed training: %s', distributed)
    logger.info('Config:\n%s', cfg.pretty_text)

    seed = init_random_seed(args.seed if args.seed is not None else cfg.get('seed', None))
    if args.diff_seed:
        seed += rank
    logger.info('Set random seed to %d, deterministic: %s', seed, args.deterministic)
    set_random_seed(seed, deterministic=args.deterministic)
    cfg.seed = seed
    meta['seed'] = seed
    meta['exp_name'] = osp.basename(args.config)
    meta['config'] = cfg.pretty_text

    from detforge.data import build_dataset
    from detforge.models import build_detector
    with build_context('model', filename=args.config):
        model = build_detector(cfg.model, train_cfg=cfg.get('train_cfg', None),
                               test_cfg=cfg.get('test_cfg', None))
    if hasattr(model, 'init_weights'):
        model.init_weights()
    with build_context('data', 'train', filename=args.config):
        datasets = [build_dataset(cfg.data.train)]
    workflow = cfg.get('workflow', [('train', 1)])
    if len(workflow) == 2:
        val_cfg = copy.deepcopy(cfg.data.val)
        val_cfg.pipeline = cfg.data.train.pipeline
        with build_context('data', 'val', filename=args.config):
            datasets.append(build_dataset(val_cfg))
    check_training_data(datasets, cfg, logger)
    classes = getattr(datasets[0], 'CLASSES', None)
    if cfg.get('checkpoint_config', None) is not None and classes is not None:
        cfg.checkpoint_config['meta'] = dict(CLASSES=list(classes))
    model.CLASSES = classes

    start = time.time()
    from detforge.engine.dist_utils import clear_dist_failures
    with clear_dist_failures():  # a dead or hung rank: one clear line, not a gloo traceback
        train_detector(model, datasets, cfg, distributed=distributed,
                       validate=not args.no_validate, timestamp=timestamp, meta=meta)
    logger.info('training finished in %.1f s; results in %s', time.time() - start, work_dir)
    return 0
