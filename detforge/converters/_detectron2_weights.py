"""Detectron2 checkpoints as data, and their parameter names in detforge's (MMDetection 2.x) layout.

Detectron2's model zoo stores a model two ways:

* ``.pkl``: a pickled dict ``{'model': {name: numpy array}, '__author__': ..., and maybe
  'matching_heuristics': True}``. :func:`load_detectron2_checkpoint` reads it with an
  unpickler that rebuilds numpy arrays and plain containers only and refuses every other
  global (a pickle naming ``os.system`` is refused, never run).
* ``.pth``: ``torch.save({'model': state_dict, 'optimizer': ..., 'iteration': ...})``, read
  with ``torch.load(weights_only=True)``.

:func:`convert_state_dict` renames the parameters (ResNet, FPN, RetinaNet head, RPN, the FPN
box head, the C4 ``res5`` head and the Mask R-CNN mask head) and refuses names it does not
know, so that nothing is dropped silently. Tensor values are not changed: detforge's Detectron2 configs
(``configs/*/*_d2.py``) order the anchors as Detectron2 does (``scale_major=False``).
"""
from __future__ import annotations

import io
import os
import pickle
import re
from typing import Callable, Mapping

import numpy as np
import torch

from detforge.registry import DetforgeError

__all__ = ['load_detectron2_checkpoint', 'convert_state_dict', 'detect_family', 'FAMILIES',
           'UnsafeCheckpointError']

# family -> the detforge config that reproduces Detectron2's COCO model of that family
FAMILIES = {
    'retinanet': 'configs/retinanet/retinanet_r50_fpn_d2.py',
    'faster_rcnn': 'configs/faster_rcnn/faster_rcnn_r50_fpn_d2.py',
    'mask_rcnn': 'configs/mask_rcnn/mask_rcnn_r50_fpn_d2.py',
    'faster_rcnn_c4': 'configs/faster_rcnn/faster_rcnn_r50_c4_d2.py',
    'cascade_mask_rcnn': 'configs/cascade_rcnn/cascade_mask_rcnn_r50_fpn_d2.py',
}


class UnsafeCheckpointError(DetforgeError):
    """The file needs code to be run to load it (a global outside the numpy allow-list)."""


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays, numbers, strings and containers; refuses any other global."""

    def find_class(self, module: str, name: str):
        from detforge.evaluation.results_io import _ALLOWED_GLOBALS  # numpy + containers
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise UnsafeCheckpointError(f'{module}.{name}')


def _load_pickle(path: str) -> object:
    with open(path, 'rb') as f:
        data = f.read()
    try:
        # latin1: the zoo's older files were pickled by Python 2 (numpy buffers as str)
        return _ArraysOnlyUnpickler(io.BytesIO(data), encoding='latin1').load()
    except UnsafeCheckpointError as e:
        raise UnsafeCheckpointError(
            f'{path}: refusing to unpickle global {e} (a Detectron2 .pkl checkpoint holds '
            f'numpy arrays only; loading this one would run code)') from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise DetforgeError(f'{path}: not a readable pickle ({type(e).__name__}: {e})') from None


def _load_torch(path: str) -> object:
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f'{path}: torch.load(weights_only=True) refused it ({str(e).splitlines()[0]}); a '
            f"checkpoint holding more than tensors and plain data is not loaded. If you trust "
            f"the file, re-save only its weights: torch.save({{'model': "
            f"torch.load(path, weights_only=False)['model']}}, 'weights.pth')") from None
    except RuntimeError as e:
        raise DetforgeError(f'{path}: not a readable torch checkpoint ({e})') from None


def load_detectron2_checkpoint(path: str | os.PathLike) -> tuple[dict, dict]:
    """A Detectron2 checkpoint file as ``(weights, info)``.

    Args:
        path: ``.pkl`` (zoo pickle of numpy arrays) or ``.pth`` / ``.pt`` (``torch.save``).

    Returns:
        ``weights``: name -> float tensor (Detectron2's names); ``info``: the file's other
        plain entries (``__author__``, ``matching_heuristics``, ``iteration``; not the
        optimizer state).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DetforgeError(f'Detectron2 checkpoint not found: {path}')
    obj = _load_pickle(path) if path.endswith('.pkl') else _load_torch(path)
    if not isinstance(obj, Mapping):
        raise DetforgeError(f'{path}: expected a dict with a "model" entry, got {type(obj).__name__}')
    if 'blobs' in obj and 'model' not in obj:
        raise DetforgeError(f'{path}: a Detectron (Caffe2) "blobs" checkpoint, e.g. an ImageNet '
                            f'backbone such as R-50.pkl; convert only full Detectron2 models '
                            f'(model_final_*.pkl), or name it as a backbone init_cfg checkpoint')
    model = obj.get('model', obj)
    if not isinstance(model, Mapping) or not model:
        raise DetforgeError(f'{path}: "model" is not a dict of weights')
    weights = {}
    for key, value in model.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        if not isinstance(value, torch.Tensor):
            raise DetforgeError(f'{path}: model[{key!r}] is a {type(value).__name__}, not an array')
        weights[str(key)] = value
    info = {k: v for k, v in obj.items()
            if k != 'model' and isinstance(v, (str, int, float, bool))}
    return weights, info


def detect_family(weights: Mapping[str, object]) -> str:
    """One of :data:`FAMILIES` from the parameter names: ``'retinanet'``, ``'faster_rcnn'``
    (R-FPN), ``'mask_rcnn'`` (R-FPN with ``roi_heads.mask_head``), ``'faster_rcnn_c4'``
    (``roi_heads.res5`` on a ResNet without FPN) or ``'cascade_mask_rcnn'``
    (``roi_heads.box_head.{stage}``, ``box_predictor.{stage}`` and one mask head)."""
    if 'head.cls_score.weight' in weights:
        return 'retinanet'
    if 'roi_heads.box_predictor.0.cls_score.weight' in weights:  # one predictor per stage
        if not any(k.startswith('roi_heads.mask_head.') for k in weights):
            raise DetforgeError('a Detectron2 Cascade R-CNN checkpoint without a mask head: only '
                                'Cascade Mask R-CNN R-FPN is converted')
        return 'cascade_mask_rcnn'
    if 'roi_heads.box_predictor.cls_score.weight' in weights:
        masks = any(k.startswith('roi_heads.mask_head.') for k in weights)
        if any(k.startswith('roi_heads.res5.') for k in weights):
            if masks:
                raise DetforgeError('a Detectron2 Mask R-CNN C4 checkpoint (roi_heads.res5 and '
                                    'roi_heads.mask_head): only Faster R-CNN C4 is converted')
            return 'faster_rcnn_c4'
        return 'mask_rcnn' if masks else 'faster_rcnn'
    raise DetforgeError('not a Detectron2 RetinaNet, Faster or Mask R-CNN checkpoint: it has '
                        'neither head.cls_score.weight nor roi_heads.box_predictor.cls_score.weight')


# ---------------------------------------------------------------- the name mapping
_NORM_PARAMS = r'(weight|bias|running_mean|running_var)'
# Detectron2's ResNet: backbone.bottom_up.* under an FPN (backbone.* without one)
_RESNET = r'^backbone\.(?:bottom_up\.)?'


def _resnet_rules() -> list[tuple[re.Pattern, Callable[[re.Match], str]]]:
    return [
        (re.compile(_RESNET + r'stem\.conv1\.weight$'), lambda m: 'backbone.conv1.weight'),
        (re.compile(_RESNET + r'stem\.conv1\.norm\.' + _NORM_PARAMS + '$'),
         lambda m: f'backbone.bn1.{m[1]}'),
    ] + _block_rules(_RESNET + r'res([2-5])', 'backbone.layer')


def _block_rules(stage: str, layer: str) -> list[tuple[re.Pattern, Callable[[re.Match], str]]]:
    """Bottleneck blocks: ``{stage}.{b}.conv{n}`` (``stage`` a regex capturing the stage
    number s) -> ``{layer}{s-1}.{b}.conv{n}``, its norm -> ``bn{n}``, the projection
    ``shortcut`` (conv, norm) -> ``downsample.0`` / ``downsample.1``."""
    return [
        (re.compile(stage + r'\.(\d+)\.conv([123])\.weight$'),
         lambda m: f'{layer}{int(m[1]) - 1}.{m[2]}.conv{m[3]}.weight'),
        (re.compile(stage + r'\.(\d+)\.conv([123])\.norm\.' + _NORM_PARAMS + '$'),
         lambda m: f'{layer}{int(m[1]) - 1}.{m[2]}.bn{m[3]}.{m[4]}'),
        (re.compile(stage + r'\.(\d+)\.shortcut\.weight$'),
         lambda m: f'{layer}{int(m[1]) - 1}.{m[2]}.downsample.0.weight'),
        (re.compile(stage + r'\.(\d+)\.shortcut\.norm\.' + _NORM_PARAMS + '$'),
         lambda m: f'{layer}{int(m[1]) - 1}.{m[2]}.downsample.1.{m[3]}'),
    ]


def _fpn_rules(first_stage: int, num_inputs: int):
    """``fpn_lateral{s}`` / ``fpn_output{s}`` of stage ``s`` (stride ``2**s``) are detforge's
    ``lateral_convs`` / ``fpn_convs`` number ``s - first_stage``; P6 / P7 of RetinaNet's top
    block come after the ``num_inputs`` FPN outputs."""
    return [
        (re.compile(r'^backbone\.fpn_lateral(\d)\.(weight|bias)$'),
         lambda m: f'neck.lateral_convs.{int(m[1]) - first_stage}.conv.{m[2]}'),
        (re.compile(r'^backbone\.fpn_output(\d)\.(weight|bias)$'),
         lambda m: f'neck.fpn_convs.{int(m[1]) - first_stage}.conv.{m[2]}'),
        (re.compile(r'^backbone\.top_block\.p([67])\.(weight|bias)$'),
         lambda m: f'neck.fpn_convs.{num_inputs + int(m[1]) - 6}.conv.{m[2]}'),
    ]


_RETINANET_RULES = [
    # cls_subnet / bbox_subnet are Sequential(conv, ReLU, conv, ReLU, ...): conv j at 2j
    (re.compile(r'^head\.cls_subnet\.(\d+)\.(weight|bias)$'),
     lambda m: f'bbox_head.cls_convs.{_even(m)}.conv.{m[2]}'),
    (re.compile(r'^head\.bbox_subnet\.(\d+)\.(weight|bias)$'),
     lambda m: f'bbox_head.reg_convs.{_even(m)}.conv.{m[2]}'),
    (re.compile(r'^head\.cls_score\.(weight|bias)$'), lambda m: f'bbox_head.retina_cls.{m[1]}'),
    (re.compile(r'^head\.bbox_pred\.(weight|bias)$'), lambda m: f'bbox_head.retina_reg.{m[1]}'),
]

_RCNN_RULES = [
    # StandardRPNHead with the default CONV_DIMS [-1]: one 3x3 conv
    (re.compile(r'^proposal_generator\.rpn_head\.conv\.(weight|bias)$'),
     lambda m: f'rpn_head.rpn_conv.{m[1]}'),
    (re.compile(r'^proposal_generator\.rpn_head\.objectness_logits\.(weight|bias)$'),
     lambda m: f'rpn_head.rpn_cls.{m[1]}'),
    (re.compile(r'^proposal_generator\.rpn_head\.anchor_deltas\.(weight|bias)$'),
     lambda m: f'rpn_head.rpn_reg.{m[1]}'),
    # FastRCNNConvFCHead: fc1, fc2 ... -> shared_fcs.0, 1 ...
    (re.compile(r'^roi_heads\.box_head\.fc(\d+)\.(weight|bias)$'),
     lambda m: f'roi_head.bbox_head.shared_fcs.{int(m[1]) - 1}.{m[2]}'),
    # background is the last of cls_score's K + 1 outputs, as in MMDetection
    (re.compile(r'^roi_heads\.box_predictor\.cls_score\.(weight|bias)$'),
     lambda m: f'roi_head.bbox_head.fc_cls.{m[1]}'),
    (re.compile(r'^roi_heads\.box_predictor\.bbox_pred\.(weight|bias)$'),
     lambda m: f'roi_head.bbox_head.fc_reg.{m[1]}'),
]

# MaskRCNNConvUpsampleHead: mask_fcn1..N (3x3 conv + ReLU), deconv (2x2, stride 2) + ReLU,
# predictor (1x1) -> FCNMaskHead's convs.0..N-1.conv, upsample, conv_logits
_MASK_RULES = [
    (re.compile(r'^roi_heads\.mask_head\.mask_fcn(\d+)\.(weight|bias)$'),
     lambda m: f'roi_head.mask_head.convs.{int(m[1]) - 1}.conv.{m[2]}'),
    (re.compile(r'^roi_heads\.mask_head\.deconv\.(weight|bias)$'),
     lambda m: f'roi_head.mask_head.upsample.{m[1]}'),
    (re.compile(r'^roi_heads\.mask_head\.predictor\.(weight|bias)$'),
     lambda m: f'roi_head.mask_head.conv_logits.{m[1]}'),
]


# CascadeROIHeads: box_head.{s}.fc{k} / box_predictor.{s}.* -> bbox_head.{s}.*; its one mask
# head -> mask_head.0 (CascadeRoIHead with mask_stages='last')
_CASCADE_RULES = [
    (re.compile(r'^roi_heads\.box_head\.(\d+)\.fc(\d+)\.(weight|bias)$'),
     lambda m: f'roi_head.bbox_head.{m[1]}.shared_fcs.{int(m[2]) - 1}.{m[3]}'),
    (re.compile(r'^roi_heads\.box_predictor\.(\d+)\.cls_score\.(weight|bias)$'),
     lambda m: f'roi_head.bbox_head.{m[1]}.fc_cls.{m[2]}'),
    (re.compile(r'^roi_heads\.box_predictor\.(\d+)\.bbox_pred\.(weight|bias)$'),
     lambda m: f'roi_head.bbox_head.{m[1]}.fc_reg.{m[2]}'),
] + [(pattern, lambda m, _rename=rename: _rename(m).replace('mask_head.', 'mask_head.0.', 1))
     for pattern, rename in _MASK_RULES]


def _res5_head_rules() -> list:
    """Res5ROIHeads' ``roi_heads.res5`` (ResNet's last stage run on the pooled RoIs) -> the
    ResLayer shared head's ``layer4``."""
    return _block_rules(r'^roi_heads\.res(5)', 'roi_head.shared_head.layer')


# entries that are not parameters of the model (recomputed from the config)
_NOT_WEIGHTS = re.compile(r'^(pixel_mean|pixel_std|.*anchor_generator\.cell_anchors\.\d+)$')


def _even(m: re.Match) -> int:
    index = int(m[1])
    if index % 2:
        raise DetforgeError(f'{m[0]}: odd index in a RetinaNet tower (a normalisation layer: '
                            f'RETINANET.NORM is not converted yet)')
    return index // 2


def convert_state_dict(weights: Mapping[str, torch.Tensor]) -> tuple[dict, list[str]]:
    """Detectron2 names -> detforge's, for the family :func:`detect_family` finds.

    Returns:
        ``(state_dict, skipped)``: the renamed tensors, and the names that are not weights
        (``pixel_mean``, ``pixel_std``, ``cell_anchors``). A name that matches no rule raises
        :class:`DetforgeError` naming it.
    """
    family = detect_family(weights)
    rules = _resnet_rules()
    if family == 'faster_rcnn_c4':
        rules += _res5_head_rules() + _RCNN_RULES
    else:
        stages = sorted(int(m[1]) for k in weights
                        if (m := re.match(r'^backbone\.fpn_lateral(\d)\.', k)))
        if not stages:
            raise DetforgeError('no backbone.fpn_lateral* weights: only FPN models and Faster '
                                'R-CNN C4 (roi_heads.res5) are converted')
        rules += _fpn_rules(stages[0], len(set(stages)))
        if family == 'retinanet':
            rules += _RETINANET_RULES
        elif family == 'cascade_mask_rcnn':
            rules += _RCNN_RULES[:3] + _CASCADE_RULES  # the RPN's, then the stages'
        else:
            rules += _RCNN_RULES + (_MASK_RULES if family == 'mask_rcnn' else [])
    out, skipped = {}, []
    for key, value in weights.items():
        if _NOT_WEIGHTS.match(key):
            skipped.append(key)
            continue
        for pattern, rename in rules:
            if (m := pattern.match(key)):
                out[rename(m)] = value
                break
        else:
            raise DetforgeError(f'unexpected parameter {key!r} in the Detectron2 {family} '
                                f'checkpoint (not part of the model detforge converts)')
    return out, skipped
