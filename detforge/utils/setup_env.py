"""Where and in which layout a model runs: the config's speed switches.

``channels_last = True``
    Convolution weights (and so their activations) in NHWC order. oneDNN on the CPU and
    cuDNN with AMP on recent GPUs run convolutions faster in it: measured on this project's
    2-core Xeon, -6% per RetinaNet-R50 training step and -8% per Faster R-CNN step
    (``benchmarks/README.md``). The weights are the same numbers; checkpoints load into
    either layout.
``cudnn_benchmark = True``
    ``torch.backends.cudnn.benchmark``: cuDNN times its algorithms for each new input shape
    and keeps the fastest. Pays off when shapes repeat (fixed-size or few-size batches); as
    in MMDetection, off by default.
``compile = dict(backend='inductor')``
    Training: the backbone, the neck and the dense heads' ``forward`` go through
    ``torch.compile`` (:mod:`detforge.models.compile_parts`; targets and losses stay eager);
    ``True`` means inductor. Off by default:
    measure it with ``benchmarks/bench_train_levers.py`` on your machine first.
"""
from __future__ import annotations

import torch
from torch import nn

from detforge.registry import BuildError

__all__ = ['model_to_device', 'setup_speed_switches']


def _flag(cfg, key: str) -> bool:
    value = cfg.get(key, False) if cfg is not None else False
    if not isinstance(value, bool):
        raise BuildError(f'{key} must be True or False, got {value!r}', key_path=[key],
                         filename=getattr(cfg, 'filename', None))
    return value


def setup_speed_switches(cfg) -> None:
    """Check the switches (the commands call this before anything is written) and turn on
    ``torch.backends.cudnn.benchmark`` when the config says ``cudnn_benchmark``."""
    from detforge.models.compile_parts import compile_options_from_config
    _flag(cfg, 'channels_last')
    compile_options_from_config(cfg)
    if _flag(cfg, 'cudnn_benchmark'):
        torch.backends.cudnn.benchmark = True


def model_to_device(model: nn.Module, device: str | torch.device, cfg=None) -> nn.Module:
    """``model`` on ``device``, in the memory layout ``cfg.channels_last`` asks for."""
    channels_last = _flag(cfg, 'channels_last')
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model
