"""Where evaluation messages go: ``print_log`` of detforge.utils.logging when it exists."""
from __future__ import annotations

import logging


def print_log(msg: str, logger=None, level: int = logging.INFO) -> None:
    """Print ``msg`` (``logger=None``), send it to a logger (object or name), or drop it
    (``logger='silent'``)."""
    try:
        from detforge.utils.logging import print_log as _project_print_log
    except ImportError:
        _project_print_log = None
    if _project_print_log is not None:
        _project_print_log(msg, logger=logger, level=level)
        return
    if logger is None:
        print(msg)
    elif logger == 'silent':
        return
    elif isinstance(logger, logging.Logger):
        logger.log(level, msg)
    elif isinstance(logger, str):
        logging.getLogger(logger).log(level, msg)
    else:
        raise TypeError(f'logger must be a logging.Logger, a name, "silent" or None, '
                        f'got {logger!r}')
