from .base import LoggerHook
from .mlflow_logger import MlflowLoggerHook
from .tensorboard import TensorboardLoggerHook
from .text import TextLoggerHook, max_memory_mb
from .wandb_logger import WandbLoggerHook

__all__ = ['LoggerHook', 'TextLoggerHook', 'TensorboardLoggerHook', 'MlflowLoggerHook',
           'WandbLoggerHook', 'max_memory_mb']
