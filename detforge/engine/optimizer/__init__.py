from .builder import (TORCH_OPTIMIZERS, DefaultOptimizerConstructor, build_optimizer,
                      build_optimizer_constructor)

__all__ = ['DefaultOptimizerConstructor', 'build_optimizer', 'build_optimizer_constructor',
           'TORCH_OPTIMIZERS']
