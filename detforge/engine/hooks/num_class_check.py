"""Stop before training when the dataset's classes and the heads' ``num_classes`` differ."""
from __future__ import annotations

from torch import nn

from detforge.registry import HOOKS, DetforgeError

from ..dist_utils import unwrap_model
from .hook import Hook

__all__ = ['NumClassCheckHook', 'check_num_classes']

# heads whose num_classes is not the dataset's (RPN: object vs background)
_SKIP = ('RPNHead', 'GARPNHead', 'VGG', 'FusedSemanticHead')


def check_num_classes(model: nn.Module, dataset, where: str = '') -> None:
    """Raise :class:`DetforgeError` naming both numbers if a head of ``model`` predicts
    another number of classes than ``dataset.CLASSES`` holds."""
    classes = getattr(dataset, 'CLASSES', None)
    if classes is None:
        return
    if isinstance(classes, str):
        raise DetforgeError(f'dataset CLASSES is the string {classes!r}; it must be a tuple of '
                            f'class names, e.g. classes=({classes!r},)')
    for name, module in unwrap_model(model).named_modules():
        num = getattr(module, 'num_classes', None)
        if not isinstance(num, int) or type(module).__name__ in _SKIP:
            continue
        if num != len(classes):
            shown = ', '.join(map(str, classes[:10])) + (', ...' if len(classes) > 10 else '')
            raise DetforgeError(
                f'the {type(dataset).__name__}{where} has {len(classes)} classes ({shown}) but '
                f'{"model." + name if name else "model"}.num_classes is {num} ({type(module).__name__}); set '
                f'num_classes={len(classes)} in the model config (or classes= in the dataset '
                f'config)')


@HOOKS.register_module()
class NumClassCheckHook(Hook):
    """Runs :func:`check_num_classes` before the first train and val epoch."""

    def _check(self, runner, phase):
        loader = runner.data_loader
        dataset = getattr(loader, 'dataset', None)
        if dataset is not None:
            check_num_classes(runner.model, dataset, where=f' of the {phase} data')

    def before_train_epoch(self, runner):
        self._check(runner, 'train')

    def before_val_epoch(self, runner):
        self._check(runner, 'val')
