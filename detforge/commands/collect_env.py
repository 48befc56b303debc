"""Print the versions and hardware that matter when reporting a problem.

    detforge collect-env
"""
from __future__ import annotations

import importlib
import os
import platform
import sys
from collections import OrderedDict

NAME = 'collect-env'
HELP = 'print python, torch, CUDA, CPU and library versions (for bug reports)'


def _version(module_name: str) -> str:
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - a broken install is information, not a crash
        return f'not available ({type(e).__name__})'
    return str(getattr(module, '__version__', 'installed (no __version__)'))


def _cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def collect_env() -> 'OrderedDict[str, str]':
    """What to paste into an issue: platform, Python, libraries, CUDA and GPUs."""
    env: 'OrderedDict[str, str]' = OrderedDict()
    env['sys.platform'] = sys.platform
    env['Python'] = sys.version.replace('\n', ' ')
    env['CPU'] = f'{_cpu_name()} ({os.cpu_count()} logical cores)'
    import torch
    env['PyTorch'] = torch.__version__
    env['PyTorch threads'] = str(torch.get_num_threads())
    cuda = torch.cuda.is_available()
    env['CUDA available'] = str(cuda)
    env['CUDA (torch built with)'] = str(torch.version.cuda)
    if cuda:
        for i in range(torch.cuda.device_count()):
            env[f'GPU {i}'] = torch.cuda.get_device_name(i)
        env['cuDNN'] = str(torch.backends.cudnn.version())
    env['TorchVision'] = _version('torchvision')
    env['NumPy'] = _version('numpy')
    env['OpenCV'] = _version('cv2')
    env['Pillow'] = _version('PIL')
    env['pycocotools'] = _version_dist('pycocotools')
    env['faster-coco-eval'] = _version('faster_coco_eval')
    env['matplotlib'] = _version('matplotlib')
    env['detforge'] = _version('detforge')
    return env


def _version_dist(dist_name: str) -> str:
    try:
        from importlib.metadata import version
        return version(dist_name)
    except Exception:  # noqa: BLE001
        return _version(dist_name)


def add_arguments(parser):
    del parser  # no options


def main(args):
    for key, value in collect_env().items():
        print(f'{key}: {value}')
    return 0
