"""The training engine: runners and their training step, hooks, optimizers, lr schedules,
checkpoints, dist utils.

Where things live (one name, one place):

- ``runner/base_runner.py``: ``BaseRunner.run_step``, one training iteration top to bottom,
  and ``configure_step`` (``optimizer_config`` / ``fp16`` / ``amp`` translated);
  ``runner/epoch_based_runner.py``, ``runner/iter_based_runner.py``: the loops.
- ``optimizer/optimizer_step.py``: ``OptimizerStep`` (autocast, scaler, accumulation, clipping);
  ``optimizer/builder.py``: ``build_optimizer`` and param-wise settings.
- ``hooks/``: the side concerns around the step (lr, momentum, logging, checkpoints,
  evaluation, EMA) and MMDetection 2.x's optimizer hook names.
- ``checkpoint.py``: saving and loading; ``dist_utils.py``: process groups and DDP.

Importing this package registers every runner, hook and optimizer in the registries.
"""
from .checkpoint import (find_latest_checkpoint, get_rng_state, load_checkpoint,
                         load_state_dict, preserve_rng, save_checkpoint, set_rng_state)
from .dist_utils import (all_reduce_dict, barrier, get_dist_info, init_dist, is_main_process,
                         master_only, reduce_mean, unwrap_model, wrap_distributed)
from .hooks import (AmpOptimizerHook, CheckpointHook, EarlyStoppingHook, CosineAnnealingLrUpdaterHook,
                    CosineAnnealingMomentumUpdaterHook, CosineRestartLrUpdaterHook,
                    DistEvalHook, DistSamplerSeedHook, EMAHook, EvalHook, ExpLrUpdaterHook,
                    ExpMomentumEMAHook, FixedLrUpdaterHook, FlatCosineAnnealingLrUpdaterHook,
                    Fp16OptimizerHook, GradientCumulativeFp16OptimizerHook,
                    GradientCumulativeOptimizerHook, Hook, InvLrUpdaterHook, IterTimerHook,
                    LoggerHook, LrUpdaterHook, MomentumUpdaterHook, NumClassCheckHook,
                    OneCycleLrUpdaterHook, OptimizerHook, PlotCurvesHook, PolyLrUpdaterHook,
                    ProgressBarHook,
                    StepLrUpdaterHook, StepMomentumUpdaterHook, TensorboardLoggerHook,
                    TextLoggerHook, WarmupCosineLrUpdaterHook, WarmupMultiStepLrUpdaterHook,
                    annealing_cos, build_lr_hook, build_momentum_hook, check_num_classes,
                    max_memory_mb)
from .optimizer import DefaultOptimizerConstructor, OptimizerStep, build_optimizer
from .runner import (BaseRunner, EpochBasedRunner, IterBasedRunner, IterLoader, LogBuffer,
                     Priority, Runner, build_runner, get_priority)

__all__ = [
    # checkpoints
    'find_latest_checkpoint', 'get_rng_state', 'load_checkpoint', 'load_state_dict',
    'preserve_rng', 'save_checkpoint', 'set_rng_state',
    # processes
    'all_reduce_dict', 'barrier', 'get_dist_info', 'init_dist', 'is_main_process',
    'master_only', 'reduce_mean', 'unwrap_model', 'wrap_distributed',
    # optimizer and the step's settings
    'DefaultOptimizerConstructor', 'build_optimizer', 'OptimizerStep',
    # runners
    'BaseRunner', 'EpochBasedRunner', 'IterBasedRunner', 'IterLoader', 'LogBuffer', 'Priority',
    'Runner', 'build_runner', 'get_priority',
    # hooks
    'Hook', 'CheckpointHook', 'EMAHook', 'ExpMomentumEMAHook', 'EvalHook', 'DistEvalHook',
    'IterTimerHook', 'LoggerHook', 'TextLoggerHook', 'TensorboardLoggerHook', 'max_memory_mb',
    'LrUpdaterHook', 'FixedLrUpdaterHook', 'StepLrUpdaterHook', 'ExpLrUpdaterHook',
    'PolyLrUpdaterHook', 'InvLrUpdaterHook', 'CosineAnnealingLrUpdaterHook',
    'FlatCosineAnnealingLrUpdaterHook', 'CosineRestartLrUpdaterHook', 'OneCycleLrUpdaterHook',
    'WarmupMultiStepLrUpdaterHook', 'WarmupCosineLrUpdaterHook', 'annealing_cos',
    'build_lr_hook', 'MomentumUpdaterHook', 'StepMomentumUpdaterHook',
    'CosineAnnealingMomentumUpdaterHook', 'build_momentum_hook', 'NumClassCheckHook',
    'check_num_classes', 'OptimizerHook', 'AmpOptimizerHook', 'Fp16OptimizerHook',
    'GradientCumulativeOptimizerHook', 'GradientCumulativeFp16OptimizerHook',
    'PlotCurvesHook', 'ProgressBarHook', 'EarlyStoppingHook', 'DistSamplerSeedHook',
]
