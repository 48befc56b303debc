"""``file_client_args``: MMCV's storage backends. detforge reads from the local disk only, so
``dict(backend='disk')`` (or None) is accepted and any other backend is a build error rather
than a setting that is silently ignored."""
from __future__ import annotations

from detforge.registry import BuildError

__all__ = ['check_file_client_args']


def check_file_client_args(file_client_args, owner: str) -> None:
    """Raise :class:`BuildError` (key ``file_client_args``) unless the arguments name the
    local disk. ``owner`` says who got them (e.g. ``'LoadImageFromFile'``)."""
    if file_client_args is None:
        return
    backend = file_client_args.get('backend', 'disk') if isinstance(file_client_args, dict) \
        else None
    if backend != 'disk':
        raise BuildError(f"{owner}: file_client_args backend {backend!r} is not supported; "
                         "detforge reads files from the local disk only (remove "
                         "file_client_args or use dict(backend='disk'))", file_client_args,
                         key_path=['file_client_args'])
