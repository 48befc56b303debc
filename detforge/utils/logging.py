"""The ``detforge`` logger and :func:`print_log`.

Every part of detforge logs through the logger named ``'detforge'`` (or its children,
``'detforge.engine'`` ...). :func:`get_root_logger` configures it once per process: a
console handler for everyone, a file handler on rank 0 only, and level ERROR on the other
ranks of a distributed run so that N processes do not print N copies of each line.
"""
from __future__ import annotations

import logging
import os
import sys

__all__ = ['get_root_logger', 'get_logger', 'print_log', 'get_rank']

LOGGER_NAME = 'detforge'
_FORMAT = '%(asctime)s - %(name)s - %(levelname)s - %(message)s'
_initialized: dict[str, bool] = {}


def get_rank() -> int:
    """The process rank: ``torch.distributed`` when initialised, else the env var ``RANK``
    (set by ``torchrun`` before the process group exists), else 0."""
    try:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    try:
        return int(os.environ.get('RANK', '0'))
    except ValueError:
        return 0


def _level(level: int | str) -> int:
    if isinstance(level, str):
        value = logging.getLevelName(level.upper())
        if not isinstance(value, int):
            raise ValueError(f'unknown log level {level!r}; use DEBUG, INFO, WARNING or ERROR')
        return value
    return int(level)


def get_logger(name: str = LOGGER_NAME, log_file: str | os.PathLike | None = None,
               log_level: int | str = 'INFO', file_mode: str = 'w') -> logging.Logger:
    """Configure and return the logger ``name``.

    The first call adds a console handler (stderr); a call with ``log_file`` on rank 0 adds
    a file handler (the file's folder is created). Later calls only change the level and
    add a file handler for a file not yet attached, so calling it from several places is
    harmless. Children of an initialised logger (``'detforge.engine'``) are returned as they
    are: they propagate to it.
    """
    logger = logging.getLogger(name)
    for parent in _initialized:
        if name.startswith(parent + '.'):
            return logger
    rank = get_rank()
    level = _level(log_level) if rank == 0 else logging.ERROR
    formatter = logging.Formatter(_FORMAT)

    if not _initialized.get(name):
        logger.propagate = False
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(formatter)
        logger.addHandler(stream)
        _initialized[name] = True

    if log_file is not None and rank == 0:
        path = os.path.abspath(os.fspath(log_file))
        attached = {getattr(h, 'baseFilename', None) for h in logger.handlers}
        if path not in attached:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            file_handler = logging.FileHandler(path, file_mode, encoding='utf-8')
            file_handler.setFormatter(formatter)
            logger.addHandler(file_handler)

    logger.setLevel(level)
    for handler in logger.handlers:
        handler.setLevel(level)
    return logger


def get_root_logger(log_file: str | os.PathLike | None = None,
                    log_level: int | str = 'INFO') -> logging.Logger:
    """The ``'detforge'`` logger; only rank 0 writes ``log_file``, other ranks log ERRORs only."""
    return get_logger(LOGGER_NAME, log_file=log_file, log_level=log_level)


def print_log(msg: str, logger: logging.Logger | str | None = None,
              level: int = logging.INFO) -> None:
    """Print ``msg`` through ``logger``.

    Args:
        logger: ``None`` prints to stdout; ``'silent'`` drops the message; a
            :class:`logging.Logger` or a logger name logs at ``level``.
    """
    if logger is None:
        print(msg)
    elif isinstance(logger, logging.Logger):
        logger.log(level, msg)
    elif logger == 'silent':
        return
    elif isinstance(logger, str):
        configured = any(logger == n or logger.startswith(n + '.') for n in _initialized)
        named = logging.getLogger(logger) if configured else get_logger(logger)
        named.log(level, msg)
    else:
        raise TypeError('logger must be None, "silent", a logging.Logger or a logger name, '
                        f'got {type(logger).__name__}')
