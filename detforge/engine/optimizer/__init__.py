"""Building the optimizer from ``optimizer=dict(...)``, and the step settings of
``optimizer_config`` / ``fp16`` / ``amp``."""
from .builder import (TORCH_OPTIMIZERS, DefaultOptimizerConstructor, build_optimizer,
                      build_optimizer_constructor)
from .optimizer_step import AMP_DTYPES, OptimizerStep

__all__ = ['DefaultOptimizerConstructor', 'build_optimizer', 'build_optimizer_constructor',
           'TORCH_OPTIMIZERS', 'OptimizerStep', 'AMP_DTYPES']
