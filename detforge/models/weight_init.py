"""``init_cfg``: MMCV's weight initialisers (``Normal``, ``Xavier``, ``Kaiming``, ``Constant``,
``Uniform``), applied to the model part whose config holds them.

Semantics (MMCV 1.x ``initialize``):

- ``init_cfg`` is a dict or a list of dicts, applied in order.
- ``layer='Conv2d'`` (or a list of class names) applies the initialiser to every sub-module
  of the part whose class (or one of its base classes) has that name; ``bias_prob=p`` sets
  the bias to ``-log((1 - p) / p)`` (the focal-loss prior), else ``bias`` (default 0).
- ``override=dict(name='retina_cls', ...)`` (or a list) applies to the named child
  (``part.retina_cls``) as a whole, after the ``layer`` pass; an override holding only
  ``name`` uses the outer initialiser's arguments.
- Parts are initialised outermost first, so a part's own ``init_cfg`` wins over its
  parent's (``model.init_cfg`` < ``model.roi_head.init_cfg`` < ``...bbox_head.init_cfg``).

``Pretrained`` is loaded by the backbone, by the detector (``model.init_cfg``) and by parts
that say they load it (``loads_pretrained = True``: the ``ResLayer`` shared head) in
``init_weights``; elsewhere it is refused at build time. Any other ``type`` is a build error.
"""
from __future__ import annotations

import copy
import math

from torch import nn

from detforge.registry import BuildError

__all__ = ['INITIALIZERS', 'bias_init_with_prob', 'initialize', 'check_init_cfg',
           'find_init_cfgs', 'apply_init_cfgs']


def bias_init_with_prob(prior_prob: float) -> float:
    """The bias whose sigmoid is ``prior_prob``."""
    return float(-math.log((1 - prior_prob) / prior_prob))


def _bias(module, value: float) -> None:
    if getattr(module, 'bias', None) is not None:
        nn.init.constant_(module.bias, value)


def _normal(module, mean=0., std=1., bias=0.):
    nn.init.normal_(module.weight, mean, std)
    _bias(module, bias)


def _xavier(module, gain=1., bias=0., distribution='normal'):
    init = nn.init.xavier_uniform_ if distribution == 'uniform' else nn.init.xavier_normal_
    init(module.weight, gain=gain)
    _bias(module, bias)


def _kaiming(module, a=0., mode='fan_out', nonlinearity='relu', bias=0., distribution='normal'):
    init = nn.init.kaiming_uniform_ if distribution == 'uniform' else nn.init.kaiming_normal_
    init(module.weight, a=a, mode=mode, nonlinearity=nonlinearity)
    _bias(module, bias)


def _constant(module, val, bias=0.):
    nn.init.constant_(module.weight, val)
    _bias(module, bias)


def _uniform(module, a=0., b=1., bias=0.):
    nn.init.uniform_(module.weight, a, b)
    _bias(module, bias)


# type -> (function(module, **args), the arguments it takes besides bias)
INITIALIZERS = {
    'Normal': (_normal, {'mean', 'std'}),
    'Xavier': (_xavier, {'gain', 'distribution'}),
    'Kaiming': (_kaiming, {'a', 'mode', 'nonlinearity', 'distribution'}),
    'Constant': (_constant, {'val'}),
    'Uniform': (_uniform, {'a', 'b'}),
}
_COMMON = {'type', 'layer', 'override', 'bias', 'bias_prob'}


def _class_names(module) -> set[str]:
    return {cls.__name__ for cls in type(module).__mro__}


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


def check_init_cfg(init_cfg, module=None, key_path=('init_cfg',)) -> None:
    """Raise a :class:`BuildError` naming ``key_path`` for an init_cfg that cannot be applied
    (unknown type or argument, neither ``layer`` nor ``override``, an override naming no
    child of ``module``)."""
    for i, cfg in enumerate(_as_list(init_cfg)):
        where = list(key_path) + ([str(i)] if isinstance(init_cfg, (list, tuple)) else [])
        if not isinstance(cfg, dict) or 'type' not in cfg:
            raise BuildError('an init_cfg must be a dict with a type (or a list of them)', cfg,
                             key_path=where)
        kind = cfg['type']
        if kind == 'Pretrained':
            continue
        if kind not in INITIALIZERS:
            raise BuildError(f'unknown init_cfg type {kind!r}; expected one of '
                             f"{sorted(INITIALIZERS) + ['Pretrained']}", cfg, key_path=where)
        unknown = set(cfg) - _COMMON - INITIALIZERS[kind][1]
        if unknown:
            raise BuildError(f'{kind} init_cfg does not take {sorted(unknown)}; it takes '
                             f'{sorted((_COMMON | INITIALIZERS[kind][1]) - {"type"})}', cfg,
                             key_path=where)
        if cfg.get('layer') is None and cfg.get('override') is None:
            raise BuildError(f"{kind} init_cfg needs layer='Conv2d' (class names) or "
                             "override=dict(name=...)", cfg, key_path=where)
        for override in _as_list(cfg.get('override') or []):
            name = override.get('name') if isinstance(override, dict) else None
            if name is None:
                raise BuildError('an init_cfg override needs name= (a child module)', override,
                                 key_path=where + ['override'])
            if len(override) > 1 and 'type' not in override:
                raise BuildError('an init_cfg override with arguments needs a type', override,
                                 key_path=where + ['override'])
            if override.get('type', kind) not in INITIALIZERS:
                raise BuildError(f"unknown init_cfg type {override.get('type')!r}", override,
                                 key_path=where + ['override'])
            if module is not None and not hasattr(module, name):
                raise BuildError(f'init_cfg override names {name!r}, which {type(module).__name__} '
                                 'does not have', override, key_path=where + ['override'])


def _apply(module, cfg: dict, whole: bool) -> None:
    """One initialiser: to ``module`` and all its sub-modules with a weight (``whole``), or to
    the sub-modules of the classes in ``cfg['layer']``."""
    cfg = dict(cfg)
    kind = cfg.pop('type')
    func, _ = INITIALIZERS[kind]
    layers = set(_as_list(cfg.pop('layer', None) or []))
    cfg.pop('override', None)
    if cfg.get('bias_prob') is not None:
        cfg['bias'] = bias_init_with_prob(cfg.pop('bias_prob'))
    cfg.pop('bias_prob', None)
    for m in module.modules():
        if getattr(m, 'weight', None) is None:
            continue
        if whole or layers & _class_names(m):
            func(m, **cfg)


def initialize(module: nn.Module, init_cfg) -> None:
    """Apply ``init_cfg`` (a dict or a list of dicts; see the module docstring) to ``module``.
    ``Pretrained`` entries are skipped (loaded by ``init_weights``)."""
    check_init_cfg(init_cfg, module)
    for cfg in _as_list(init_cfg):
        if cfg['type'] == 'Pretrained':
            continue
        cfg = copy.deepcopy(dict(cfg))
        overrides = cfg.pop('override', None)
        if cfg.get('layer') is not None:
            _apply(module, cfg, whole=False)
        cfg.pop('layer', None)
        for override in _as_list(overrides or []):
            override = dict(override)
            name = override.pop('name')
            _apply(getattr(module, name), override or cfg, whole=True)


def find_init_cfgs(model_cfg, path: tuple = ()):
    """``(path, init_cfg)`` for every ``init_cfg`` in a model config, outermost first; the path
    is the keys leading to the part (``('roi_head', 'bbox_head', '0')``). ``train_cfg`` and
    ``test_cfg`` are not parts."""
    if isinstance(model_cfg, dict):
        if model_cfg.get('init_cfg') is not None:
            yield path, model_cfg['init_cfg']
        for key, value in model_cfg.items():
            if key not in ('init_cfg', 'train_cfg', 'test_cfg'):
                yield from find_init_cfgs(value, path + (key,))
    elif isinstance(model_cfg, (list, tuple)):
        for i, value in enumerate(model_cfg):
            yield from find_init_cfgs(value, path + (str(i),))


def _part(model, path):
    module = model
    for key in path:
        if key.isdigit() and isinstance(module, (nn.ModuleList, nn.Sequential)):
            module = module[int(key)] if int(key) < len(module) else None
        else:
            module = getattr(module, key, None)
        if not isinstance(module, nn.Module):
            return None
    return module


def apply_init_cfgs(model: nn.Module, model_cfg) -> list:
    """Check every ``init_cfg`` of ``model_cfg`` against the built ``model`` and apply the
    non-``Pretrained`` ones, outermost first. Returns ``[(part, init_cfg)]`` so that
    ``init_weights`` can apply them again after the parts' own default initialisation.

    Raises :class:`BuildError` (key path ``model.PART.init_cfg``) for an init_cfg that cannot
    be applied, or for ``Pretrained`` on a part other than the backbone or the detector."""
    applied = []
    for path, init_cfg in find_init_cfgs(model_cfg):
        key_path = list(path) + ['init_cfg']
        part = _part(model, path)
        if part is None:
            raise BuildError(f'init_cfg at model.{".".join(path)} has no model part to '
                             'initialise', init_cfg, key_path=key_path)
        check_init_cfg(init_cfg, part, key_path)
        pretrained = [c for c in _as_list(init_cfg) if c['type'] == 'Pretrained']
        if pretrained and path not in ((), ('backbone',)) and \
                not getattr(part, 'loads_pretrained', False):
            raise BuildError("init_cfg type 'Pretrained' is loaded for model.backbone and for "
                             'the whole model (model.init_cfg, with prefixed keys), not for '
                             f'model.{".".join(path)}', init_cfg, key_path=key_path)
        if len(pretrained) < len(_as_list(init_cfg)):
            initialize(part, init_cfg)
            applied.append((part, init_cfg))
    return applied
