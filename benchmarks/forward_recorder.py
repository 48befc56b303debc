"""Record what sub-modules of a model return, call by call: the side-by-side parity scripts
(``check_mmdet_parity.py``, ``check_d2_parity.py``) use it on both frameworks' models.

Runs in any interpreter that has torch (the reference frameworks' venvs too); the scripts
import it from their own folder.
"""
from __future__ import annotations

__all__ = ['flatten_tensors', 'record_forwards']


def flatten_tensors(out) -> list:
    """A forward's output (tensors in nested tuples/lists) -> a flat list of detached copies;
    anything else is dropped."""
    import torch
    if isinstance(out, torch.Tensor):
        return [out.detach().clone()]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in flatten_tensors(o)]
    return []


def record_forwards(model, names) -> dict:
    """``{name: [flat outputs of each call]}`` for the named sub-modules of ``model``, filled
    as the model runs. The instance's ``forward`` is wrapped (not a forward hook): MMDetection's
    dense heads call ``self.forward(feats)`` directly, which hooks do not see."""
    store = {name: [] for name in names}
    for name in names:
        module = model.get_submodule(name)

        def wrapped(*args, _forward=module.forward, _name=name, **kwargs):
            out = _forward(*args, **kwargs)
            store[_name].append(flatten_tensors(out))
            return out
        module.forward = wrapped
    return store
