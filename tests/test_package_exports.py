"""Package ``__init__`` files say where things live: each imports its modules explicitly.

Registries import their package lazily on first lookup (``docs/contracts.md``), so a module
that its package does not import registers nothing: a config naming its class fails. These
tests catch a module added to a registry package without the line that imports it.
"""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# the packages the registries load (detforge/registry.py ``locations``) and visualization
REGISTRY_PACKAGES = ('detforge.models', 'detforge.data', 'detforge.engine', 'detforge.evaluation',
                     'detforge.visualization')


def _registering_modules_under(package: str) -> list[str]:
    """The modules under ``package`` that register something (``register_module``); helper
    modules that register nothing may be imported lazily by the commands that use them."""
    root = REPO / package.replace('.', '/')
    names = []
    for path in sorted(root.rglob('*.py')):
        if 'register_module' not in path.read_text():
            continue
        rel = path.relative_to(REPO).with_suffix('')
        parts = list(rel.parts)
        if parts[-1] == '__init__':
            parts = parts[:-1]
        elif parts[-1].startswith('_'):
            continue
        names.append('.'.join(parts))
    return names


def test_importing_a_registry_package_imports_every_module_that_registers():
    """In a fresh interpreter, importing the packages imports every module under them that
    registers classes (else a class defined there is not registered when a config names it)."""
    code = ('import json, sys\n'
            + ''.join(f'import {p}\n' for p in REGISTRY_PACKAGES)
            + 'print(json.dumps(sorted(sys.modules)))')
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env,
                         check=True, cwd=REPO).stdout
    loaded = set(json.loads(out.strip().splitlines()[-1]))
    missing = [m for p in REGISTRY_PACKAGES for m in _registering_modules_under(p) if m not in loaded]
    assert not missing, (f'modules not imported by their package __init__ (add them there): '
                         f'{missing}')


def test_no_package_imports_its_modules_by_directory_listing():
    """``__init__`` files list their imports (no ``import_submodules``-style discovery), so
    that a reader sees where each exported name lives."""
    offenders = []
    for init in sorted((REPO / 'detforge').rglob('__init__.py')):
        tree = ast.parse(init.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, 'id', '') in (
                    'import_submodules', 'walk_packages', 'iter_modules'):
                offenders.append(str(init.relative_to(REPO)))
    assert not offenders, offenders


def test_exported_names_are_unique_and_defined_where_listed():
    """Each package's ``__all__`` names exist and no name is exported twice (one name, one
    place)."""
    import importlib
    for package in ('detforge.models.dense_heads', 'detforge.models.detectors',
                    'detforge.models.task_modules', 'detforge.models.losses',
                    'detforge.models.roi_heads', 'detforge.data.pipelines', 'detforge.evaluation'):
        mod = importlib.import_module(package)
        names = list(mod.__all__)
        assert len(names) == len(set(names)), (package, [n for n in names if names.count(n) > 1])
        for name in names:
            assert hasattr(mod, name), (package, name)
