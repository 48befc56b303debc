"""Train a detector: the same as ``detforge train`` (see ``detforge train --help``)."""
import sys

from detforge.cli import main

if __name__ == '__main__':
    sys.exit(main(['train', *sys.argv[1:]]))
