"""Registries: every part of detforge is a class registered by name and built from a dict.

A config such as ``dict(type='RetinaHead', num_classes=3, in_channels=256)`` is turned into an
object by :func:`build_from_cfg`.  Errors raised while building name the registry, the closest
registered names, the class and its accepted arguments, and the key path in the config
(``model.bbox_head.loss_cls``), so that a typo in a config never surfaces as a bare
``KeyError`` or ``TypeError`` deep inside.

Example::

    >>> HEADS = Registry('heads')
    >>> @HEADS.register_module()
    ... class MyHead:
    ...     def __init__(self, num_classes): ...
    >>> head = HEADS.build(dict(type='MyHead', num_classes=3))
"""
from __future__ import annotations

import contextlib
import difflib
import importlib
import inspect
import re
from typing import Any, Callable, Iterable, Iterator

__all__ = [
    'Registry', 'BuildError', 'RegistryError', 'build_from_cfg', 'build_context', 'DetforgeError',
    'DETECTORS', 'BACKBONES', 'NECKS', 'HEADS', 'ROI_EXTRACTORS', 'SHARED_HEADS', 'LOSSES',
    'PRIOR_GENERATORS', 'ANCHOR_GENERATORS', 'BBOX_ASSIGNERS', 'BBOX_SAMPLERS', 'BBOX_CODERS',
    'IOU_CALCULATORS', 'NORM_LAYERS', 'DATASETS', 'PIPELINES', 'TRANSFORMS', 'SAMPLERS', 'HOOKS',
    'OPTIMIZERS', 'OPTIMIZER_BUILDERS', 'LR_SCHEDULERS', 'RUNNERS', 'METRICS',
]


class DetforgeError(Exception):
    """Base class of the errors detforge raises for bad user input.

    The command line prints these as a short message, without a traceback.
    """


class BuildError(DetforgeError):
    """An object could not be built from its config.

    ``key_path`` grows as the error travels up through nested builds, so the final message
    says where in the config the bad entry is, e.g. ``model.bbox_head.loss_cls``.
    """

    def __init__(self, message: str, cfg: Any = None, key_path: Iterable[str] = (),
                 filename: str | None = None):
        super().__init__(message)
        self.message = message
        self.cfg = cfg
        self.key_path = list(key_path)
        self.filename = filename
        # True once the path starts at the config file's top level (a key the user wrote
        # there, e.g. a 1.x top-level train_cfg): no enclosing build may prefix it further
        self.rooted = False

    def prefix(self, *keys: str) -> 'BuildError':
        """Prepend keys to the key path (the caller knows where the failed config sat).

        ``cfg`` is cleared: the path now starts at a config this error does not hold, so
        :func:`build_from_cfg` one level up must not search for ``cfg`` and add its key a
        second time; it sets ``cfg`` to its own config instead.
        """
        if not self.rooted:
            self.key_path = [str(k) for k in keys] + self.key_path
        self.cfg = None
        return self

    def __str__(self) -> str:
        where = []
        if self.key_path:
            where.append(f"in {'.'.join(self.key_path)}")
        if self.filename:
            where.append(f'of {self.filename}')
        return self.message + (f" ({' '.join(where)})" if where else '')


class RegistryError(DetforgeError, KeyError):
    """A name cannot be registered (it is taken). A ``KeyError`` too, as in MMCV."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ''


class Registry:
    """A name -> class mapping with a build function.

    Args:
        name: what the registry holds ("heads", "datasets"); used in messages.
        parent: a registry whose entries this one can also see (a scope). A user project
            makes ``Registry('heads', parent=HEADS, scope='myproj')`` and its classes are
            then also found from the parent as ``'myproj.MyHead'`` (or ``'MyHead'`` if no
            other scope has that name).
        scope: the name of this registry's scope, used as a prefix from its parent.
        locations: modules imported the first time an entry is looked up, so that every
            class of the package is registered before a name is resolved.
    """

    def __init__(self, name: str, parent: 'Registry | None' = None, scope: str | None = None,
                 locations: Iterable[str] = ()):
        self.name = name
        self.parent = parent
        self.scope = scope
        self.children: dict[str, Registry] = {}
        self._module_dict: dict[str, type | Callable] = {}
        self._locations = list(locations)
        self._imported = False
        if parent is not None:
            if scope is None:
                raise ValueError('a child registry needs a scope name')
            parent.children[scope] = self

    # ----------------------------------------------------------------- introspection
    def __len__(self) -> int:
        return len(self.module_dict)

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def __repr__(self) -> str:
        return f'Registry(name={self.name!r}, items={sorted(self._module_dict)})'

    @property
    def module_dict(self) -> dict[str, type | Callable]:
        self._import_locations()
        return self._module_dict

    def keys(self) -> list[str]:
        return sorted(self.module_dict)

    def _import_locations(self) -> None:
        if self._imported:
            return
        self._imported = True  # before importing: a module may look a name up while loading
        try:
            for location in self._locations:
                importlib.import_module(location)
        except BaseException:
            self._imported = False  # fail again (loudly) on the next lookup, not silently
            raise

    # ----------------------------------------------------------------- lookup
    def get(self, key: str) -> type | Callable | None:
        """Return the class registered as ``key``, looking in this registry, its children
        (``'scope.Name'`` or an unambiguous plain name) and then its parents."""
        if not isinstance(key, str):
            return None
        self._import_locations()
        if key in self._module_dict:
            return self._module_dict[key]
        if '.' in key:
            scope, _, rest = key.partition('.')
            if scope in self.children:
                return self.children[scope].get(rest)
            if scope == self.scope:
                return self.get(rest)
        found = [c._module_dict[key] for c in self.children.values() if key in c._module_dict]
        if len(found) == 1:
            return found[0]
        if self.parent is not None:
            return self.parent.get(key)
        return None

    def _all_names(self) -> list[str]:
        names = set(self.module_dict)
        for scope, child in self.children.items():
            names.update(child.module_dict)
            names.update(f'{scope}.{n}' for n in child.module_dict)
        if self.parent is not None:
            names.update(self.parent._all_names())
        return sorted(names)

    def suggest(self, key: str, n: int = 3) -> list[str]:
        """The registered names closest to ``key`` (for "did you mean" messages)."""
        names = self._all_names()
        lower = {name.lower(): name for name in names}
        close = difflib.get_close_matches(key.lower(), list(lower), n=n, cutoff=0.6)
        return [lower[c] for c in close]

    # ----------------------------------------------------------------- registration
    def register_module(self, name: str | list[str] | None = None, force: bool = False,
                        module: type | Callable | None = None):
        """Register a class (or a function) under ``name`` (default: its ``__name__``).

        Usable as ``@REG.register_module()``, ``@REG.register_module('Alias')``,
        ``@REG.register_module`` (no call) or ``REG.register_module(module=cls)``.
        Registering a taken name without ``force=True`` is an error naming both definitions.
        """
        if inspect.isclass(name) or (callable(name) and not isinstance(name, str)):
            # used as a bare decorator: @REG.register_module
            return self._register(name, None, force)
        if name is not None and not isinstance(name, (str, list, tuple)):
            raise TypeError(f'name must be a str or a list of str, got {type(name).__name__}')
        if module is not None:
            return self._register(module, name, force)

        def decorator(cls):
            return self._register(cls, name, force)

        return decorator

    def _register(self, module, name, force):
        if not callable(module):
            raise TypeError(f'only classes and functions can be registered, got {module!r}')
        names = [module.__name__] if name is None else ([name] if isinstance(name, str) else list(name))
        if not all(isinstance(key, str) and key for key in names):
            raise TypeError(f'registered names must be non-empty strings, got {names!r}')
        for key in names:  # check every name before registering any
            existing = self._module_dict.get(key)
            if existing is not None and existing is not module and not force \
                    and not _same_definition(existing, module):
                # (the same source registered again, e.g. a module imported under two names,
                # is not a conflict: the newest is kept)
                raise RegistryError(
                    f"'{key}' is already registered in the {self.name} registry by "
                    f'{_describe(existing)}; cannot register {_describe(module)} under the '
                    f'same name (pass force=True to replace it, or choose another name)')
        for key in names:
            self._module_dict[key] = module
        return module

    # ----------------------------------------------------------------- build
    def build(self, cfg: Any, default_args: dict | None = None):
        """Build an object from ``cfg``; a list of configs builds an ``nn.Sequential``."""
        if isinstance(cfg, (list, tuple)):
            from torch import nn
            modules = []
            for i, c in enumerate(cfg):
                try:
                    modules.append(build_from_cfg(c, self, default_args))
                except BuildError as e:
                    e.prefix(str(i)).cfg = cfg  # callers look for the list in their args
                    raise
            return nn.Sequential(*modules)
        return build_from_cfg(cfg, self, default_args)


def _same_definition(a, b) -> bool:
    return (getattr(a, '__qualname__', None) == getattr(b, '__qualname__', None)
            and _source_location(a) == _source_location(b))


def _source_location(obj) -> str:
    try:
        file = inspect.getsourcefile(obj)
        line = inspect.getsourcelines(obj)[1]
        return f'{file}:{line}'
    except (TypeError, OSError):
        return getattr(obj, '__module__', '?')


def _describe(obj) -> str:
    return f'{obj.__module__}.{obj.__qualname__} ({_source_location(obj)})'


def _accepted_params(fn) -> tuple[list[str], bool]:
    """Names a callable accepts as keywords, and whether it also takes ``**kwargs``."""
    sig = _signature(fn)
    if sig is None:
        return [], True
    names, var_kw = [], False
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            names.append(p.name)
    return names, var_kw


def _unexpected_keyword(error: TypeError) -> str | None:
    match = re.search(r"got an unexpected keyword argument '(\w+)'", str(error))
    return match.group(1) if match else None


def _accepted_params_mro(cls) -> list[str]:
    """Keyword arguments a class accepts, following ``**kwargs`` up its base classes."""
    if not inspect.isclass(cls):
        return _accepted_params(cls)[0]
    names: list[str] = []
    for klass in cls.__mro__:
        if '__init__' not in vars(klass) or klass is object:
            continue
        params, var_kw = _accepted_params(klass.__init__)
        names.extend(p for p in params if p != 'self' and p not in names)
        if not var_kw:
            break
    return names


def _signature(fn) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)  # for a class: its constructor, without self
    except (TypeError, ValueError):
        return None


def _missing_required(fn, args: dict) -> list[str]:
    sig = _signature(fn)
    if sig is None:
        return []
    return [p.name for p in sig.parameters.values()
            if p.default is p.empty and p.name not in args
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _find_key_path(container: Any, target: Any, _depth: int = 0) -> list[str] | None:
    """Where ``target`` sits inside ``container`` (nested dicts and lists), as a key path."""
    if _depth > 8:
        return None
    if isinstance(container, dict):
        items = list(container.items())
    elif isinstance(container, (list, tuple)):
        items = list(enumerate(container))
    else:
        return None
    for key, value in items:  # identity first: cheap and unambiguous
        if value is target:
            return [str(key)]
    for key, value in items:
        try:
            if isinstance(value, (dict, list, tuple)) and value == target:
                return [str(key)]
        except Exception:  # noqa: BLE001 - comparing user objects may fail; it is only a hint
            pass
        sub = _find_key_path(value, target, _depth + 1)
        if sub is not None:
            return [str(key)] + sub
    if _depth == 0 and isinstance(target, dict):
        # the parent may have added keys to the config before building it (e.g. a detector
        # passes train_cfg on to its head): match a dict of the same type with common keys
        return _find_similar_dict(container, target)
    return None


def _find_similar_dict(container: Any, target: dict, _depth: int = 0) -> list[str] | None:
    if _depth > 8:
        return None
    if isinstance(container, dict):
        items = list(container.items())
    elif isinstance(container, (list, tuple)):
        items = list(enumerate(container))
    else:
        return None
    for key, value in items:
        if isinstance(value, dict) and value.get('type', None) == target.get('type', None) \
                and (_is_sub_dict(value, target) or _is_sub_dict(target, value)):
            return [str(key)]
        sub = _find_similar_dict(value, target, _depth + 1)
        if sub is not None:
            return [str(key)] + sub
    return None


def _is_sub_dict(small: Any, big: Any) -> bool:
    if not (isinstance(small, dict) and isinstance(big, dict)) or not small:
        return False
    try:
        return all(k in big and big[k] == v for k, v in small.items())
    except Exception:  # noqa: BLE001 - only a hint
        return False


def build_from_cfg(cfg: Any, registry: Registry, default_args: dict | None = None):
    """Build an object from a config dict.

    Args:
        cfg: ``dict(type=NameOrClass, **kwargs)``.
        registry: where ``type`` is looked up when it is a string.
        default_args: fill keys missing from ``cfg`` (they never override it).

    A class that defines ``from_config(cls, cfg: dict) -> dict`` gets the merged arguments
    first and returns the keyword arguments of its constructor (Detectron2's idea: derive
    some arguments from others).
    """
    if not isinstance(cfg, dict):
        raise BuildError(f'a config to build from the {registry.name} registry must be a dict '
                         f'with a "type" key, got {type(cfg).__name__}: {cfg!r}', cfg)
    if default_args is not None and not isinstance(default_args, dict):
        raise TypeError(f'default_args must be a dict or None, got {type(default_args).__name__}')
    if 'type' not in cfg and not (default_args and 'type' in default_args):
        raise BuildError(f'a config for the {registry.name} registry needs a "type" key; got keys '
                         f'{sorted(cfg)}', cfg)
    args = {k: v for k, v in _plain_items(cfg)}
    for key, value in (default_args or {}).items():
        args.setdefault(key, value)
    obj_type = args.pop('type')
    if isinstance(obj_type, str):
        obj_cls = registry.get(obj_type)
        if obj_cls is None:
            hint = registry.suggest(obj_type)
            msg = f"'{obj_type}' is not in the {registry.name.upper()} registry"
            msg += f"; did you mean {' or '.join(repr(h) for h in hint)}?" if hint else (
                f'; registered names: {", ".join(registry._all_names()) or "(none)"}')
            raise BuildError(msg, cfg)
    elif callable(obj_type):
        obj_cls = obj_type
    else:
        raise BuildError(f'"type" must be a registered name or a class, got {obj_type!r}', cfg)

    from_config = getattr(obj_cls, 'from_config', None)
    if inspect.isclass(obj_cls) and inspect.ismethod(from_config):
        try:
            derived = from_config(args)
        except BuildError as e:
            if e.cfg is not None:
                e.prefix(*(_find_key_path(args, e.cfg) or []))
            e.cfg = cfg
            raise
        if isinstance(derived, obj_cls):  # from_config built the object itself
            return derived
        if not isinstance(derived, dict):
            raise BuildError(f'{obj_cls.__name__}.from_config must return a dict of constructor '
                             f'arguments, got {type(derived).__name__}', cfg)
        args = derived

    accepted, var_kw = _accepted_params(obj_cls)
    if not var_kw:
        unknown = [k for k in args if k not in accepted]
        if unknown:
            bad = unknown[0]
            hint = difflib.get_close_matches(bad, accepted, n=1)
            raise BuildError(
                f'{obj_cls.__name__} got an unexpected argument {bad!r}'
                + (f' (did you mean {hint[0]!r}?)' if hint else '')
                + f'; it accepts: {", ".join(accepted) or "(no arguments)"}', cfg)
    missing = _missing_required(obj_cls, args)
    if missing:
        raise BuildError(f'{obj_cls.__name__} needs the argument'
                         f'{"s" if len(missing) > 1 else ""} {", ".join(map(repr, missing))}, '
                         f'which the config does not give', cfg)
    try:
        return obj_cls(**args)
    except BuildError as e:
        # a nested build failed: say which of our arguments held the bad config (unless the
        # constructor already did), then stand for it ourselves so that the next level up
        # finds us in its own arguments
        path = _find_key_path(args, e.cfg) if e.cfg is not None else None
        if path:
            e.prefix(*path)
        e.cfg = cfg
        raise
    except TypeError as e:
        # a class taking **kwargs passed an argument on to a parent that does not know it
        bad = _unexpected_keyword(e)
        if bad is None or bad not in args:
            raise
        accepted = _accepted_params_mro(obj_cls)
        hint = difflib.get_close_matches(bad, accepted, n=1)
        raise BuildError(
            f'{obj_cls.__name__} got an unexpected argument {bad!r}'
            + (f' (did you mean {hint[0]!r}?)' if hint else '')
            + f'; it accepts: {", ".join(accepted) or "(no arguments)"}', cfg) from e


def _plain_items(cfg: dict) -> Iterator[tuple[str, Any]]:
    # ConfigDict keeps item order and behaves as a dict; no special casing needed beyond that.
    return iter(cfg.items())


@contextlib.contextmanager
def build_context(*keys: str, filename: str | None = None):
    """Name where a build happens, for error messages::

        with build_context('model', filename=cfg.filename):
            model = build_detector(cfg.model)
    """
    try:
        yield
    except BuildError as e:
        e.prefix(*keys)
        if filename and not e.filename:
            e.filename = filename
        raise


# ---------------------------------------------------------------------- the project's registries
_MODELS = ('detforge.models',)
DETECTORS = Registry('detectors', locations=_MODELS)
BACKBONES = Registry('backbones', locations=_MODELS)
NECKS = Registry('necks', locations=_MODELS)
HEADS = Registry('heads', locations=_MODELS)
ROI_EXTRACTORS = Registry('roi_extractors', locations=_MODELS)
SHARED_HEADS = Registry('shared_heads', locations=_MODELS)
LOSSES = Registry('losses', locations=_MODELS)
NORM_LAYERS = Registry('norm_layers', locations=_MODELS)
PRIOR_GENERATORS = Registry('prior_generators', locations=_MODELS)
ANCHOR_GENERATORS = PRIOR_GENERATORS
BBOX_ASSIGNERS = Registry('bbox_assigners', locations=_MODELS)
BBOX_SAMPLERS = Registry('bbox_samplers', locations=_MODELS)
BBOX_CODERS = Registry('bbox_coders', locations=_MODELS)
IOU_CALCULATORS = Registry('iou_calculators', locations=_MODELS)

DATASETS = Registry('datasets', locations=('detforge.data',))
PIPELINES = Registry('transforms', locations=('detforge.data',))
TRANSFORMS = PIPELINES
SAMPLERS = Registry('samplers', locations=('detforge.data',))

HOOKS = Registry('hooks', locations=('detforge.engine',))
OPTIMIZERS = Registry('optimizers', locations=('detforge.engine',))
OPTIMIZER_BUILDERS = Registry('optimizer_builders', locations=('detforge.engine',))
LR_SCHEDULERS = Registry('lr_schedulers', locations=('detforge.engine',))
RUNNERS = Registry('runners', locations=('detforge.engine',))

METRICS = Registry('metrics', locations=('detforge.evaluation',))

PROJECT_REGISTRIES = (DETECTORS, BACKBONES, NECKS, HEADS, ROI_EXTRACTORS, SHARED_HEADS, LOSSES,
                      NORM_LAYERS, PRIOR_GENERATORS, BBOX_ASSIGNERS, BBOX_SAMPLERS, BBOX_CODERS,
                      IOU_CALCULATORS, DATASETS, PIPELINES, SAMPLERS, HOOKS, OPTIMIZERS,
                      OPTIMIZER_BUILDERS, LR_SCHEDULERS, RUNNERS, METRICS)


def type_accepts(type_name: Any, key: str) -> bool:
    """Whether a class registered as ``type_name`` (in any of the project's registries) takes
    ``key`` as a keyword argument: an override that adds such a key to a config dict sets a
    real argument, however close its name is to one of the keys already there."""
    for registry in PROJECT_REGISTRIES:
        cls = registry.get(type_name)
        if cls is not None and key in _accepted_params_mro(cls):
            return True
    return False
