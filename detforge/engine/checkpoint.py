"""Saving and loading checkpoints.

A checkpoint is a dict written with ``torch.save``::

    {'meta': {'epoch', 'iter', 'config' (text), 'CLASSES', 'detforge_version',
              'torch_version', 'time', ...},
     'state_dict': model weights (CPU tensors),
     'optimizer': optimizer state,
     'rng_state': torch / numpy / python RNG states (tensors and lists),
     'loader_state': {'epoch', 'pos'}, 'hooks': {HookName: state}}   # runner checkpoints

Only types that ``torch.load(weights_only=True)`` accepts go in (tensors, numbers, strings,
lists, tuples, dicts), so loading never runs code from the file.
Writes are atomic: the bytes go to a temporary file in the same folder, are fsync'ed and
then renamed over the target, so a process killed mid-write leaves the previous file intact.
"""
from __future__ import annotations

import contextlib
import glob
import logging
import os
import os.path as osp
import random
import re
import shutil
import tempfile
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from torch import nn

from detforge.registry import DetforgeError

from .checkpoint_formats import is_safetensors, load_weights_file, save_safetensors
from .dist_utils import unwrap_model

__all__ = ['save_checkpoint', 'load_checkpoint', 'load_state_dict', 'find_latest_checkpoint',
           'atomic_torch_save', 'get_state_dict', 'weights_to_cpu', 'get_rng_state',
           'set_rng_state', 'preserve_rng', 'to_weights_only', 'read_checkpoint',
           'LoadReport', 'summarize_load_from', 'CheckpointWriteError', 'UnsafeCheckpointError',
           'remove_stale_temporaries', 'TRUST_ENV']

_log = logging.getLogger('detforge.engine')


# ---------------------------------------------------------------------- writing
def weights_to_cpu(state_dict: dict) -> OrderedDict:
    return OrderedDict((k, v.detach().cpu()) for k, v in state_dict.items())


def get_state_dict(model: nn.Module) -> OrderedDict:
    """The weights of ``model`` with any DDP wrapper removed (no ``module.`` prefix)."""
    return weights_to_cpu(unwrap_model(model).state_dict())


def to_weights_only(obj: Any) -> Any:
    """Convert ``obj`` to types that ``torch.load(weights_only=True)`` accepts:
    numpy arrays become tensors, numpy scalars Python numbers, sets lists, and other
    objects their ``str``."""
    if obj is None or type(obj) in (bool, int, float, str) or isinstance(
            obj, (torch.Tensor, torch.Size, torch.dtype, torch.device)):
        return obj
    for plain in (str, bool, int, float):  # subclasses (TorchVersion, IntEnum) -> plain
        if isinstance(obj, plain):
            return plain(obj)
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        out = OrderedDict() if isinstance(obj, OrderedDict) else {}
        for key, value in obj.items():
            out[key if type(key) in (int, str) else str(key)] = to_weights_only(value)
        return out
    if isinstance(obj, (list, tuple, set)):
        items = [to_weights_only(v) for v in obj]
        return tuple(items) if isinstance(obj, tuple) else items
    return str(obj)


class CheckpointWriteError(DetforgeError):
    """A checkpoint could not be written (disk full, no permission); the previous one is
    intact."""


def _tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in a nested checkpoint dict (what ``torch.save`` writes, roughly)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def _is_out_of_space(error: BaseException, needed: int, free: int | None) -> bool:
    """ENOSPC / EDQUOT, or torch's zip writer failing (``[enforce fail at
    inline_container.cc] ... file write failed``) while the file system has less free
    space than the checkpoint needs."""
    import errno
    for e in (error, error.__cause__, error.__context__):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
    text = str(error)
    if 'No space left' in text or 'Disk quota' in text:
        return True
    return isinstance(error, RuntimeError) and ('write failed' in text or 'enforce fail' in text) \
        and free is not None and free < needed


def _write_error(error: BaseException, filename: str, folder: str, needed: int) -> DetforgeError:
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    mb = 1 << 20
    if _is_out_of_space(error, needed, free):
        space = f'{free / mb:.0f} MB free' if free is not None else 'no free space'
        return CheckpointWriteError(
            f'disk full: cannot write checkpoint {filename}: it needs about {needed / mb:.0f} MB '
            f'and {folder} has {space}; the previous checkpoint is intact; free some space (or '
            f'choose another --work-dir) and continue with --auto-resume')
    reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    return CheckpointWriteError(f'cannot write checkpoint {filename}: {reason[:200]}; the '
                                f'previous checkpoint is intact')


def atomic_torch_save(obj: Any, filename: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``filename``, fsync, then rename over it.

    A failed write (disk full, I/O error) removes the temporary file and raises
    :class:`CheckpointWriteError` in one line: where, how much the checkpoint needs and how
    much space is free.
    """
    filename = os.fspath(filename)
    folder = osp.dirname(osp.abspath(filename))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{osp.basename(filename)}.', suffix='.tmp', dir=folder)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filename)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(e, (OSError, RuntimeError)):
            raise _write_error(e, filename, folder, _tensor_bytes(obj)) from e
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


_STALE_TMP_RE = re.compile(r'^\..+\.(pth|safetensors)\.(link|[A-Za-z0-9_]+)\.tmp$')


def remove_stale_temporaries(folder: str | os.PathLike, logger: logging.Logger | None = None
                             ) -> list[str]:
    """Delete the temporary files that interrupted saves (a kill mid-write) left in
    ``folder`` (``.epoch_3.pth.k2j4x9.tmp``, ``.latest.pth.link.tmp``); return their paths.
    Call it when a run starts, before this run writes anything there."""
    folder = os.fspath(folder)
    if not osp.isdir(folder):
        return []
    removed, size = [], 0
    for name in sorted(os.listdir(folder)):
        path = osp.join(folder, name)
        if _STALE_TMP_RE.match(name) and (osp.isfile(path) or osp.islink(path)):
            with contextlib.suppress(OSError):
                size += os.lstat(path).st_size
                os.remove(path)
                removed.append(path)
    if removed:
        (logger or _log).info('removed %d stale temporary checkpoint file%s (%.1f MB) left in %s '
                              'by an interrupted save', len(removed), 's' * (len(removed) != 1),
                              size / (1 << 20), folder)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_checkpoint(model: nn.Module, filename: str | os.PathLike, optimizer=None,
                    meta: dict | None = None, **extra_states) -> None:
    """Write ``{'meta', 'state_dict', 'optimizer', **extra_states}`` atomically.

    A ``filename`` ending in ``.safetensors`` gets the weights and ``meta`` only, in the
    safetensors format (see :mod:`detforge.engine.checkpoint_formats`).
    ``optimizer`` is an optimizer or a dict of them. ``extra_states`` are stored under their
    own keys (e.g. ``rng_state=...``) after conversion to weights-only types.
    """
    if meta is not None and not isinstance(meta, dict):
        raise TypeError(f'meta must be a dict or None, got {type(meta).__name__}')
    import detforge
    meta = dict(meta or {})
    meta.setdefault('detforge_version', detforge.__version__)
    meta.setdefault('torch_version', str(torch.__version__))
    import time
    meta.setdefault('time', time.asctime())
    if is_safetensors(filename):  # weights and meta only: a file to share, not to resume
        save_safetensors(get_state_dict(model), filename, meta)
        return
    checkpoint: dict[str, Any] = {'meta': to_weights_only(meta),
                                  'state_dict': get_state_dict(model)}
    if isinstance(optimizer, torch.optim.Optimizer):
        checkpoint['optimizer'] = optimizer.state_dict()
    elif isinstance(optimizer, dict):
        checkpoint['optimizer'] = {name: optim.state_dict() for name, optim in optimizer.items()}
    for key, value in extra_states.items():
        checkpoint[key] = to_weights_only(value)
    atomic_torch_save(checkpoint, filename)


# ---------------------------------------------------------------------- reading
TRUST_ENV = 'DETFORGE_TRUSTED_CHECKPOINTS'


class UnsafeCheckpointError(DetforgeError):
    """A checkpoint pickles objects other than tensors and plain containers."""


def _refused_global(text: str) -> str | None:
    """The global that ``torch.load(weights_only=True)`` refused, from its message, or
    ``None`` when the error was something else (a truncated file)."""
    for pattern in (r'Unsupported global: GLOBAL ([\w.]+)', r'unsupported GLOBAL ([\w.]+)',
                    r'reduce for unrecognized function ([^\s,;]+)', r'GLOBAL ([\w.]+)'):
        m = re.search(pattern, text)
        if m:
            return m.group(1).rstrip('.')
    return None


def _trusted(filename: str) -> bool:
    """Whether the user listed ``filename`` in ``$DETFORGE_TRUSTED_CHECKPOINTS`` (paths
    separated by ``os.pathsep``) to allow full unpickling of it."""
    listed = [p for p in os.environ.get(TRUST_ENV, '').split(os.pathsep) if p]
    real = osp.realpath(filename)
    return any(osp.realpath(p) == real for p in listed)


def read_checkpoint(filename: str | os.PathLike, map_location: str | torch.device = 'cpu',
                    weights_only: bool = True) -> dict:
    """Load a checkpoint file or URI (``torchvision://``, ``http(s)://``) as a dict.

    With ``weights_only`` (the default) a file that pickles anything but tensors and plain
    containers raises :class:`UnsafeCheckpointError` naming the refused global; a file listed
    in ``$DETFORGE_TRUSTED_CHECKPOINTS`` (or ``weights_only=False``) is fully unpickled.
    """
    filename = os.fspath(filename)
    if re.match(r'^[a-z0-9+-]+://', filename):
        from detforge.models.pretrained import load_pretrained_state_dict
        return {'state_dict': load_pretrained_state_dict(filename, map_location=map_location)}
    if not osp.isfile(filename):
        raise DetforgeError(f'checkpoint {filename} does not exist')
    if weights_only and _trusted(filename):
        _log.warning('loading %s with full unpickling: it is listed in $%s', filename, TRUST_ENV)
        weights_only = False
    try:
        checkpoint = load_weights_file(filename, map_location, weights_only)
    except DetforgeError:
        raise
    except Exception as e:  # noqa: BLE001 - the message must name the file and the cause
        text = str(e)
        offending = _refused_global(text) if weights_only else None
        if offending is not None:
            raise UnsafeCheckpointError(
                f'checkpoint {filename} holds Python objects that would run code when '
                f'unpickled (global {offending}), so it was not loaded. Load only files you '
                f'trust; to load this one, set {TRUST_ENV}={osp.abspath(filename)} (see '
                f'docs/bad_input.md), or re-save its "state_dict" as plain tensors') from None
        reason = re.search(r'WeightsUnpickler error: \s*(.+)', text)
        reason = reason.group(1).strip() if reason else (
            text.strip().splitlines()[0] if text.strip() else type(e).__name__)
        raise DetforgeError(f'checkpoint {filename} cannot be read: {reason[:200]} (a truncated '
                            f'or corrupt file?)') from e
    if not isinstance(checkpoint, dict):
        raise DetforgeError(f'checkpoint {filename} holds a {type(checkpoint).__name__}, '
                            f'expected a dict of weights')
    return checkpoint


class LoadReport:
    """What :func:`load_state_dict` did: keys loaded, missing, unexpected, shape mismatched."""

    def __init__(self, loaded, missing, unexpected, mismatched):
        self.loaded: list[str] = loaded
        self.missing: list[str] = missing
        self.unexpected: list[str] = unexpected
        self.mismatched: list[tuple[str, tuple, tuple]] = mismatched

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        def some(keys):
            keys = list(keys)
            return ', '.join(keys[:8]) + (f', ... ({len(keys)} in all)' if len(keys) > 8 else '')
        lines = [f'loaded {len(self.loaded)} tensors']
        if self.mismatched:
            lines.append('shape mismatch (skipped): ' + some(
                f'{k} checkpoint {tuple(a)} vs model {tuple(b)}' for k, a, b in self.mismatched))
        if self.missing:
            lines.append('missing in the checkpoint: ' + some(self.missing))
        if self.unexpected:
            lines.append('unexpected in the checkpoint: ' + some(self.unexpected))
        return '; '.join(lines)


def load_state_dict(module: nn.Module, state_dict: dict, strict: bool = False,
                    logger: logging.Logger | None = None, log_report: bool = True) -> LoadReport:
    """Copy matching tensors into ``module``; skip and report the rest.

    Tensors whose shape differs from the model's (e.g. a classifier for another number of
    classes) are skipped, not an error, unless ``strict``.
    """
    module = unwrap_model(module)
    own = module.state_dict()
    usable, mismatched = OrderedDict(), []
    for key, value in state_dict.items():
        if key in own and isinstance(value, torch.Tensor):
            if value.shape != own[key].shape:
                mismatched.append((key, tuple(value.shape), tuple(own[key].shape)))
                continue
            usable[key] = value
    result = module.load_state_dict(usable, strict=False)
    missing = [k for k in result.missing_keys]
    unexpected = [k for k in state_dict if k not in own]
    report = LoadReport(list(usable), missing, unexpected, mismatched)
    if strict and not report.ok:
        raise DetforgeError(f'the weights do not fit the model exactly: {report}')
    if not report.ok and log_report:
        (logger or _log).warning('load_state_dict: %s', report)
    return report


def load_checkpoint(model: nn.Module, filename: str | os.PathLike,
                    map_location: str | torch.device = 'cpu', strict: bool = False,
                    logger: logging.Logger | None = None,
                    revise_keys=((r'^module\.', ''),), weights_only: bool = True,
                    log_report: bool = True) -> dict:
    """Load the weights of a checkpoint into ``model`` and return the checkpoint dict.

    Accepts files written by detforge and MMDetection (``state_dict``), Detectron2
    (``model``) and bare state dicts. ``revise_keys`` are ``(pattern, replacement)``
    regexes applied to each key. The :class:`LoadReport` is stored under ``'load_report'``.
    A file that shares no tensor with the model raises :class:`DetforgeError`.
    """
    checkpoint = read_checkpoint(filename, map_location, weights_only)
    if 'state_dict' in checkpoint:
        state_dict = checkpoint['state_dict']
    elif 'model' in checkpoint and isinstance(checkpoint['model'], dict):
        state_dict = checkpoint['model']
    else:
        state_dict = checkpoint
    for pattern, repl in revise_keys:
        state_dict = OrderedDict((re.sub(pattern, repl, k), v) for k, v in state_dict.items())
    model_keys = set(unwrap_model(model).state_dict())
    if model_keys and not model_keys.intersection(state_dict):
        example = next(iter(state_dict), '(empty)')
        raise DetforgeError(
            f'checkpoint {os.fspath(filename)} does not fit this model: none of its '
            f'{len(state_dict)} tensors (e.g. {example!r}) has a name the model knows '
            f'(e.g. {sorted(model_keys)[0]!r}); is it a checkpoint of another architecture?')
    report = load_state_dict(model, state_dict, strict=strict, logger=logger,
                             log_report=log_report)
    checkpoint['load_report'] = report
    return checkpoint


def summarize_load_from(filename: str, checkpoint: dict) -> tuple[int, str]:
    """``(log level, one line)`` saying what ``load_from`` kept, for fine-tuning a zoo model.

    Tensors skipped for a shape that differs only in its first dimension are the
    class-specific layers (classifier outputs: ``num_classes`` or ``num_classes + 1`` rows,
    times anchors); they keep the model's fresh initialisation. That case is reported at
    INFO; keys missing from, or unknown to, the model at WARNING.
    """
    report: LoadReport = checkpoint['load_report']
    total = len(report.loaded) + len(report.mismatched)
    parts = [f'load_from {filename}: kept {len(report.loaded)} of {total} tensors']
    per_class = [(k, a, b) for k, a, b in report.mismatched
                 if len(a) == len(b) and a[1:] == b[1:]]
    other = [m for m in report.mismatched if m not in per_class]
    if per_class:
        classes = (checkpoint.get('meta') or {}).get('CLASSES')
        where = f' (the checkpoint has {len(classes)} classes)' if classes else ''
        parts.append('re-initialised the class-specific layers for this model\'s classes'
                     + where + ': ' + ', '.join(f'{k} {a[0]}->{b[0]}' for k, a, b in per_class))
    if other:
        parts.append('skipped for shape: ' + ', '.join(f'{k} {a}->{b}' for k, a, b in other[:4]))
    missing = [k for k in report.missing if k not in {m[0] for m in report.mismatched}]
    if missing:
        parts.append(f'{len(missing)} missing (e.g. {", ".join(missing[:3])})')
    if report.unexpected:
        parts.append(f'{len(report.unexpected)} unexpected (e.g. '
                     f'{", ".join(report.unexpected[:3])})')
    level = logging.WARNING if (missing or report.unexpected or other) else logging.INFO
    return level, '; '.join(parts)


_CKPT_RE = re.compile(r'^(epoch|iter)_(\d+)\.pth$')


def find_latest_checkpoint(work_dir: str | os.PathLike, suffix: str = 'pth') -> str | None:
    """The newest complete checkpoint in ``work_dir`` (``latest.pth`` if it is there and
    readable, else the highest ``epoch_N`` / ``iter_N``), or ``None``.

    Temporary files of an interrupted save never match, and an unreadable file is skipped
    in favour of the next older one.
    """
    work_dir = os.fspath(work_dir)
    if not osp.isdir(work_dir):
        return None
    candidates = []
    latest = osp.join(work_dir, f'latest.{suffix}')
    if osp.exists(latest):
        candidates.append(latest)
    numbered = []
    for path in glob.glob(osp.join(work_dir, f'*.{suffix}')):
        m = _CKPT_RE.match(osp.basename(path))
        if m:
            numbered.append((int(m.group(2)), path))
    candidates += [p for _, p in sorted(numbered, reverse=True)]
    for path in candidates:
        try:
            torch.load(path, map_location='cpu', weights_only=True, mmap=True)
        except Exception:  # noqa: BLE001 - a broken file is skipped, older ones are tried
            _log.warning('skipping unreadable checkpoint %s', path)
            continue
        return osp.realpath(path) if osp.islink(path) else path
    return None


def link_or_copy(src: str, dst: str) -> None:
    """Point ``dst`` at ``src`` (a relative symlink, replaced atomically); copy where
    symlinks are not possible."""
    folder = osp.dirname(osp.abspath(dst))
    tmp = osp.join(folder, f'.{osp.basename(dst)}.link.tmp')
    with contextlib.suppress(OSError):
        os.remove(tmp)
    try:
        os.symlink(osp.basename(src) if osp.dirname(osp.abspath(src)) == folder else
                   osp.abspath(src), tmp)
        os.replace(tmp, dst)
    except OSError:
        fd, tmp = tempfile.mkstemp(prefix=f'.{osp.basename(dst)}.', suffix='.tmp', dir=folder)
        os.close(fd)
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)


# ---------------------------------------------------------------------- RNG states
def get_rng_state() -> dict:
    """torch (CPU and CUDA), numpy and Python ``random`` states as weights-only types."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        'torch': torch.get_rng_state(),
        'numpy': [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        'python': [py_state[0], torch.tensor(py_state[1], dtype=torch.int64),
                   py_state[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    if 'torch' in state:
        torch.set_rng_state(state['torch'])
    if 'numpy' in state:
        name, keys, pos, has_gauss, cached = state['numpy']
        np.random.set_state((name, np.asarray(keys).astype(np.uint32), int(pos), int(has_gauss),
                             float(cached)))
    if 'python' in state:
        version, internal, gauss_next = state['python']
        random.setstate((version, tuple(int(x) for x in internal.tolist()), gauss_next))
    if 'cuda' in state and torch.cuda.is_available() and \
            len(state['cuda']) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state['cuda'])


@contextlib.contextmanager
def preserve_rng():
    """Run a block without changing the torch / numpy / Python RNG states outside it
    (evaluation inside training, or re-creating a loader on resume)."""
    state = get_rng_state()
    try:
        yield
    finally:
        set_rng_state(state)
