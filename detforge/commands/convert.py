"""Convert datasets and checkpoints: ``detforge convert KIND ...``.

Each converter is a module in :mod:`detforge.converters` defining ``NAME`` (e.g.
``'voc2coco'``), ``HELP``, ``add_arguments(parser)`` and ``main(args)``.
"""
import importlib
import pkgutil

HELP = ('convert datasets (voc2coco, to-coco, to-yolo, to-labelme), checkpoints (torchvision-retinanet, '
        'detectron2, ...) and Detectron2 configs (d2-config)')


def _converters():
    import detforge.converters as pkg
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if not info.name.startswith('_'):
            yield importlib.import_module(f'detforge.converters.{info.name}')


def add_arguments(parser):
    sub = parser.add_subparsers(dest='kind', metavar='KIND', required=True)
    for module in _converters():
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.__doc__)
        module.add_arguments(p)
        p.set_defaults(_convert=module.main)


def main(args):
    return args._convert(args)
