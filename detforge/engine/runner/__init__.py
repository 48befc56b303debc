from .base_runner import BaseRunner, set_sampler_epoch, set_sampler_start
from .epoch_based_runner import EpochBasedRunner, Runner
from .iter_based_runner import IterBasedRunner, IterLoader
from .log_buffer import LogBuffer
from .priority import Priority, get_priority

__all__ = ['BaseRunner', 'EpochBasedRunner', 'Runner', 'IterBasedRunner', 'IterLoader',
           'LogBuffer', 'Priority', 'get_priority', 'set_sampler_epoch', 'set_sampler_start',
           'build_runner']


def build_runner(cfg: dict, default_args: dict | None = None):
    """Build a runner from ``runner=dict(type=..., max_epochs=...)``."""
    from detforge.registry import RUNNERS
    return RUNNERS.build(dict(cfg), default_args=default_args)
