from .base import LoggerHook
from .tensorboard import TensorboardLoggerHook
from .text import TextLoggerHook, max_memory_mb

__all__ = ['LoggerHook', 'TextLoggerHook', 'TensorboardLoggerHook', 'max_memory_mb']
