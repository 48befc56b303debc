"""The ``detforge`` command line.

Each sub-command is a module in :mod:`detforge.commands` that defines::

    NAME = 'train'                 # the sub-command (default: module name with '_' -> '-')
    HELP = 'one line for --help'
    def add_arguments(parser): ...
    def main(args) -> int | None: ...

so adding a command never touches this file. Errors that are the user's (a bad config, a
missing file) are :class:`~detforge.registry.DetforgeError` and print as one clear message
instead of a traceback; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from detforge import __version__
from detforge.registry import DetforgeError


def _command_modules():
    import detforge.commands as pkg
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name.startswith('_'):
            continue
        yield importlib.import_module(f'detforge.commands.{info.name}')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='detforge',
        description='Train, evaluate and run object detectors from MMDetection-style configs.')
    parser.add_argument('--version', action='version', version=f'detforge {__version__}')
    parser.add_argument('--debug', action='store_true',
                        help='show the full traceback on errors')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    for module in _command_modules():
        name = getattr(module, 'NAME', module.__name__.rsplit('.', 1)[-1].replace('_', '-'))
        help_text = getattr(module, 'HELP', (module.__doc__ or '').strip().split('\n')[0])
        p = sub.add_parser(name, help=help_text, description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, '_run', None) is None:
        parser.print_help()
        return 1
    try:
        return int(args._run(args) or 0)
    except DetforgeError as e:
        if args.debug:
            raise
        print(f'detforge {args.command}: error: {e}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f'detforge {args.command}: interrupted', file=sys.stderr)
        return 130
    except BrokenPipeError:  # `detforge list-models | head`: the reader left; stop quietly
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == '__main__':
    raise SystemExit(main())
