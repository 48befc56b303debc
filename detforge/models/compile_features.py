"""``torch.compile`` of a detector's feature extractor (backbone and neck), in place.

The backbone and the neck are pure tensor programs (convolutions, norms, activations,
additions, resizes) that TorchDynamo captures whole; the heads and their post-processing
(anchor assignment, top-k of a data-dependent size, NMS, Python lists of per-image results)
break the graph many times and recompile for every new number of boxes, so they stay eager.
That split is also where the time is: on the BCCD-320 RetinaNet-R18 the backbone and neck
hold most of the convolution work.

Each part is compiled with ``nn.Module.compile`` (the module's ``__call__`` goes through
``torch.compile``; the module itself, its parameters and its ``state_dict`` keys are
unchanged, so checkpoints save and load as before). Compilation happens lazily at the first
call with a new input shape (TorchInductor on the CPU: tens of seconds per shape on a
2-core machine); with ``dynamic=None`` a second shape recompiles once for symbolic shapes.

Example::

    >>> model = init_detector(cfg, ckpt, fuse=True, compile=True)    # inference
    >>> compile_feature_extractor(model, backend='inductor')          # or by hand

For training, the config key ``compile = dict(backend='inductor')`` does the same before the
runner is built (see :func:`compile_options_from_config`).
"""
from __future__ import annotations

from torch import nn

from detforge.registry import BuildError, DetforgeError

__all__ = ['COMPILED_PARTS', 'INFERENCE_COMPILE', 'compile_feature_extractor', 'compile_options_from_config']

#: the attributes of a detector that are compiled, in this order, when present
COMPILED_PARTS = ('backbone', 'neck')

#: ``init_detector(..., compile=True)``: TorchInductor with the weights frozen into the graph
#: (constant-folded, oneDNN convolution weights packed once), the CPU inference setting
#: PyTorch recommends; valid because inference runs under ``torch.inference_mode``
INFERENCE_COMPILE = dict(backend='inductor', options={'freezing': True})

#: ``torch.compile`` keyword arguments a ``compile=dict(...)`` may give
_COMPILE_KEYS = ('backend', 'mode', 'dynamic', 'fullgraph', 'options')


def compile_feature_extractor(model: nn.Module, backend: str = 'inductor', mode: str | None = None,
                              dynamic: bool | None = None, fullgraph: bool = False,
                              options: dict | None = None) -> nn.Module:
    """Compile ``model.backbone`` and ``model.neck`` (when present) with ``torch.compile``.

    Args:
        model: a detector (or any module with a ``backbone`` attribute).
        backend: ``torch.compile``'s backend: ``'inductor'`` (generated C++/OpenMP kernels
            and oneDNN convolutions on the CPU), ``'aot_eager'`` or ``'eager'`` (graph
            capture only: checks that the parts compile, no speed-up).
        mode: ``torch.compile``'s mode (``None``, ``'max-autotune'``, ...).
        dynamic: ``None`` (static first, symbolic shapes after a recompile), ``True`` or
            ``False`` (a recompile per input shape).
        fullgraph: refuse graph breaks (an error instead of a silently split graph).
        options: inductor options, e.g. ``{'freezing': True}`` for inference (weights
            folded as constants; only under ``torch.no_grad``/``inference_mode``).

    Returns:
        ``model``, in place, with ``model.compiled_parts`` the names of the compiled parts.
    """
    import torch  # noqa: F401 - torch.compile's import is heavy; keep it off module import
    parts = [name for name in COMPILED_PARTS if isinstance(getattr(model, name, None), nn.Module)]
    if 'backbone' not in parts:
        raise DetforgeError(f'{type(model).__name__} has no backbone module to compile')
    if getattr(model, 'compiled_parts', None):
        raise DetforgeError(f'{type(model).__name__} is already compiled '
                            f'({", ".join(model.compiled_parts)})')
    for name in parts:
        getattr(model, name).compile(backend=backend, mode=mode, dynamic=dynamic,
                                     fullgraph=fullgraph, options=options)
    model.compiled_parts = tuple(parts)
    return model


def _known_backends() -> list[str]:
    """``torch.compile``'s registered backends, the debugging ones (``eager``,
    ``aot_eager``) included."""
    import torch._dynamo
    return sorted(set(torch._dynamo.list_backends(exclude_tags=())) | {'eager', 'aot_eager'})


def compile_options_from_config(cfg) -> dict | None:
    """The config's ``compile`` key as keyword arguments of
    :func:`compile_feature_extractor`, or ``None`` when it is absent or ``False``.

    ``compile = True`` means ``dict(backend='inductor')``; a dict may give ``backend``,
    ``mode``, ``dynamic``, ``fullgraph`` and ``options``. Anything else is a
    :class:`BuildError` naming the key.
    """
    value = cfg.get('compile', None) if cfg is not None else None
    filename = getattr(cfg, 'filename', None)
    if value is None or value is False:
        return None
    if value is True:
        return dict(backend='inductor')
    if not isinstance(value, dict):
        raise BuildError(f'compile must be True, False or a dict of torch.compile options, got '
                         f'{value!r}', key_path=['compile'], filename=filename)
    unknown = sorted(set(value) - set(_COMPILE_KEYS))
    if unknown:
        raise BuildError(f'unknown key {unknown[0]!r}; expected some of {", ".join(_COMPILE_KEYS)}',
                         key_path=['compile', unknown[0]], filename=filename)
    backend = value.get('backend', 'inductor')
    known = _known_backends()
    if not isinstance(backend, str) or backend not in known:
        raise BuildError(f'backend must be a torch.compile backend ({", ".join(known)}), got '
                         f'{backend!r}', key_path=['compile', 'backend'], filename=filename)
    if value.get('dynamic', None) not in (None, True, False):
        raise BuildError(f"dynamic must be None, True or False, got {value['dynamic']!r}",
                         key_path=['compile', 'dynamic'], filename=filename)
    if value.get('options') is not None and not isinstance(value['options'], dict):
        raise BuildError(f"options must be a dict of inductor options, got {value['options']!r}",
                         key_path=['compile', 'options'], filename=filename)
    return dict(value, backend=backend)
