"""Config files: Python, YAML and JSON, with ``_base_`` inheritance and command-line overrides.

A config is a tree of dicts and lists. :class:`Config` loads it from a file and keeps where it
came from; :class:`ConfigDict` is a ``dict`` with attribute access (``cfg.model.bbox_head``)
whose errors name the full key path of a missing key.

**Python configs are code.** ``Config.fromfile('x.py')`` executes the file, as MMDetection
does; its top-level variables become the config's keys (modules, functions, classes and names
starting with ``__`` are dropped). Load only configs you trust. YAML is read with
``yaml.safe_load``, which refuses tags that build Python objects; JSON is plain data.

Inheritance::

    _base_ = ['../_base_/models/retinanet_r50_fpn.py', '../_base_/default_runtime.py']
    model = dict(bbox_head=dict(num_classes=3))            # merged into the base's model
    optimizer = dict(_delete_=True, type='AdamW', lr=1e-4) # replaces the base's optimizer

Dicts merge recursively, lists and other values are replaced whole, ``_delete_=True``
replaces a dict instead of merging it. A key defined by two bases of the same file is an
error. A value written ``{{_base_.img_norm_cfg}}`` (MMCV's syntax) is replaced by that value
of the merged bases.
"""
from __future__ import annotations

import argparse
import ast
import copy
import difflib
import importlib
import json
import keyword
import math
import os
import re
import sys
import traceback
import types
import uuid
import warnings
from pathlib import Path
from typing import Any, Iterable

from detforge.registry import DetforgeError, type_accepts

__all__ = ['Config', 'ConfigDict', 'ConfigError', 'ConfigKeyError', 'DictAction', 'CfgOptions',
           'RUNTIME_KEYS',
           'parse_option_value']

BASE_KEY = '_base_'
DELETE_KEY = '_delete_'
RESERVED_KEYS = ('filename', 'text', 'pretty_text')
PY_EXTS = ('.py',)
YAML_EXTS = ('.yaml', '.yml')
JSON_EXTS = ('.json',)
SUPPORTED_EXTS = PY_EXTS + YAML_EXTS + JSON_EXTS


class ConfigError(DetforgeError):
    """A config file or an override is wrong: the message names the file, line or key path."""


class ConfigKeyError(AttributeError, ConfigError):
    """A key that is not in the config was read as an attribute (``cfg.model.bbox_haed``).

    It is an ``AttributeError`` (so ``hasattr`` and ``getattr(cfg, k, default)`` work) and a
    :class:`ConfigError` (so the command line prints it as a one-line error).
    """


def _suggest(key: Any, candidates: Iterable[Any]) -> str:
    names = [str(c) for c in candidates]
    close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ''


def _join(path: str, key: Any) -> str:
    return f'{path}.{key}' if path else str(key)


# ====================================================================== ConfigDict
class ConfigDict(dict):
    """A dict whose keys are also attributes; nested dicts (also inside lists) become
    ConfigDicts. Reading a missing key as an attribute raises :class:`ConfigKeyError`::

        >>> cfg = ConfigDict(model=dict(bbox_head=dict(num_classes=3)))
        >>> cfg.model.bbox_head.num_clases
        ConfigKeyError: 'ConfigDict' object has no attribute 'num_clases': model.bbox_head
        has no key 'num_clases'; did you mean 'num_classes'?
    """

    def __init__(self, *args, _path: str = '', **kwargs):
        object.__setattr__(self, '_path', _path)
        super().__init__()
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    # -- conversion of nested values
    def _wrap(self, key: Any, value: Any) -> Any:
        path = _join(self._path, key)
        return _to_config_types(value, path)

    # -- item access
    def __setitem__(self, key, value):
        super().__setitem__(key, self._wrap(key, value))

    def __missing__(self, key):
        raise KeyError(f'{self._where()} has no key {key!r}{_suggest(key, self.keys())}')

    def update(self, *args, **kwargs):
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = default
        return self[key]

    # -- attribute access
    def __getattr__(self, name: str):
        if name.startswith('__') and name.endswith('__'):
            raise AttributeError(name)  # copy/pickle probe for hooks; never a config key
        try:
            return self[name]
        except KeyError:
            raise ConfigKeyError(
                f"'{type(self).__name__}' object has no attribute '{name}': {self._where()} "
                f"has no key '{name}'{_suggest(name, self.keys())}") from None

    def __setattr__(self, name: str, value):
        self[name] = value

    def __delattr__(self, name: str):
        try:
            del self[name]
        except KeyError:
            raise ConfigKeyError(f"{self._where()} has no key '{name}'") from None

    def _where(self) -> str:
        return self._path if self._path else 'the config'

    # -- copies and pickling keep the class and the key path
    def __copy__(self):
        return type(self)(dict(self), _path=self._path)

    def __deepcopy__(self, memo):
        new = type(self)(_path=self._path)
        memo[id(self)] = new
        for key, value in self.items():
            dict.__setitem__(new, copy.deepcopy(key, memo), copy.deepcopy(value, memo))
        return new

    def __reduce__(self):
        return (_rebuild_config_dict, (type(self), self._path, dict(self)))

    def copy(self):
        return self.__copy__()

    def to_dict(self) -> dict:
        """A plain ``dict`` (recursively: nested ConfigDicts become dicts)."""
        return _to_plain(self)


def _rebuild_config_dict(cls, path, items):
    return cls(items, _path=path)


def _to_config_types(value: Any, path: str) -> Any:
    if isinstance(value, ConfigDict) and value._path == path:  # already converted
        return value
    if isinstance(value, dict):
        return ConfigDict(value, _path=path)
    if isinstance(value, list):
        return [_to_config_types(v, _join(path, i)) for i, v in enumerate(value)]
    if type(value) is tuple:  # named tuples are kept as they are
        return tuple(_to_config_types(v, _join(path, i)) for i, v in enumerate(value))
    return value


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_plain(v) for v in value]
    if type(value) is tuple:
        return tuple(_to_plain(v) for v in value)
    return value


# ====================================================================== loading files
def _check_file(filename: Path, included_by: str | None) -> None:
    if filename.is_file():
        return
    if included_by is not None:
        raise ConfigError(f'{included_by}: _base_ file not found: {_display(filename)} '
                          f'(_base_ paths are relative to the file that names them)')
    raise ConfigError(f'config file not found: {_display(filename)}')


_PREDEFINED = {
    'fileDirname': lambda p: str(p.parent),
    'fileBasename': lambda p: p.name,
    'fileBasenameNoExtension': lambda p: p.stem,
    'fileExtname': lambda p: p.suffix,
}
_BASE_VAR = re.compile(r'\{\{\s*' + BASE_KEY + r'\.([\w\.]+)\s*\}\}')


def _substitute_predefined(text: str, filename: Path) -> str:
    for name, value in _PREDEFINED.items():
        text = re.sub(r'\{\{\s*' + name + r'\s*\}\}',
                      value(filename).replace('\\', '/'), text)
    return text


def _placeholder_base_vars(text: str) -> tuple[str, dict[str, str]]:
    """Replace each ``{{_base_.a.b}}`` (quoted or not) by a unique quoted string, swapped for
    the bases' value once they are loaded (the text must parse before that)."""
    placeholders: dict[str, str] = {}
    tokens: dict[str, str] = {}

    def replace(match: re.Match) -> str:
        name = match.group(2)
        if name not in tokens:
            tokens[name] = f'_detforge_base_{name.replace(".", "_")}_{uuid.uuid4().hex[:8]}'
            placeholders[tokens[name]] = name
        return f'"{tokens[name]}"'

    pattern = r'([\'"]?)\{\{\s*' + BASE_KEY + r'\.([\w\.]+)\s*\}\}\1'
    return re.sub(pattern, replace, text), placeholders


def _display(path: Path) -> str:
    """A path for messages: relative to the current directory when it is below it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)
    return str(path) if rel.startswith('..') else rel


def _exec_python(text: str, filename: Path, display: str) -> dict:
    try:
        code = compile(text, display, 'exec')
    except SyntaxError as e:
        line = f'\n    {e.text.rstrip()}' if e.text else ''
        raise ConfigError(f'{display}:{e.lineno}: syntax error in config: {e.msg}{line}') from None
    namespace: dict[str, Any] = {'__file__': str(filename), '__name__': '__config__'}
    try:
        exec(code, namespace)  # noqa: S102 - Python configs are code, as documented
    except Exception as e:  # noqa: BLE001 - any failure of user code is reported with its line
        frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == display]
        where = f'{display}:{frames[-1].lineno}' if frames else display
        hint = ''
        if isinstance(e, NameError):
            hint = (' (a config cannot use the variables of its _base_ files by name; refer '
                    'to them as "{{_base_.NAME}}" or define them in this file)')
        raise ConfigError(f'{where}: error while executing the config: '
                          f'{type(e).__name__}: {e}{hint}') from e
    return {k: v for k, v in namespace.items()
            if not k.startswith('__') and not _is_code_object(v)}


def _is_code_object(value: Any) -> bool:
    return isinstance(value, (types.ModuleType, types.FunctionType, types.BuiltinFunctionType,
                              types.MethodType, type))


def _load_yaml(text: str, display: str) -> dict:
    import yaml
    try:
        data = yaml.safe_load(text)
    except yaml.constructor.ConstructorError as e:
        mark = e.problem_mark
        where = f'{display}:{mark.line + 1}' if mark is not None else display
        tag = re.search(r"tag '([^']*)'", e.problem or '')
        tag_name = tag.group(1).replace('tag:yaml.org,2002:', '!!') if tag else 'tag'
        raise ConfigError(
            f"{where}: YAML tag '{tag_name}' is not allowed: detforge loads YAML with the safe "
            f'loader, which rejects unsafe tags that construct Python objects (they can run '
            f'arbitrary code); write plain values instead') from None
    except yaml.YAMLError as e:
        mark = getattr(e, 'problem_mark', None)
        where = f'{display}:{mark.line + 1}' if mark is not None else display
        problem = getattr(e, 'problem', None) or str(e)
        raise ConfigError(f'{where}: invalid YAML: {problem}') from None
    return _check_mapping(data, display)


def _load_json(text: str, display: str) -> dict:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f'{display}:{e.lineno}: invalid JSON: {e.msg}') from None
    return _check_mapping(data, display)


def _check_mapping(data: Any, display: str) -> dict:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f'{display}: a config must be a mapping of keys to values, '
                          f'got a {type(data).__name__}')
    return data


def _parse_text(text: str, file_format: str, filename: Path, display: str) -> dict:
    if file_format in PY_EXTS:
        return _exec_python(text, filename, display)
    if file_format in YAML_EXTS:
        return _load_yaml(text, display)
    if file_format in JSON_EXTS:
        return _load_json(text, display)
    raise ConfigError(f'{display}: unsupported config format {file_format!r}; use one of '
                      f'{", ".join(SUPPORTED_EXTS)}')


def _resolve_base_vars(value: Any, placeholders: dict[str, str], base: dict, display: str):
    if isinstance(value, str) and value in placeholders:
        node: Any = base
        walked = ''
        for key in placeholders[value].split('.'):
            if isinstance(node, (list, tuple)) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            elif isinstance(node, dict) and key in node:
                node = node[key]
            else:
                raise ConfigError(f'{display}: {{{{_base_.{placeholders[value]}}}}}: the bases '
                                  f'have no key {_join(walked, key)}')
            walked = _join(walked, key)
        return copy.deepcopy(node)
    if isinstance(value, dict):
        return {k: _resolve_base_vars(v, placeholders, base, display) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_base_vars(v, placeholders, base, display) for v in value]
    if type(value) is tuple:
        return tuple(_resolve_base_vars(v, placeholders, base, display) for v in value)
    return value


def _strip_delete(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_delete(v) for k, v in value.items() if k != DELETE_KEY}
    if isinstance(value, list):
        return [_strip_delete(v) for v in value]
    if type(value) is tuple:
        return tuple(_strip_delete(v) for v in value)
    return value


def merge_dicts(child: dict, base: dict) -> dict:
    """``child`` merged into a copy of ``base``: dicts merge recursively unless the child's
    dict says ``_delete_=True``; every other value (lists included) replaces the base's."""
    merged = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) \
                and not value.get(DELETE_KEY, False):
            merged[key] = merge_dicts(value, merged[key])
        else:
            merged[key] = _strip_delete(value)
    return {k: v for k, v in merged.items() if k != DELETE_KEY}


class _Loaded:
    """The result of loading one file with its bases: the dict and the texts it came from."""

    def __init__(self, data: dict, texts: list[tuple[str, str]]):
        self.data = data
        self.texts = texts


def _load(filename: Path, included_by: str | None = None,
          stack: tuple[Path, ...] = ()) -> _Loaded:
    filename = Path(os.path.abspath(filename))
    _check_file(filename, included_by)
    if filename in stack:
        chain = ' -> '.join(_display(p) for p in stack + (filename,))
        raise ConfigError(f'circular _base_ inheritance: {chain}')
    suffix = filename.suffix.lower()
    if suffix not in SUPPORTED_EXTS:
        raise ConfigError(f'{filename}: unsupported config format {suffix!r}; use one of '
                          f'{", ".join(SUPPORTED_EXTS)}')
    try:
        text = filename.read_text(encoding='utf-8')
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f'cannot read config file {filename}: {e}') from None
    return _load_text(text, suffix, filename, _display(filename), filename.parent,
                      stack + (filename,))


def _load_text(text: str, suffix: str, filename: Path, display: str, base_dir: Path,
               stack: tuple[Path, ...]) -> _Loaded:
    parsed_text = _substitute_predefined(text, filename)
    parsed_text, placeholders = _placeholder_base_vars(parsed_text)
    data = _parse_text(parsed_text, suffix, filename, display)
    texts = []
    bases = data.pop(BASE_KEY, None)
    if bases is None:
        if placeholders:
            raise ConfigError(f'{display}: uses {{{{_base_...}}}} but has no _base_')
        texts.append((display, text))
        return _Loaded(_strip_delete(data), texts)

    if isinstance(bases, (str, os.PathLike)):
        bases = [bases]
    if not isinstance(bases, (list, tuple)) or not all(isinstance(b, (str, os.PathLike))
                                                       for b in bases):
        raise ConfigError(f'{display}: _base_ must be a path or a list of paths, got {bases!r}')
    merged_base: dict = {}
    owner: dict[str, str] = {}
    for base in bases:
        base_path = Path(base).expanduser()
        if not base_path.is_absolute():
            base_path = base_dir / base_path
        loaded = _load(base_path, included_by=display, stack=stack)
        for key in loaded.data:
            if key in owner:
                raise ConfigError(
                    f"{display}: key '{key}' is defined in two of its _base_ files: "
                    f'{owner[key]} and {_display(base_path)}; keep it in one of them')
            owner[key] = _display(base_path)
        merged_base.update(loaded.data)
        texts.extend(loaded.texts)
    if placeholders:
        data = _resolve_base_vars(data, placeholders, merged_base, display)
    texts.append((display, text))
    return _Loaded(merge_dicts(data, merged_base), texts)


# ====================================================================== Config
class Config:
    """A loaded config: a :class:`ConfigDict` plus the file it came from.

    Attribute and item access go to the dict (``cfg.model``, ``cfg['data']``); ``filename``,
    ``text`` and ``pretty_text`` are properties of the Config itself (a key with one of
    those names is refused).

    Args:
        cfg_dict: the config as a dict (nested dicts and lists).
        cfg_text: the source text(s) it was made from, for :attr:`text`.
        filename: the file it was loaded from, for messages and :meth:`dump`.
    """

    def __init__(self, cfg_dict: dict | None = None, cfg_text: str | None = None,
                 filename: str | os.PathLike | None = None):
        if cfg_dict is None:
            cfg_dict = {}
        elif isinstance(cfg_dict, Config):
            cfg_dict = cfg_dict._cfg_dict
        elif not isinstance(cfg_dict, dict):
            raise TypeError(f'cfg_dict must be a dict, got {type(cfg_dict).__name__}')
        for key in RESERVED_KEYS:
            if key in cfg_dict:
                raise ConfigError(f"'{key}' is a reserved name and cannot be a top-level key "
                                  f'of a config' + (f' ({filename})' if filename else ''))
        object.__setattr__(self, '_cfg_dict', ConfigDict(cfg_dict))
        object.__setattr__(self, '_filename', None if filename is None else str(filename))
        object.__setattr__(self, '_text', cfg_text)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def fromfile(cls, filename: str | os.PathLike, use_predefined_variables: bool = True,
                 import_custom_modules: bool = True) -> 'Config':
        """Load a ``.py``, ``.yaml``/``.yml`` or ``.json`` config with its ``_base_`` files.

        A Python config is executed (it is code: load only files you trust). When the config
        has ``custom_imports=dict(imports=[...], allow_failed_imports=False)`` and
        ``import_custom_modules`` is true, those modules are imported so that the classes
        they register can be named in the config.
        """
        del use_predefined_variables  # always on; kept for MMCV's signature
        path = Path(filename).expanduser()
        loaded = _load(path)
        text = '\n'.join(f'# {name}\n{body}' for name, body in loaded.texts)
        cfg = cls(loaded.data, cfg_text=text, filename=str(filename))
        if import_custom_modules and cfg.get('custom_imports'):
            import_modules_from_strings(cfg['custom_imports'], filename=cfg.filename)
        return cfg

    @classmethod
    def fromstring(cls, cfg_str: str, file_format: str = '.py',
                   import_custom_modules: bool = True) -> 'Config':
        """Load a config from text in the given format (``'.py'``, ``'.yaml'``, ``'.json'``).
        ``_base_`` paths in the text are relative to the current directory."""
        if not file_format.startswith('.'):
            file_format = '.' + file_format
        file_format = file_format.lower()
        if file_format not in SUPPORTED_EXTS:
            raise ConfigError(f'unsupported config format {file_format!r}; use one of '
                              f'{", ".join(SUPPORTED_EXTS)}')
        loaded = _load_text(cfg_str, file_format, Path('<string>'), '<string>',
                            Path(os.getcwd()), ())
        cfg = cls(loaded.data, cfg_text=cfg_str)
        if import_custom_modules and cfg.get('custom_imports'):
            import_modules_from_strings(cfg['custom_imports'])
        return cfg

    # ------------------------------------------------------------------ properties
    @property
    def filename(self) -> str | None:
        return self._filename

    @property
    def text(self) -> str:
        """The source text: each file (bases first) under a ``# path`` comment line."""
        return self._text if self._text is not None else self.pretty_text

    @property
    def pretty_text(self) -> str:
        """The resolved config as Python source that :meth:`fromstring` reloads to an equal
        dict (``dict(key=value)`` where the keys are identifiers, ``{...}`` otherwise)."""
        return format_python(self._cfg_dict.to_dict())

    # ------------------------------------------------------------------ dict behaviour
    def __getattr__(self, name: str):
        if name.startswith('__') and name.endswith('__'):
            raise AttributeError(name)
        try:
            return getattr(self._cfg_dict, name)
        except ConfigKeyError as e:
            where = f' ({self._filename})' if self._filename else ''
            raise ConfigKeyError(f'{e}{where}') from None

    def __setattr__(self, name: str, value):
        if name in RESERVED_KEYS:
            raise ConfigError(f"'{name}' is a reserved name and cannot be set as a config key")
        self._cfg_dict[name] = value

    def __delattr__(self, name: str):
        delattr(self._cfg_dict, name)

    def __getitem__(self, key):
        return self._cfg_dict[key]

    def __setitem__(self, key, value):
        if key in RESERVED_KEYS:
            raise ConfigError(f"'{key}' is a reserved name and cannot be set as a config key")
        self._cfg_dict[key] = value

    def __delitem__(self, key):
        del self._cfg_dict[key]

    def __contains__(self, key) -> bool:
        return key in self._cfg_dict

    def __iter__(self):
        return iter(self._cfg_dict)

    def __len__(self) -> int:
        return len(self._cfg_dict)

    def __eq__(self, other) -> bool:
        if isinstance(other, Config):
            other = other._cfg_dict
        return isinstance(other, dict) and self.to_dict() == _to_plain(other)

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        return f'Config (path: {self._filename}): {self._cfg_dict.to_dict()!r}'

    def __getstate__(self):
        return {'cfg_dict': self._cfg_dict, 'filename': self._filename, 'text': self._text}

    def __setstate__(self, state):
        object.__setattr__(self, '_cfg_dict', state['cfg_dict'])
        object.__setattr__(self, '_filename', state['filename'])
        object.__setattr__(self, '_text', state['text'])

    def __copy__(self):
        return Config(copy.copy(self._cfg_dict), self._text, self._filename)

    def __deepcopy__(self, memo):
        return Config(copy.deepcopy(self._cfg_dict, memo), self._text, self._filename)

    def keys(self):
        return self._cfg_dict.keys()

    def values(self):
        return self._cfg_dict.values()

    def items(self):
        return self._cfg_dict.items()

    def get(self, key, default=None):
        return self._cfg_dict.get(key, default)

    def setdefault(self, key, default=None):
        return self._cfg_dict.setdefault(key, default)

    def pop(self, key, *default):
        return self._cfg_dict.pop(key, *default)

    def update(self, *args, **kwargs):
        self._cfg_dict.update(*args, **kwargs)

    def copy(self) -> 'Config':
        """A deep copy: changing the copy never changes this config."""
        return copy.deepcopy(self)

    def to_dict(self) -> dict:
        """The config as plain nested ``dict``/``list``/``tuple`` values."""
        return self._cfg_dict.to_dict()

    # ------------------------------------------------------------------ overrides
    def merge_from_dict(self, options: dict, allow_list_keys: bool = True,
                        strict_top_level: bool | None = None) -> None:
        """Apply overrides given as ``{'dotted.key.path': value}`` (what ``--cfg-options``
        parses to). A number in the path indexes a list (``data.train.pipeline.2.img_scale``);
        a dict value is merged into an existing dict (``_delete_=True`` replaces it); a new
        key may be added to an existing dict. A path through a missing key, a value that is
        not a container, or a list index out of range raises :class:`ConfigError`.

        ``strict_top_level`` (the default for options parsed by :class:`DictAction`, i.e. the
        command line) refuses a top-level key that the config (with its bases) does not have
        and detforge does not read (``runnr.max_epochs=5``), with a did-you-mean; a key
        written with a leading ``+`` (``+my_key=1``) is added anyway.
        """
        if strict_top_level is None:
            strict_top_level = isinstance(options, CfgOptions)
        for full_key, value in options.items():
            full_key = str(full_key)
            explicit_new = full_key.startswith('+')
            full_key = full_key[1:] if explicit_new else full_key
            if strict_top_level and not explicit_new:
                self._check_top_level(full_key)
            self._merge_one(full_key, value, allow_list_keys)

    def _check_top_level(self, full_key: str) -> None:
        top = full_key.split('.', 1)[0]
        if top in self._cfg_dict or top in RUNTIME_KEYS:
            return
        hint = _suggest(top, list(self._cfg_dict.keys()) + sorted(RUNTIME_KEYS))
        raise ConfigError(f'override {full_key!r}: {top!r} is not a key of the config or of '
                          f'its bases, and detforge does not read it{hint} (to add a new '
                          f'top-level key on purpose, write +{full_key}=...)')

    def _merge_one(self, full_key: str, value: Any, allow_list_keys: bool) -> None:
        keys = full_key.split('.')
        if any(k == '' for k in keys):
            raise ConfigError(f'override {full_key!r}: empty key in the path')
        node: Any = self._cfg_dict
        walked = ''
        for i, key in enumerate(keys):
            last = i == len(keys) - 1
            if isinstance(node, (list, tuple)):
                if not allow_list_keys:
                    raise ConfigError(f'override {full_key!r}: {walked} is a list and list '
                                      'indices are not allowed here')
                if not re.fullmatch(r'-?\d+', key):
                    raise ConfigError(f'override {full_key!r}: {walked} is a list, so the next '
                                      f'key must be an index (0..{len(node) - 1}), got {key!r}')
                index = int(key)
                if not -len(node) <= index < len(node):
                    raise ConfigError(f'override {full_key!r}: index {index} is out of range: '
                                      f'{walked} has {len(node)} items (indices 0..{len(node) - 1})')
                if isinstance(node, tuple):
                    raise ConfigError(f'override {full_key!r}: {walked} is a tuple, which cannot '
                                      'be changed item by item; give the whole tuple instead')
                if last:
                    node[index] = _merged_value(node[index], value, _join(walked, key))
                    return
                node = node[index]
            elif isinstance(node, dict):
                if last:
                    if key not in node:
                        hint = _suggest(key, node.keys())
                        if hint and not type_accepts(node.get('type'), key):
                            warnings.warn(f'override {full_key!r} adds a new key {key!r} to '
                                          f'{walked or "the config"}{hint}', UserWarning,
                                          stacklevel=4)
                    node[key] = _merged_value(node.get(key), value, _join(walked, key))
                    return
                if key not in node:
                    # as MMCV: a path through missing keys creates the dicts on the way,
                    # unless the next key is an index (there is no list to index into)
                    if re.fullmatch(r'-?\d+', keys[i + 1]):
                        raise ConfigError(f'override {full_key!r}: {_join(walked, key)} does not '
                                          f'exist{_suggest(key, node.keys())}')
                    node[key] = {}
                node = node[key]
            else:
                raise ConfigError(f'override {full_key!r}: {walked} is a '
                                  f'{type(node).__name__} ({node!r}), not a dict or a list, so '
                                  f'it has no key {key!r}')
            walked = _join(walked, key)

    # ------------------------------------------------------------------ dump
    def dump(self, file: str | os.PathLike | None = None) -> str | None:
        """Write the resolved config to ``file`` (format from its extension: ``.py``,
        ``.yaml``/``.yml`` or ``.json``); without a file, return the text in the format of
        the file this config was loaded from (Python by default). YAML and JSON have no
        tuples: tuples are written as lists there."""
        if file is None:
            fmt = Path(self._filename).suffix.lower() if self._filename else '.py'
            return self._format(fmt if fmt in SUPPORTED_EXTS else '.py')
        path = Path(file)
        fmt = path.suffix.lower()
        if fmt not in SUPPORTED_EXTS:
            raise ConfigError(f'cannot dump a config to {path}: unsupported extension {fmt!r}; '
                              f'use one of {", ".join(SUPPORTED_EXTS)}')
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self._format(fmt), encoding='utf-8')
        return None

    def dumps(self, file_format: str = '.py') -> str:
        """The resolved config as text in ``file_format`` (``.py``, ``.yaml``, ``.json``)."""
        fmt = file_format.lower() if file_format.startswith('.') else '.' + file_format.lower()
        if fmt not in SUPPORTED_EXTS:
            raise ConfigError(f'unsupported config format {file_format!r}; use one of '
                              f'{", ".join(SUPPORTED_EXTS)}')
        return self._format(fmt)

    def _format(self, fmt: str) -> str:
        if fmt in PY_EXTS:
            return self.pretty_text
        data = _tuples_to_lists(self.to_dict())
        if fmt in JSON_EXTS:
            return json.dumps(data, indent=2) + '\n'
        import yaml
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)


def _merged_value(old: Any, new: Any, path: str) -> Any:
    if isinstance(new, dict) and isinstance(old, dict) and not new.get(DELETE_KEY, False):
        return merge_dicts(new, old)
    return _strip_delete(new)


def _tuples_to_lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _tuples_to_lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_tuples_to_lists(v) for v in value]
    return value


# ====================================================================== pretty text
_LINE_WIDTH = 100
_INDENT = '    '


def _is_identifier(key: Any) -> bool:
    return isinstance(key, str) and key.isidentifier() and not keyword.iskeyword(key)


def _format_scalar(value: Any) -> str:
    if hasattr(value, 'item') and hasattr(value, 'dtype') and getattr(value, 'ndim', 1) == 0:
        value = value.item()  # numpy / torch scalar
    if isinstance(value, float):
        if math.isnan(value):
            return "float('nan')"
        if math.isinf(value):
            return "float('inf')" if value > 0 else "-float('inf')"
        return repr(value)
    if isinstance(value, (str, int, bool, bytes, complex)) or value is None:
        return repr(value)
    if _is_importable_by_name(value):
        # a class or function given as a ``type=``: importable by its qualified name
        return f"__import__('importlib').import_module({value.__module__!r}).{value.__qualname__}"
    if hasattr(value, 'tolist'):
        return _format_value(value.tolist(), '')
    warnings.warn(f'pretty_text: {value!r} has no Python literal form; written as its repr',
                  UserWarning, stacklevel=3)
    return repr(repr(value))


def _is_importable_by_name(value: Any) -> bool:
    qualname = getattr(value, '__qualname__', '')
    return (isinstance(value, (type, types.FunctionType)) and '<' not in qualname
            and '.' not in qualname and bool(getattr(value, '__module__', None)))


def _format_value(value: Any, indent: str, prefix: int = 0) -> str:
    """``value`` as Python source; containers go on one line when they fit, else one item
    per line with a trailing comma."""
    if isinstance(value, dict):
        if all(_is_identifier(k) for k in value):
            items = [f'{k}={_format_value(v, indent + _INDENT, len(k) + 1)}'
                     for k, v in value.items()]
            open_, close = 'dict(', ')'
        else:
            items = [f'{_format_scalar(k)}: '
                     f'{_format_value(v, indent + _INDENT, len(_format_scalar(k)) + 2)}'
                     for k, v in value.items()]
            open_, close = '{', '}'
    elif isinstance(value, list):
        items = [_format_value(v, indent + _INDENT) for v in value]
        open_, close = '[', ']'
    elif type(value) is tuple:
        items = [_format_value(v, indent + _INDENT) for v in value]
        open_, close = '(', ')'
        if len(items) == 1:
            return f'({items[0]},)' if '\n' not in items[0] else \
                f'(\n{indent}{_INDENT}{items[0]},\n{indent})'
    else:
        return _format_scalar(value)
    one_line = open_ + ', '.join(items) + close
    if '\n' not in one_line and len(indent) + prefix + len(one_line) + 1 <= _LINE_WIDTH:
        return one_line
    body = ''.join(f'{indent}{_INDENT}{item},\n' for item in items)
    return f'{open_}\n{body}{indent}{close}'


def format_python(cfg: dict) -> str:
    """A config dict as a Python config file (one assignment per top-level key)."""
    lines = []
    for key, value in cfg.items():
        if _is_identifier(key):
            lines.append(f'{key} = {_format_value(value, "", len(key) + 3)}')
        else:  # e.g. a YAML key such as 'my-key': still reloads to the same dict
            lines.append(f'globals()[{key!r}] = {_format_value(value, "")}')
    return '\n'.join(lines) + '\n'


# ====================================================================== custom imports
def import_modules_from_strings(custom_imports: Any, filename: str | None = None) -> list:
    """Import the modules named in ``custom_imports=dict(imports=[...],
    allow_failed_imports=False)``, so that the classes they register become available.

    A module that cannot be imported raises :class:`ConfigError` (or warns, with
    ``allow_failed_imports=True``). When the import fails because the top-level package is
    not on ``sys.path``, the current directory is added and the import retried, so that a
    project's own package works from its root without installing it.
    """
    where = f' in {filename}' if filename else ''
    if isinstance(custom_imports, (str, list, tuple)):
        custom_imports = {'imports': custom_imports}
    if not isinstance(custom_imports, dict):
        raise ConfigError(f'custom_imports{where} must be dict(imports=[...]), '
                          f'got {custom_imports!r}')
    unknown = set(custom_imports) - {'imports', 'allow_failed_imports'}
    if unknown:
        raise ConfigError(f'custom_imports{where} has unknown keys {sorted(unknown)}; it accepts '
                          'imports and allow_failed_imports')
    names = custom_imports.get('imports', [])
    allow_failed = bool(custom_imports.get('allow_failed_imports', False))
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f'custom_imports.imports{where} must be a list of module names, '
                          f'got {names!r}')
    imported = []
    for name in names:
        try:
            imported.append(_import(name))
        except Exception as e:  # noqa: BLE001 - any import failure is reported the same way
            msg = (f'custom_imports{where}: cannot import {name!r}: {type(e).__name__}: {e} '
                   '(is the package installed, or is its folder the current directory?)')
            if allow_failed:
                warnings.warn(msg + '; skipped because allow_failed_imports=True',
                              UserWarning, stacklevel=3)
                imported.append(None)
            else:
                raise ConfigError(msg) from e
    return imported


def _import(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        cwd = os.getcwd()
        top = name.split('.')[0]
        if e.name != top or cwd in sys.path or '' in sys.path:
            raise
        sys.path.insert(0, cwd)
        return importlib.import_module(name)


# ====================================================================== --cfg-options
def _split_top_level(text: str) -> list[str]:
    """Split at commas that are not inside brackets or quotes."""
    parts, depth, quote, start = [], 0, '', 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ''
        elif ch in '\'"':
            quote = ch
        elif ch in '([{':
            depth += 1
        elif ch in ')]}':
            depth -= 1
        elif ch == ',' and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def parse_option_value(text: str) -> Any:
    """Turn the text of one ``--cfg-options`` value into a Python value.

    ``3`` -> 3, ``0.005`` -> 0.005, ``True``/``true`` -> True, ``None``/``null`` -> None,
    ``[8,11]`` -> [8, 11], ``(640,480)`` -> (640, 480), ``[(1,2),(3,4)]`` nested,
    ``"'abc'"`` -> 'abc', ``8,11`` -> [8, 11], ``[a,b]`` -> ['a', 'b'], anything else stays
    a string.
    """
    s = text.strip()
    lowered = s.lower()
    if lowered in ('true', 'false'):
        return lowered == 'true'
    if lowered in ('none', 'null'):
        return None
    try:
        value = ast.literal_eval(s)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        value = _NOT_LITERAL
    if value is not _NOT_LITERAL:
        if isinstance(value, tuple) and not (s.startswith('(') and s.endswith(')')):
            return list(value)  # "8,11": a bare comma list, as MMCV reads it
        return value
    if len(s) >= 2 and (s[0], s[-1]) in (('[', ']'), ('(', ')')):
        inner = s[1:-1].strip()
        items = [parse_option_value(p) for p in _split_top_level(inner)] if inner else []
        if inner.endswith(','):
            items = items[:-1]
        return items if s[0] == '[' else tuple(items)
    parts = _split_top_level(s)
    if len(parts) > 1:
        return [parse_option_value(p) for p in parts]
    return s


_NOT_LITERAL = object()


# top-level keys that detforge reads even where no config or base sets them
RUNTIME_KEYS = frozenset({
    'model', 'data', 'optimizer', 'optimizer_config', 'lr_config', 'momentum_config', 'runner',
    'checkpoint_config', 'log_config', 'evaluation', 'custom_hooks', 'workflow', 'work_dir',
    'load_from', 'resume_from', 'auto_resume', 'seed', 'deterministic', 'device', 'gpu_ids',
    'gpus', 'dist_params', 'log_level', 'fp16', 'amp', 'channels_last', 'cudnn_benchmark',
    'compile', 'auto_scale_lr', 'custom_imports', 'find_unused_parameters', 'broadcast_buffers',
    'opencv_num_threads', 'mp_start_method', 'plot_curves', 'total_epochs', 'train_cfg',
    'test_cfg', 'dataset_type', 'data_root', 'classes', 'img_norm_cfg', 'train_pipeline',
    'test_pipeline', 'launcher', 'persistent_workers',
})


class CfgOptions(dict):
    """``{'dotted.key': value}`` from the command line (``--cfg-options``): merged with a
    check of top-level keys (see :meth:`Config.merge_from_dict`)."""


class DictAction(argparse.Action):
    """argparse action for ``--cfg-options KEY=VALUE [KEY=VALUE ...]``.

    Collects a dict ``{'dotted.key': value}`` (values parsed by :func:`parse_option_value`)
    for :meth:`Config.merge_from_dict`. Giving the option twice adds to the same dict.
    """

    def __init__(self, option_strings, dest, nargs='+', **kwargs):
        super().__init__(option_strings, dest, nargs=nargs, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        options = CfgOptions(getattr(namespace, self.dest, None) or {})
        if isinstance(values, str):
            values = [values]
        for item in values:
            key, sep, value = item.partition('=')
            if not sep or not key.strip():
                parser.error(f'{option_string} expects KEY=VALUE pairs '
                             f'(e.g. model.bbox_head.num_classes=3), got {item!r}')
            options[key.strip()] = parse_option_value(value)
        setattr(namespace, self.dest, options)
