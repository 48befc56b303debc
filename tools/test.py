"""Test a checkpoint: the same as ``detforge test`` (see ``detforge test --help``)."""
import sys

from detforge.cli import main

if __name__ == '__main__':
    sys.exit(main(['test', *sys.argv[1:]]))
