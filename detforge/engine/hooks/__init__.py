from .checkpoint import CheckpointHook
from .early_stopping import EarlyStoppingHook
from .ema import EMAHook, ExpMomentumEMAHook
from .eval_hooks import DistEvalHook, EvalHook
from .hook import Hook
from .iter_timer import IterTimerHook
from .logger import (LoggerHook, MlflowLoggerHook, TensorboardLoggerHook, TextLoggerHook,
                     WandbLoggerHook, max_memory_mb)
from .lr_updater import (CosineAnnealingLrUpdaterHook, CosineRestartLrUpdaterHook,
                         ExpLrUpdaterHook, FixedLrUpdaterHook, FlatCosineAnnealingLrUpdaterHook,
                         InvLrUpdaterHook, LrUpdaterHook, OneCycleLrUpdaterHook,
                         PolyLrUpdaterHook, StepLrUpdaterHook, WarmupCosineLrUpdaterHook,
                         WarmupMultiStepLrUpdaterHook, annealing_cos, build_lr_hook)
from .momentum_updater import (CosineAnnealingMomentumUpdaterHook, MomentumUpdaterHook,
                               StepMomentumUpdaterHook, build_momentum_hook)
from .num_class_check import NumClassCheckHook, check_num_classes
from .optimizer import (AmpOptimizerHook, Fp16OptimizerHook, GradientCumulativeFp16OptimizerHook,
                        GradientCumulativeOptimizerHook, OptimizerHook)
from .pipeline_switch import PipelineSwitchHook
from .plot import PlotCurvesHook
from .progress_bar import ProgressBarHook
from .sampler_seed import DistSamplerSeedHook

__all__ = [
    'Hook', 'CheckpointHook', 'EarlyStoppingHook', 'EMAHook', 'ExpMomentumEMAHook', 'EvalHook', 'DistEvalHook',
    'IterTimerHook', 'LoggerHook', 'TextLoggerHook', 'TensorboardLoggerHook', 'MlflowLoggerHook',
    'WandbLoggerHook', 'max_memory_mb',
    'LrUpdaterHook', 'FixedLrUpdaterHook', 'StepLrUpdaterHook', 'ExpLrUpdaterHook',
    'PolyLrUpdaterHook', 'InvLrUpdaterHook', 'CosineAnnealingLrUpdaterHook',
    'FlatCosineAnnealingLrUpdaterHook', 'CosineRestartLrUpdaterHook', 'OneCycleLrUpdaterHook',
    'WarmupMultiStepLrUpdaterHook', 'WarmupCosineLrUpdaterHook', 'annealing_cos',
    'build_lr_hook', 'MomentumUpdaterHook', 'StepMomentumUpdaterHook',
    'CosineAnnealingMomentumUpdaterHook', 'build_momentum_hook', 'NumClassCheckHook',
    'check_num_classes', 'OptimizerHook', 'AmpOptimizerHook', 'Fp16OptimizerHook',
    'GradientCumulativeOptimizerHook', 'GradientCumulativeFp16OptimizerHook',
    'PlotCurvesHook', 'ProgressBarHook', 'DistSamplerSeedHook', 'PipelineSwitchHook',
]
