"""The training engine: runners, hooks, optimizers, lr schedules, checkpoints, dist utils.

Importing this package registers every runner, hook and optimizer in the registries.
"""
from .checkpoint import (find_latest_checkpoint, get_rng_state, load_checkpoint,
                         load_state_dict, preserve_rng, save_checkpoint, set_rng_state)
from .dist_utils import (all_reduce_dict, barrier, get_dist_info, init_dist, is_main_process,
                         master_only, reduce_mean, unwrap_model, wrap_distributed)
from .hooks import *  # noqa: F401,F403 - registers every hook
from .hooks import __all__ as _hooks_all
from .optimizer import DefaultOptimizerConstructor, build_optimizer
from .runner import (BaseRunner, EpochBasedRunner, IterBasedRunner, IterLoader, LogBuffer,
                     Priority, Runner, build_runner, get_priority)

__all__ = [
    'find_latest_checkpoint', 'get_rng_state', 'load_checkpoint', 'load_state_dict',
    'preserve_rng', 'save_checkpoint', 'set_rng_state', 'all_reduce_dict', 'barrier',
    'get_dist_info', 'init_dist', 'is_main_process', 'master_only', 'reduce_mean',
    'unwrap_model', 'wrap_distributed', 'DefaultOptimizerConstructor', 'build_optimizer',
    'BaseRunner', 'EpochBasedRunner', 'IterBasedRunner', 'IterLoader', 'LogBuffer', 'Priority',
    'Runner', 'build_runner', 'get_priority',
] + list(_hooks_all)
