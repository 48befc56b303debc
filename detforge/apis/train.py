"""``train_detector``: from a config and a built model to a finished training run."""
from __future__ import annotations

import inspect
import logging
import os
import random
import warnings

import numpy as np
import torch

from detforge.registry import BuildError, DetforgeError, build_context
from detforge.utils.setup_env import model_to_device

__all__ = ['train_detector', 'set_random_seed', 'init_random_seed', 'auto_scale_lr',
           'resolve_runner_cfg', 'build_train_hooks_cfg']


def init_random_seed(seed: int | None = None, device: str = 'cpu') -> int:
    """``seed`` if given, else a random one drawn on rank 0 and shared with every rank
    (they must shuffle alike)."""
    if seed is not None:
        return int(seed)
    from detforge.engine.dist_utils import broadcast_object
    return int(broadcast_object(int(np.random.randint(2 ** 31))))


def set_random_seed(seed: int, deterministic: bool = False) -> None:
    """Seed Python ``random``, NumPy and torch (CPU and CUDA).

    With ``deterministic``, cuDNN picks deterministic kernels and torch warns about any op
    without a deterministic implementation (on the CPU, training is then bitwise
    reproducible, which exact resume relies on).
    """
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
        torch.use_deterministic_algorithms(True, warn_only=True)


def _get_logger(log_level='INFO') -> logging.Logger:
    try:
        from detforge.utils.logging import get_root_logger
        return get_root_logger(log_level=log_level)
    except ImportError:  # pragma: no cover - the logging module is part of the package
        return logging.getLogger('detforge')


def _world_size(distributed: bool, cfg) -> int:
    if distributed:
        from detforge.engine.dist_utils import get_dist_info
        return get_dist_info()[1]
    return len(cfg.get('gpu_ids', None) or [0])


def auto_scale_lr(cfg, distributed: bool, logger: logging.Logger | None = None) -> None:
    """The linear scaling rule: ``lr *= world_size * samples_per_gpu / base_batch_size``
    when ``auto_scale_lr.enable`` (``--auto-scale-lr``)."""
    logger = logger or logging.getLogger('detforge')
    scale_cfg = cfg.get('auto_scale_lr', None)
    if not scale_cfg or not scale_cfg.get('enable', False):
        return
    if 'base_batch_size' not in scale_cfg:
        raise BuildError('auto_scale_lr needs base_batch_size (the total batch the lr of the '
                         'config was tuned for), e.g. auto_scale_lr = dict(base_batch_size=16)')
    samples_per_gpu = _train_loader_cfg(cfg)['samples_per_gpu']
    num_gpus = _world_size(distributed, cfg)
    batch_size = num_gpus * samples_per_gpu
    base = scale_cfg['base_batch_size']
    if batch_size != base:
        scaled = cfg.optimizer['lr'] * batch_size / base
        logger.info(f'LR is set based on batch size of {base} and the current batch size is '
                    f'{batch_size} ({num_gpus} GPUs x {samples_per_gpu} samples per GPU). '
                    f'Scaling the original LR {cfg.optimizer["lr"]} to {scaled}')
        cfg.optimizer['lr'] = scaled
    else:
        logger.info(f'the batch size matches base_batch_size={base}; lr unchanged')


def _train_loader_cfg(cfg) -> dict:
    data = cfg.get('data', None) or {}
    out = dict(samples_per_gpu=data.get('samples_per_gpu', 2),
               workers_per_gpu=data.get('workers_per_gpu', 2))
    out.update({k: v for k, v in dict(data.get('train_dataloader', {}) or {}).items()})
    return out


def resolve_runner_cfg(cfg) -> dict:
    """``cfg.runner``, built from the old ``total_epochs`` when absent (with a warning)."""
    runner = cfg.get('runner', None)
    total_epochs = cfg.get('total_epochs', None)
    if runner is None:
        if total_epochs is None:
            raise BuildError("the config has neither 'runner' nor 'total_epochs'; add e.g. "
                             "runner = dict(type='EpochBasedRunner', max_epochs=12)")
        warnings.warn("config: 'total_epochs' is deprecated; use runner = dict(type="
                      "'EpochBasedRunner', max_epochs=...)", DeprecationWarning, stacklevel=2)
        runner = dict(type='EpochBasedRunner', max_epochs=total_epochs)
        cfg.runner = runner
    elif total_epochs is not None and runner.get('max_epochs') != total_epochs:
        raise BuildError(f"runner.max_epochs ({runner.get('max_epochs')}) and total_epochs "
                         f'({total_epochs}) disagree; remove total_epochs')
    if not isinstance(runner, dict) or 'type' not in runner:
        raise BuildError("runner must be a dict with a 'type', e.g. runner = dict(type="
                         "'EpochBasedRunner', max_epochs=12)")
    return dict(runner)


def build_train_hooks_cfg(cfg, distributed: bool):
    """MMDetection 2.x's ``optimizer_config``, ``fp16`` and ``amp`` as one optimizer config,
    which the runner translates into its training step (``Runner.configure_step``).

    ``fp16=dict(loss_scale=...)`` means float16 autocast with a ``GradScaler``,
    ``amp=dict(dtype='bfloat16')`` bfloat16 autocast; both keep ``grad_clip`` and gradient
    accumulation (``type='GradientCumulativeOptimizerHook'``). A user's own optimizer hook
    class (``type='MyHook'``) is kept; with ``fp16``/``amp`` it must accept the
    mixed-precision arguments, i.e. subclass ``Fp16OptimizerHook``/``AmpOptimizerHook``.

    Args:
        cfg: the training config (``optimizer_config``, ``fp16``, ``amp`` are read).
        distributed: unused (DDP averages the gradients); kept for MMDetection's signature.

    Returns:
        a ``dict(type=..., ...)`` for :meth:`BaseRunner.register_training_hooks`.
    """
    optimizer_config = cfg.get('optimizer_config', None)
    optimizer_config = dict(optimizer_config) if optimizer_config is not None else {}
    fp16_cfg = cfg.get('fp16', None)
    amp_cfg = cfg.get('amp', None)
    if fp16_cfg is not None and amp_cfg is not None:
        raise BuildError("give either 'fp16' or 'amp' in the config, not both")
    if fp16_cfg is None and amp_cfg is None:
        return optimizer_config
    mp = dict(fp16_cfg if fp16_cfg is not None else amp_cfg)
    if fp16_cfg is not None:
        mp.setdefault('dtype', 'float16')
    else:
        mp.setdefault('dtype', 'bfloat16')
        mp.setdefault('loss_scale', 'dynamic' if mp['dtype'] in ('float16', 'fp16') else None)
    hook_type = optimizer_config.get('type', 'OptimizerHook')
    if hook_type in ('OptimizerHook', 'AmpOptimizerHook', 'Fp16OptimizerHook'):
        hook_type = 'AmpOptimizerHook'
    elif hook_type in ('GradientCumulativeOptimizerHook', 'GradientCumulativeFp16OptimizerHook'):
        hook_type = 'GradientCumulativeFp16OptimizerHook'
    else:
        from detforge.engine.hooks import AmpOptimizerHook
        from detforge.registry import HOOKS
        hook_cls = HOOKS.get(hook_type)
        if hook_cls is not None and not (isinstance(hook_cls, type)
                                         and issubclass(hook_cls, AmpOptimizerHook)):
            key = 'fp16' if fp16_cfg is not None else 'amp'
            raise BuildError(f'optimizer_config.type {hook_type!r} is not a mixed-precision '
                             f'optimizer hook, so {key!r} cannot apply to it; subclass '
                             f'Fp16OptimizerHook (or remove {key!r})')
    optimizer_config.update(mp)
    optimizer_config['type'] = hook_type
    return optimizer_config


def _build_loader(dataset, loader_cfg: dict):
    from detforge.data import build_dataloader
    params = inspect.signature(build_dataloader).parameters
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    args = {k: v for k, v in loader_cfg.items() if k in params or (
        accepts_any and k not in ('runner_type', 'class_aware_sampler'))}
    return build_dataloader(dataset, **args)


def train_detector(model, dataset, cfg, distributed: bool = False, validate: bool = False,
                   timestamp: str | None = None, meta: dict | None = None):
    """Train ``model`` on ``dataset`` (or a list of data sets, one per workflow phase) as
    ``cfg`` says; return the runner.

    Builds the loaders, the optimizer and the runner, registers the hooks of
    ``lr_config``, ``optimizer_config`` (``fp16`` / ``amp``), ``checkpoint_config``,
    ``log_config``, ``momentum_config``, ``custom_hooks`` and, with ``validate``, the
    evaluation hook; then resumes (``resume_from`` / ``auto_resume``) or loads weights
    (``load_from``) and runs ``cfg.workflow``.
    """
    from detforge.engine import (EvalHook, DistEvalHook, build_optimizer, build_runner,
                                 find_latest_checkpoint, wrap_distributed)
    from detforge.engine.hooks.num_class_check import check_num_classes
    try:
        from detforge.compat import compat_cfg
        cfg = compat_cfg(cfg)
    except ImportError:
        pass
    logger = _get_logger(cfg.get('log_level', 'INFO'))
    filename = getattr(cfg, 'filename', None)
    datasets = dataset if isinstance(dataset, (list, tuple)) else [dataset]
    if cfg.get('work_dir', None) is None:
        raise BuildError('train_detector needs cfg.work_dir')

    with build_context('runner', filename=filename):
        runner_cfg = resolve_runner_cfg(cfg)
    workflow = [tuple(flow) for flow in cfg.get('workflow', [('train', 1)])]
    if len(datasets) != len(workflow):
        raise DetforgeError(f'workflow {workflow} needs {len(workflow)} data sets, got '
                            f'{len(datasets)}')

    # a class-count mismatch stops here, before any loader worker or weight is touched
    check_num_classes(model, datasets[0], where=' of the train data')

    loader_cfg = dict(num_gpus=len(cfg.get('gpu_ids', None) or [0]), dist=distributed,
                      seed=cfg.get('seed', None), persistent_workers=False)
    loader_cfg.update(_train_loader_cfg(cfg))
    data_loaders = [_build_loader(ds, loader_cfg) for ds in datasets]

    device = cfg.get('device', None) or ('cuda' if torch.cuda.is_available() else 'cpu')
    if device == 'cuda' and not torch.cuda.is_available():
        raise DetforgeError('device cuda was asked for but no CUDA GPU is available; use '
                            '--device cpu')
    model = model_to_device(model, device, cfg)
    from detforge.models.compile_parts import (compile_detector_parts,
                                                  compile_options_from_config)
    compile_options = compile_options_from_config(cfg)
    if compile_options is not None:  # the config's compile = dict(...): backbone, neck, head forward
        compile_detector_parts(model, **compile_options)
    if distributed:
        model = wrap_distributed(model, find_unused_parameters=cfg.get(
            'find_unused_parameters', False), broadcast_buffers=cfg.get(
            'broadcast_buffers', False))

    auto_scale_lr(cfg, distributed, logger)
    with build_context('optimizer', filename=filename):
        optimizer = build_optimizer(model, cfg.get('optimizer', None))

    meta = dict(meta or {})
    if getattr(datasets[0], 'CLASSES', None) is not None:
        meta.setdefault('CLASSES', list(datasets[0].CLASSES))
    meta.setdefault('seed', cfg.get('seed', None))
    if hasattr(cfg, 'pretty_text'):
        meta.setdefault('config', cfg.pretty_text)
    with build_context('runner', filename=filename):
        runner = build_runner(runner_cfg, default_args=dict(
            model=model, optimizer=optimizer, work_dir=cfg.work_dir, logger=logger, meta=meta))
    runner.timestamp = timestamp

    with build_context(filename=filename):
        runner.register_training_hooks(
            cfg.get('lr_config', None), build_train_hooks_cfg(cfg, distributed),
            cfg.get('checkpoint_config', None), cfg.get('log_config', None),
            cfg.get('momentum_config', None),
            custom_hooks_config=cfg.get('custom_hooks', None))
    from detforge.engine.hooks import NumClassCheckHook, PlotCurvesHook, ProgressBarHook
    from detforge.registry import HOOKS, build_from_cfg
    if not any(isinstance(h, NumClassCheckHook) for h in runner.hooks):
        runner.register_hook(NumClassCheckHook(), priority='NORMAL')
    if cfg.get('plot_curves', True):
        runner.register_hook(PlotCurvesHook(by_epoch=runner_cfg['type'] != 'IterBasedRunner'),
                             priority='LOWEST')
    progress = cfg.get('progress_bar', None)
    if progress is not False and not any(isinstance(h, ProgressBarHook) for h in runner.hooks):
        # a bar per epoch on a terminal; progress_bar=False or dict(enable=False) turns it off
        with build_context('progress_bar', filename=filename):
            runner.register_hook(build_from_cfg({'type': 'ProgressBarHook',
                                                 **dict(progress or {})}, HOOKS),
                                 priority='LOWEST')

    if validate:
        from detforge.data import build_dataset
        val_loader_cfg = dict(samples_per_gpu=1, workers_per_gpu=2, dist=distributed,
                              shuffle=False, persistent_workers=False)
        data = cfg.data
        val_loader_cfg['workers_per_gpu'] = data.get('workers_per_gpu', 2)
        val_loader_cfg.update(dict(data.get('val_dataloader', {}) or {}))
        with build_context('data', 'val', filename=filename):
            val_dataset = build_dataset(data.val, dict(test_mode=True))
        val_dataloader = _build_loader(val_dataset, val_loader_cfg)
        eval_cfg = dict(cfg.get('evaluation', {}) or {})
        eval_cfg['by_epoch'] = runner_cfg['type'] != 'IterBasedRunner'
        hook_cls = DistEvalHook if distributed else EvalHook
        with build_context('evaluation', filename=filename):
            try:
                eval_hook = hook_cls(val_dataloader, **eval_cfg)
            except TypeError as e:
                raise BuildError(f'evaluation: {e}', eval_cfg) from e
        runner.register_hook(eval_hook, priority='LOW')

    resume_from = cfg.get('resume_from', None)
    if resume_from is None and cfg.get('auto_resume', False):
        resume_from = find_latest_checkpoint(cfg.work_dir)
        if resume_from is not None:
            logger.info('auto-resume: continuing from %s', resume_from)
            cfg.resume_from = resume_from
        else:
            logger.warning('auto-resume: no complete checkpoint in %s; starting from scratch',
                           cfg.work_dir)
    if resume_from:
        runner.resume(resume_from)
    elif cfg.get('load_from', None):
        runner.load_checkpoint(cfg.load_from)

    runner.run(data_loaders, workflow)
    return runner
