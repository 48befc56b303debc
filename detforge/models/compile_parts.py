"""``torch.compile`` of a detector's tensor parts (backbone, neck, dense heads' forward), in place.

The backbone, the neck and a dense head's ``forward`` (its conv towers and predictor convs,
``head(feats) -> (cls_scores, bbox_preds[, ...])``) are pure tensor programs that TorchDynamo
captures whole, one graph each. What follows the head's ``forward`` (anchor assignment and
losses in training; decoding, top-k of a data-dependent size and NMS in inference) breaks
graphs and would recompile for every new number of boxes, so it stays eager: it runs in the
head's other methods (``loss``, ``get_bboxes``), which ``nn.Module.compile`` leaves alone. A
two-stage detector's RPN head is compiled the same way; its RoI head stays eager.

Each part is compiled with ``nn.Module.compile`` (the module's ``__call__`` goes through
``torch.compile``; the module itself, its parameters and its ``state_dict`` keys are
unchanged, so checkpoints save and load as before). Compilation happens lazily at the first
call with a new input shape (TorchInductor on the CPU: tens of seconds to minutes per shape
on a 2-core machine); with ``dynamic=None`` a second shape recompiles once for symbolic
shapes.

Example::

    >>> model = init_detector(cfg, ckpt, fuse=True, compile=True)    # inference
    >>> compile_detector_parts(model, backend='inductor')          # or by hand

For training, the config key ``compile = dict(backend='inductor')`` does the same before the
runner is built (see :func:`compile_options_from_config`).
"""
from __future__ import annotations

from torch import nn

from detforge.registry import BuildError, DetforgeError

__all__ = ['COMPILED_PARTS', 'INFERENCE_COMPILE', 'compile_detector_parts',
           'compile_options_from_config']

#: the attributes of a detector that are compiled, in this order, when present (the heads
#: only when they are dense heads, see :func:`_is_dense_head`)
COMPILED_PARTS = ('backbone', 'neck', 'rpn_head', 'bbox_head')

#: ``init_detector(..., compile=True)``: TorchInductor with the weights frozen into the graph
#: (constant-folded, oneDNN convolution weights packed once), the CPU inference setting
#: PyTorch recommends; valid because inference runs under ``torch.inference_mode``
INFERENCE_COMPILE = dict(backend='inductor', options={'freezing': True})

#: ``torch.compile`` keyword arguments a ``compile=dict(...)`` may give
_COMPILE_KEYS = ('backend', 'mode', 'dynamic', 'fullgraph', 'options', 'with_head')


def _is_dense_head(module) -> bool:
    """Whether ``module(feats)`` is only the head's convolutions: detforge's dense heads
    (``AnchorHead`` and ``ConvTowerHead`` families, ``RPNHead``) keep targets, losses and
    decoding out of ``forward``."""
    from detforge.models.dense_heads.anchor_head import AnchorHead
    from detforge.models.dense_heads.conv_tower_head import ConvTowerHead
    from detforge.models.dense_heads.rpn_head import RPNHead
    return isinstance(module, (AnchorHead, ConvTowerHead, RPNHead))


def compile_detector_parts(model: nn.Module, backend: str = 'inductor', mode: str | None = None,
                              dynamic: bool | None = None, fullgraph: bool = False,
                              options: dict | None = None, with_head: bool = True) -> nn.Module:
    """Compile ``model.backbone``, ``model.neck`` and (``with_head``) the dense heads'
    ``forward`` (``rpn_head``, a dense ``bbox_head``), those present, with ``torch.compile``.

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
        with_head: also compile the dense heads' ``forward`` (conv towers and predictors);
            their losses, decoding and NMS stay eager either way.

    Returns:
        ``model``, in place, with ``model.compiled_parts`` the names of the compiled parts.
    """
    parts = [name for name in COMPILED_PARTS if isinstance(getattr(model, name, None), nn.Module)
             and (name in ('backbone', 'neck') or (with_head and _is_dense_head(
                 getattr(model, name))))]
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
    :func:`compile_detector_parts`, or ``None`` when it is absent or ``False``.

    ``compile = True`` means ``dict(backend='inductor')``; a dict may give ``backend``,
    ``mode``, ``dynamic``, ``fullgraph``, ``options`` and ``with_head``. Anything else is a
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
    if not isinstance(value.get('with_head', True), bool):
        raise BuildError(f"with_head must be True or False, got {value['with_head']!r}",
                         key_path=['compile', 'with_head'], filename=filename)
    if value.get('options') is not None and not isinstance(value['options'], dict):
        raise BuildError(f"options must be a dict of inductor options, got {value['options']!r}",
                         key_path=['compile', 'options'], filename=filename)
    return dict(value, backend=backend)
