"""Build an optimizer from ``optimizer=dict(type='SGD', lr=0.02, ..., paramwise_cfg=...)``.

Every ``torch.optim`` optimizer is registered by name. ``paramwise_cfg`` sets lr and weight
decay per parameter, with MMDetection's keys (multipliers of the base values)::

    paramwise_cfg=dict(bias_lr_mult=2., bias_decay_mult=0., norm_decay_mult=0.,
                       dwconv_decay_mult=0., custom_keys={'backbone': dict(lr_mult=0.1)})

and Detectron2's (absolute values): ``weight_decay_norm``, ``weight_decay_bias``,
``bias_lr_factor``. Frozen parameters (``requires_grad=False``) are left out.
Parameters with the same (lr, weight decay) share one param group.
"""
from __future__ import annotations

import copy
import inspect
import numbers

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from detforge.registry import (OPTIMIZER_BUILDERS, OPTIMIZERS, BuildError, build_context,
                               build_from_cfg)

from ..dist_utils import unwrap_model

__all__ = ['DefaultOptimizerConstructor', 'build_optimizer', 'build_optimizer_constructor']


def _register_torch_optimizers() -> list[str]:
    names = []
    for name in dir(torch.optim):
        if name.startswith('_'):
            continue
        obj = getattr(torch.optim, name)
        if inspect.isclass(obj) and issubclass(obj, torch.optim.Optimizer) and \
                obj is not torch.optim.Optimizer:
            if OPTIMIZERS.get(name) is None:
                OPTIMIZERS.register_module(module=obj)
            names.append(name)
    return names


TORCH_OPTIMIZERS = _register_torch_optimizers()

_D2_KEYS = ('weight_decay_norm', 'weight_decay_bias', 'bias_lr_factor')
_MM_KEYS = ('bias_lr_mult', 'bias_decay_mult', 'norm_decay_mult', 'dwconv_decay_mult',
            'dcn_offset_lr_mult', 'custom_keys', 'bypass_duplicate')


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (_BatchNorm, _InstanceNorm, nn.GroupNorm, nn.LayerNorm)) or \
        'norm' in type(module).__name__.lower() and not list(module.children())


@OPTIMIZER_BUILDERS.register_module()
class DefaultOptimizerConstructor:
    """Builds the optimizer and its param groups (see the module docstring).

    Rules for one parameter ``name`` of ``module`` (first match wins for the custom keys,
    longest key first): ``custom_keys`` multipliers; else a ``bias`` outside norm layers
    gets ``bias_lr_mult``; weight decay: norm layers ``norm_decay_mult``, depth-wise convs
    ``dwconv_decay_mult``, other biases ``bias_decay_mult``.
    """

    def __init__(self, optimizer_cfg: dict, paramwise_cfg: dict | None = None):
        if not isinstance(optimizer_cfg, dict):
            raise BuildError(f'optimizer must be a dict(type=..., lr=...), got '
                             f'{type(optimizer_cfg).__name__}', optimizer_cfg)
        self.optimizer_cfg = dict(optimizer_cfg)
        self.paramwise_cfg = dict(paramwise_cfg or {})
        for key in _D2_KEYS:  # Detectron2 names may also sit next to lr
            if key in self.optimizer_cfg:
                self.paramwise_cfg.setdefault(key, self.optimizer_cfg.pop(key))
        unknown = [k for k in self.paramwise_cfg if k not in _D2_KEYS + _MM_KEYS]
        if unknown:
            raise BuildError(f'unknown paramwise_cfg key {unknown[0]!r}; known: '
                             f'{", ".join(_MM_KEYS + _D2_KEYS)}', paramwise_cfg)
        if 'lr' not in self.optimizer_cfg:
            raise BuildError('optimizer needs an "lr"', optimizer_cfg)
        self.base_lr = self.optimizer_cfg['lr']
        self.base_wd = self.optimizer_cfg.get('weight_decay', None)
        custom_keys = self.paramwise_cfg.get('custom_keys', {})
        if not isinstance(custom_keys, dict):
            raise BuildError(f'paramwise_cfg.custom_keys must be a dict, got {custom_keys!r}',
                             paramwise_cfg)
        if self.base_wd is None and any(
                'decay_mult' in v for v in custom_keys.values() if isinstance(v, dict)) or \
                self.base_wd is None and any(
                    k in self.paramwise_cfg for k in ('bias_decay_mult', 'norm_decay_mult',
                                                      'dwconv_decay_mult')):
            raise BuildError('paramwise_cfg sets a decay multiplier but the optimizer has no '
                             'weight_decay', optimizer_cfg)

    def _settings(self, prefix: str, name: str, module: nn.Module) -> tuple[float, float | None]:
        """(lr, weight_decay) of parameter ``prefix.name`` (owned by ``module``)."""
        cfg = self.paramwise_cfg
        full_name = f'{prefix}.{name}' if prefix else name
        lr, wd = self.base_lr, self.base_wd
        is_norm = _is_norm(module)
        is_bias = name == 'bias'
        is_dwconv = isinstance(module, nn.Conv2d) and module.in_channels == module.groups \
            and module.groups > 1
        custom_keys = cfg.get('custom_keys', {})
        for key in sorted(sorted(custom_keys), key=len, reverse=True):
            if key in full_name:
                lr = self.base_lr * custom_keys[key].get('lr_mult', 1.)
                if wd is not None:
                    wd = self.base_wd * custom_keys[key].get('decay_mult', 1.)
                return lr, wd
        if is_bias and not is_norm:
            lr = self.base_lr * cfg.get('bias_lr_mult', 1.) * cfg.get('bias_lr_factor', 1.)
        if wd is not None:
            if is_norm:
                wd = cfg['weight_decay_norm'] if 'weight_decay_norm' in cfg else \
                    self.base_wd * cfg.get('norm_decay_mult', 1.)
            elif is_dwconv:
                wd = self.base_wd * cfg.get('dwconv_decay_mult', 1.)
            elif is_bias:
                wd = cfg['weight_decay_bias'] if cfg.get('weight_decay_bias') is not None else \
                    self.base_wd * cfg.get('bias_decay_mult', 1.)
        return lr, wd

    def param_groups(self, model: nn.Module) -> list[dict]:
        groups: dict[tuple, dict] = {}
        seen: set[int] = set()
        for prefix, module in model.named_modules():
            for name, param in module.named_parameters(recurse=False):
                if not param.requires_grad or id(param) in seen:
                    continue  # frozen, or shared with a module seen already
                seen.add(id(param))
                lr, wd = self._settings(prefix, name, module)
                group = groups.setdefault((lr, wd), {'params': [], 'lr': lr})
                if wd is not None:
                    group['weight_decay'] = wd
                group['params'].append(param)
        return list(groups.values())

    def __call__(self, model: nn.Module) -> torch.optim.Optimizer:
        model = unwrap_model(model)
        cfg = dict(self.optimizer_cfg)
        if not self.paramwise_cfg:
            cfg['params'] = [p for p in model.parameters() if p.requires_grad]
        else:
            cfg['params'] = self.param_groups(model)
        if not cfg['params']:
            raise BuildError('the model has no trainable parameter (all are frozen)',
                             self.optimizer_cfg)
        check_optimizer_args(self.optimizer_cfg)
        try:
            return build_from_cfg(cfg, OPTIMIZERS)
        except (TypeError, ValueError) as e:  # torch's own checks (lr < 0, betas out of range)
            raise BuildError(f'{cfg.get("type")}: {e}', self.optimizer_cfg) from e


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) or (
        isinstance(value, torch.Tensor) and value.numel() == 1)


def check_optimizer_args(cfg: dict) -> None:
    """Check the values of an optimizer config against the optimizer's signature before
    torch sees them: where torch's default is a number (``lr``, ``momentum``,
    ``weight_decay``, ``eps``) the value must be a number, where it is a bool a bool, where
    it is a tuple of numbers (``betas``) a list or tuple of as many numbers. The error names
    the key (``optimizer.lr``), the value and what was expected."""
    opt_type = cfg.get('type')
    cls = OPTIMIZERS.get(opt_type) if isinstance(opt_type, str) else opt_type
    if not inspect.isclass(cls):
        return
    params = inspect.signature(cls.__init__).parameters
    for key, value in cfg.items():
        if key in ('type', 'params') or key not in params:
            continue
        default = params[key].default
        if default is inspect.Parameter.empty or default is None:
            expected = 'a number' if key == 'lr' else None
        elif isinstance(default, bool):
            expected = 'True or False'
        elif _is_number(default):
            expected = 'a number'
        elif isinstance(default, tuple) and all(_is_number(v) for v in default):
            expected = f'a tuple of {len(default)} numbers'
        else:
            expected = None
        if expected == 'a number':
            ok = _is_number(value)
        elif expected == 'True or False':
            ok = isinstance(value, bool)
        elif expected is not None:
            ok = isinstance(value, (list, tuple)) and len(value) == len(default) and all(
                _is_number(v) for v in value)
        else:
            ok = True
        if not ok:
            raise BuildError(f'{opt_type} argument {key} must be {expected}, got {value!r} '
                             f'({type(value).__name__})', key_path=[key])


def build_optimizer_constructor(cfg: dict):
    return build_from_cfg(cfg, OPTIMIZER_BUILDERS)


def build_optimizer(model: nn.Module, cfg: dict):
    """``build_optimizer(model, cfg.optimizer)`` -> a ``torch.optim.Optimizer``."""
    if cfg is None:
        raise BuildError("the config has no 'optimizer'; add e.g. optimizer = dict(type='SGD', "
                         "lr=0.01, momentum=0.9, weight_decay=0.0001)")
    if not isinstance(cfg, dict):
        raise BuildError(f'optimizer must be a dict(type=..., lr=...), got {cfg!r}', cfg)
    optimizer_cfg = copy.deepcopy(dict(cfg))
    constructor_type = optimizer_cfg.pop('constructor', 'DefaultOptimizerConstructor')
    paramwise_cfg = optimizer_cfg.pop('paramwise_cfg', None)
    with build_context():
        constructor = build_optimizer_constructor(dict(
            type=constructor_type, optimizer_cfg=optimizer_cfg, paramwise_cfg=paramwise_cfg))
    return constructor(model)
