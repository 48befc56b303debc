"""Detectron2 YAML configs -> detforge configs (``detforge convert d2-config``).

A Detectron2 YAML file sets some keys of Detectron2's defaults (``detectron2/config/
defaults.py``) and may name a ``_BASE_`` file (a path relative to it) whose keys it overrides.
:func:`load_d2_yaml` reads the chain with ``yaml.safe_load`` semantics: the one tag beyond
plain YAML that Detectron2's own configs use, ``!!python/object/apply:eval`` (RetinaNet's
anchor sizes), is evaluated by a small arithmetic evaluator (numbers, lists, list
comprehensions, ``+ - * / **``), never by Python's ``eval``.

:func:`translate` reads every key through :class:`_Reader`, which records what it read; a key
set in the YAML chain that no rule read, or whose value has no detforge equivalent, is listed
in :attr:`Translation.untranslated` (written as a comment block and printed as a warning),
never dropped silently. Keys that change nothing for the built model (``ROI_MASK_HEAD`` when
``MASK_ON`` is False) are listed in :attr:`Translation.no_effect`.

Supported: ``META_ARCHITECTURE`` RetinaNet, and GeneralizedRCNN (Faster R-CNN, Mask R-CNN with
``MASK_ON``) on a ResNet (or ResNeXt) FPN backbone (``StandardROIHeads``); Faster R-CNN C4
(``build_resnet_backbone`` to ``res4``, ``Res5ROIHeads``).
"""
from __future__ import annotations

import ast
import operator
import os
from dataclasses import dataclass, field
from typing import Any

import yaml

from detforge.registry import DetforgeError

__all__ = ['load_d2_yaml', 'translate', 'Translation', 'D2_DEFAULTS', 'safe_arith_eval']


# ------------------------------------------------------------------ Detectron2's defaults
# The defaults of detectron2/config/defaults.py that a translated key may depend on, by path.
D2_DEFAULTS: dict[str, Any] = {
    'MODEL.META_ARCHITECTURE': 'GeneralizedRCNN', 'MODEL.MASK_ON': False,
    'MODEL.KEYPOINT_ON': False, 'MODEL.LOAD_PROPOSALS': False, 'MODEL.WEIGHTS': '',
    'MODEL.PIXEL_MEAN': [103.530, 116.280, 123.675], 'MODEL.PIXEL_STD': [1.0, 1.0, 1.0],
    'MODEL.BACKBONE.NAME': 'build_resnet_backbone', 'MODEL.BACKBONE.FREEZE_AT': 2,
    'MODEL.RESNETS.DEPTH': 50, 'MODEL.RESNETS.OUT_FEATURES': ['res4'],
    'MODEL.RESNETS.NUM_GROUPS': 1, 'MODEL.RESNETS.NORM': 'FrozenBN',
    'MODEL.RESNETS.WIDTH_PER_GROUP': 64, 'MODEL.RESNETS.STRIDE_IN_1X1': True,
    'MODEL.RESNETS.RES5_DILATION': 1, 'MODEL.RESNETS.RES2_OUT_CHANNELS': 256,
    'MODEL.RESNETS.STEM_OUT_CHANNELS': 64,
    'MODEL.RESNETS.DEFORM_ON_PER_STAGE': [False, False, False, False],
    'MODEL.FPN.IN_FEATURES': [], 'MODEL.FPN.OUT_CHANNELS': 256, 'MODEL.FPN.NORM': '',
    'MODEL.FPN.FUSE_TYPE': 'sum',
    'MODEL.ANCHOR_GENERATOR.NAME': 'DefaultAnchorGenerator',
    'MODEL.ANCHOR_GENERATOR.SIZES': [[32, 64, 128, 256, 512]],
    'MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS': [[0.5, 1.0, 2.0]],
    'MODEL.ANCHOR_GENERATOR.OFFSET': 0.0,
    'MODEL.PROPOSAL_GENERATOR.NAME': 'RPN', 'MODEL.PROPOSAL_GENERATOR.MIN_SIZE': 0,
    'MODEL.RPN.HEAD_NAME': 'StandardRPNHead', 'MODEL.RPN.IN_FEATURES': ['res4'],
    'MODEL.RPN.BOUNDARY_THRESH': -1, 'MODEL.RPN.IOU_THRESHOLDS': [0.3, 0.7],
    'MODEL.RPN.IOU_LABELS': [0, -1, 1], 'MODEL.RPN.BATCH_SIZE_PER_IMAGE': 256,
    'MODEL.RPN.POSITIVE_FRACTION': 0.5, 'MODEL.RPN.BBOX_REG_LOSS_TYPE': 'smooth_l1',
    'MODEL.RPN.BBOX_REG_LOSS_WEIGHT': 1.0, 'MODEL.RPN.BBOX_REG_WEIGHTS': [1.0, 1.0, 1.0, 1.0],
    'MODEL.RPN.SMOOTH_L1_BETA': 0.0, 'MODEL.RPN.LOSS_WEIGHT': 1.0,
    'MODEL.RPN.PRE_NMS_TOPK_TRAIN': 12000, 'MODEL.RPN.PRE_NMS_TOPK_TEST': 6000,
    'MODEL.RPN.POST_NMS_TOPK_TRAIN': 2000, 'MODEL.RPN.POST_NMS_TOPK_TEST': 1000,
    'MODEL.RPN.NMS_THRESH': 0.7, 'MODEL.RPN.CONV_DIMS': [-1],
    'MODEL.ROI_HEADS.NAME': 'Res5ROIHeads', 'MODEL.ROI_HEADS.NUM_CLASSES': 80,
    'MODEL.ROI_HEADS.IN_FEATURES': ['res4'], 'MODEL.ROI_HEADS.IOU_THRESHOLDS': [0.5],
    'MODEL.ROI_HEADS.IOU_LABELS': [0, 1], 'MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE': 512,
    'MODEL.ROI_HEADS.POSITIVE_FRACTION': 0.25, 'MODEL.ROI_HEADS.SCORE_THRESH_TEST': 0.05,
    'MODEL.ROI_HEADS.NMS_THRESH_TEST': 0.5, 'MODEL.ROI_HEADS.PROPOSAL_APPEND_GT': True,
    'MODEL.ROI_BOX_HEAD.NAME': '', 'MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE': 'smooth_l1',
    'MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT': 1.0,
    'MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS': [10.0, 10.0, 5.0, 5.0],
    'MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA': 0.0, 'MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION': 14,
    'MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO': 0, 'MODEL.ROI_BOX_HEAD.POOLER_TYPE': 'ROIAlignV2',
    'MODEL.ROI_BOX_HEAD.NUM_FC': 0, 'MODEL.ROI_BOX_HEAD.FC_DIM': 1024,
    'MODEL.ROI_BOX_HEAD.NUM_CONV': 0, 'MODEL.ROI_BOX_HEAD.NORM': '',
    'MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG': False,
    'MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES': False, 'MODEL.ROI_BOX_HEAD.USE_FED_LOSS': False,
    'MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE': False,
    'MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS': [[10.0, 10.0, 5.0, 5.0], [20.0, 20.0, 10.0, 10.0],
                                                    [30.0, 30.0, 15.0, 15.0]],
    'MODEL.ROI_BOX_CASCADE_HEAD.IOUS': [0.5, 0.6, 0.7],
    'MODEL.ROI_MASK_HEAD.NAME': 'MaskRCNNConvUpsampleHead',
    'MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION': 14, 'MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO': 0,
    'MODEL.ROI_MASK_HEAD.NUM_CONV': 0, 'MODEL.ROI_MASK_HEAD.CONV_DIM': 256,
    'MODEL.ROI_MASK_HEAD.NORM': '', 'MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK': False,
    'MODEL.ROI_MASK_HEAD.POOLER_TYPE': 'ROIAlignV2', 'INPUT.MASK_FORMAT': 'polygon',
    'MODEL.RETINANET.NUM_CLASSES': 80, 'MODEL.RETINANET.IN_FEATURES': ['p3', 'p4', 'p5', 'p6', 'p7'],
    'MODEL.RETINANET.NUM_CONVS': 4, 'MODEL.RETINANET.IOU_THRESHOLDS': [0.4, 0.5],
    'MODEL.RETINANET.IOU_LABELS': [0, -1, 1], 'MODEL.RETINANET.PRIOR_PROB': 0.01,
    'MODEL.RETINANET.SCORE_THRESH_TEST': 0.05, 'MODEL.RETINANET.TOPK_CANDIDATES_TEST': 1000,
    'MODEL.RETINANET.NMS_THRESH_TEST': 0.5, 'MODEL.RETINANET.BBOX_REG_WEIGHTS': [1.0, 1.0, 1.0, 1.0],
    'MODEL.RETINANET.FOCAL_LOSS_GAMMA': 2.0, 'MODEL.RETINANET.FOCAL_LOSS_ALPHA': 0.25,
    'MODEL.RETINANET.SMOOTH_L1_LOSS_BETA': 0.1, 'MODEL.RETINANET.BBOX_REG_LOSS_TYPE': 'smooth_l1',
    'MODEL.RETINANET.NORM': '',
    'INPUT.MIN_SIZE_TRAIN': [800], 'INPUT.MIN_SIZE_TRAIN_SAMPLING': 'choice',
    'INPUT.MAX_SIZE_TRAIN': 1333, 'INPUT.MIN_SIZE_TEST': 800, 'INPUT.MAX_SIZE_TEST': 1333,
    'INPUT.RANDOM_FLIP': 'horizontal', 'INPUT.FORMAT': 'BGR', 'INPUT.CROP.ENABLED': False,
    'DATASETS.TRAIN': [], 'DATASETS.TEST': [],
    'DATALOADER.NUM_WORKERS': 4, 'DATALOADER.ASPECT_RATIO_GROUPING': True,
    'DATALOADER.SAMPLER_TRAIN': 'TrainingSampler', 'DATALOADER.FILTER_EMPTY_ANNOTATIONS': True,
    'SOLVER.LR_SCHEDULER_NAME': 'WarmupMultiStepLR', 'SOLVER.MAX_ITER': 40000,
    'SOLVER.BASE_LR': 0.001, 'SOLVER.MOMENTUM': 0.9, 'SOLVER.NESTEROV': False,
    'SOLVER.WEIGHT_DECAY': 0.0001, 'SOLVER.GAMMA': 0.1, 'SOLVER.STEPS': [30000],
    'SOLVER.WARMUP_FACTOR': 1.0 / 1000, 'SOLVER.WARMUP_ITERS': 1000,
    'SOLVER.WARMUP_METHOD': 'linear', 'SOLVER.CHECKPOINT_PERIOD': 5000,
    'SOLVER.IMS_PER_BATCH': 16, 'SOLVER.CLIP_GRADIENTS.ENABLED': False,
    'SOLVER.AMP.ENABLED': False, 'TEST.DETECTIONS_PER_IMAGE': 100, 'TEST.AUG.ENABLED': False,
    'OUTPUT_DIR': './output', 'SEED': -1, 'VERSION': 2,
}
# keys that only describe Detectron2's process, not the model or the data (named too)
_PROCESS_ONLY = ('VERSION', 'MODEL.DEVICE', 'CUDNN_BENCHMARK', 'VIS_PERIOD')
# COCO datasets registered by Detectron2 -> (images, annotations) under data/coco/
_COCO = {
    'coco_2017_train': ('train2017/', 'annotations/instances_train2017.json'),
    'coco_2017_val': ('val2017/', 'annotations/instances_val2017.json'),
    'coco_2014_train': ('train2014/', 'annotations/instances_train2014.json'),
    'coco_2014_val': ('val2014/', 'annotations/instances_val2014.json'),
}
# ImageNet backbones of Detectron2's zoo -> the same MSRA weights as MMDetection names them
_BACKBONE_WEIGHTS = {
    'detectron2://ImageNetPretrained/MSRA/R-50.pkl': 'open-mmlab://detectron2/resnet50_caffe',
    'detectron2://ImageNetPretrained/MSRA/R-101.pkl': 'open-mmlab://detectron2/resnet101_caffe',
    'detectron2://ImageNetPretrained/torchvision/R-50.pkl': 'torchvision://resnet50',
}
_RES = {'res2': 0, 'res3': 1, 'res4': 2, 'res5': 3}


# ------------------------------------------------------------------ safe loading
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.Pow: operator.pow}


def safe_arith_eval(expression: str) -> Any:
    """The value of an arithmetic list expression such as Detectron2's
    ``[[x, x * 2**(1.0/3), x * 2**(2.0/3)] for x in [32, 64, 128, 256, 512]]``.

    Only number literals, lists / tuples, list comprehensions over literal lists, their loop
    variables, unary minus and ``+ - * / **`` are accepted (exponents within +-64); anything
    else (a name, a call, an attribute) raises ``ValueError``. Nothing is imported or called.
    """
    tree = ast.parse(expression, mode='eval')

    def value(node, scope):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) \
                and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            return [value(e, scope) for e in node.elts]
        if isinstance(node, ast.Name) and node.id in scope:
            return scope[node.id]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = value(node.operand, scope)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            left, right = value(node.left, scope), value(node.right, scope)
            if not all(isinstance(v, (int, float)) for v in (left, right)):
                raise ValueError('arithmetic on a list')
            if isinstance(node.op, ast.Pow) and abs(right) > 64:
                raise ValueError(f'exponent {right} too large')
            return _BINOPS[type(node.op)](left, right)
        if isinstance(node, ast.ListComp) and len(node.generators) == 1:
            gen = node.generators[0]
            if not isinstance(gen.target, ast.Name) or gen.ifs or gen.is_async:
                raise ValueError('only "for NAME in LIST" comprehensions are evaluated')
            items = value(gen.iter, scope)
            if not isinstance(items, list):
                raise ValueError('a comprehension must loop over a list')
            return [value(node.elt, {**scope, gen.target.id: item}) for item in items]
        raise ValueError(f'{type(node).__name__} is not evaluated')

    return value(tree.body, {})


class _D2Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` plus Detectron2's ``!!python/object/apply:eval [EXPR]`` tag, whose
    expression goes through :func:`safe_arith_eval`."""


def _apply_eval(loader: _D2Loader, node: yaml.Node):
    args = loader.construct_sequence(node)
    if len(args) != 1 or not isinstance(args[0], str):
        raise yaml.constructor.ConstructorError(None, None, 'eval expects one expression string',
                                                node.start_mark)
    try:
        return safe_arith_eval(args[0])
    except (ValueError, SyntaxError) as e:
        raise yaml.constructor.ConstructorError(
            None, None, f'refusing to evaluate {args[0]!r}: {e}', node.start_mark) from None


_D2Loader.add_constructor('tag:yaml.org,2002:python/object/apply:eval', _apply_eval)


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_d2_yaml(path: str | os.PathLike, _chain: tuple = ()) -> dict:
    """The YAML file at ``path`` merged over its ``_BASE_`` chain (relative paths from the
    file that names them), without ``_BASE_`` keys. Raises :class:`DetforgeError` naming the
    file for a missing file, bad YAML or a ``_BASE_`` cycle."""
    path = os.path.abspath(os.fspath(path))
    if path in _chain:
        raise DetforgeError(f'{path}: _BASE_ cycle ({" -> ".join(_chain + (path,))})')
    if not os.path.isfile(path):
        where = f' (the _BASE_ of {_chain[-1]})' if _chain else ''
        raise DetforgeError(f'Detectron2 config not found: {path}{where}')
    try:
        with open(path, encoding='utf-8') as f:
            cfg = yaml.load(f, Loader=_D2Loader) or {}  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise DetforgeError(f'{path}: not a readable Detectron2 YAML config: {e}') from None
    if not isinstance(cfg, dict):
        raise DetforgeError(f'{path}: expected a mapping at the top, got {type(cfg).__name__}')
    base = cfg.pop('_BASE_', None)
    if base is None:
        return cfg
    base_path = os.path.expanduser(str(base))
    if not os.path.isabs(base_path):
        base_path = os.path.join(os.path.dirname(path), base_path)
    return _merge(load_d2_yaml(base_path, _chain + (path,)), cfg)


def _decode(value: Any) -> Any:
    """A YAML value as Detectron2's ``CfgNode`` reads it: a string that is a Python literal
    (``"(640, 672)"``, ``'("coco_2017_train",)'``) becomes that literal
    (``ast.literal_eval``: literals only); tuples become lists."""
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return value
    if isinstance(value, (list, tuple)):
        return [_decode(v) for v in value]
    return value


def _leaf_paths(cfg: dict, prefix: str = '') -> dict[str, Any]:
    out = {}
    for key, value in cfg.items():
        path = f'{prefix}{key}'
        if isinstance(value, dict) and value:
            out.update(_leaf_paths(value, path + '.'))
        else:
            out[path] = _decode(value)
    return out


# ------------------------------------------------------------------ translation
@dataclass
class Translation:
    """The translated config (top-level names -> values) and what could not be translated."""

    config: dict
    untranslated: list[tuple[str, Any, str]] = field(default_factory=list)
    no_effect: list[tuple[str, Any, str]] = field(default_factory=list)
    source: str = ''

    def render(self) -> str:
        """The config as a Python file, the keys left out named in its first lines."""
        from detforge.config import format_python
        lines = [f'# Translated from the Detectron2 config {self.source}',
                 '# by `detforge convert d2-config` (see docs/detectron2.md).']
        if self.untranslated:
            lines.append('# NOT TRANSLATED (no detforge equivalent; this config differs there):')
            lines += [f'#   {key} = {value!r}: {why}' for key, value, why in self.untranslated]
        else:
            lines.append('# Every key of the YAML chain was translated.')
        batch = self.config.get('_total_batch')
        lines.append(f'# SOLVER.IMS_PER_BATCH {batch} is the total batch over all GPUs: '
                     f'data.samples_per_gpu=2 assumes {batch // 2} GPUs.')
        if self.no_effect:
            lines.append('# Set in the YAML but without effect on this model (also not in '
                         'Detectron2):')
            lines += [f'#   {key} = {value!r}: {why}' for key, value, why in self.no_effect]
        config = {k: v for k, v in self.config.items() if not k.startswith('_')}
        return '\n'.join(lines) + '\n' + format_python(config)


class _Reader:
    """Reads keys of the merged config (Detectron2's default where the YAML is silent) and
    records which of the YAML's own keys were read or refused."""

    def __init__(self, cfg: dict):
        self.explicit = _leaf_paths(cfg)
        self.read: set[str] = set()
        self.untranslated: list[tuple[str, Any, str]] = []
        self.no_effect: list[tuple[str, Any, str]] = []

    def __call__(self, path: str) -> Any:
        self.read.add(path)
        if path in self.explicit:
            return self.explicit[path]
        if path in D2_DEFAULTS:
            return D2_DEFAULTS[path]
        raise KeyError(path)

    def refuse(self, path: str, why: str) -> None:
        """The key's value has no detforge equivalent: named, not translated."""
        self.read.add(path)
        self.untranslated.append((path, self(path), why))

    def expect(self, path: str, allowed, why: str) -> None:
        """Keys translated only with the value(s) detforge does: others are named."""
        value = self(path)
        allowed = allowed if isinstance(allowed, (list, tuple, set)) else [allowed]
        if value not in allowed:
            self.refuse(path, why)

    def rest(self) -> None:
        """Name the YAML's keys that no rule read."""
        for path, value in self.explicit.items():
            if path in self.read:
                continue
            if path.startswith(('MODEL.ROI_MASK_HEAD.', 'MODEL.ROI_KEYPOINT_HEAD.')) \
                    and not self('MODEL.MASK_ON') and not self('MODEL.KEYPOINT_ON'):
                self.no_effect.append((path, value, 'MODEL.MASK_ON and KEYPOINT_ON are False'))
            elif path in _PROCESS_ONLY:
                self.no_effect.append((path, value, "Detectron2's process setting"))
            else:
                self.untranslated.append((path, value, 'no translation rule'))


def translate(path: str | os.PathLike) -> Translation:
    """Translate the Detectron2 YAML config at ``path`` (with its ``_BASE_`` chain)."""
    cfg = load_d2_yaml(path)
    get = _Reader(cfg)
    arch = get('MODEL.META_ARCHITECTURE')
    if arch not in ('RetinaNet', 'GeneralizedRCNN'):
        raise DetforgeError(f'{path}: MODEL.META_ARCHITECTURE {arch!r} is not translated '
                            f"(expected 'RetinaNet' or 'GeneralizedRCNN')")
    model = _model(get, arch, path)
    out = dict(model=model)
    out.update(_data(get, model))
    out.update(_schedule(get))
    get.rest()
    return Translation(out, get.untranslated, get.no_effect, source=os.fspath(path))


# Detectron2's Box2BoxTransform clamps dw, dh from above only (boxes may shrink without
# bound): clamp_shrink=False in every box coder

def _stds(weights) -> list[float]:
    """Detectron2's box-coder weights ``(wx, wy, ww, wh)`` -> MMDetection's ``target_stds``."""
    return [1.0 / float(w) for w in weights]


def _box_loss(get, kind_key: str, beta_key: str, weight: float = 1.0) -> dict:
    kind, beta = get(kind_key), float(get(beta_key))
    if kind == 'smooth_l1':
        if beta == 0:  # Detectron2's smooth_l1 with beta 0 is the L1 loss
            return dict(type='L1Loss', loss_weight=weight)
        return dict(type='SmoothL1Loss', beta=beta, loss_weight=weight)
    if kind == 'giou':
        return dict(type='GIoULoss', loss_weight=weight)
    get.refuse(kind_key, 'only smooth_l1 and giou box losses are translated')
    return dict(type='L1Loss', loss_weight=weight)


def _backbone(get, out_features) -> dict:
    depth = int(get('MODEL.RESNETS.DEPTH'))
    groups, width = int(get('MODEL.RESNETS.NUM_GROUPS')), int(get('MODEL.RESNETS.WIDTH_PER_GROUP'))
    norm = get('MODEL.RESNETS.NORM')
    norms = {'FrozenBN': (dict(type='FrozenBN', requires_grad=False), True),
             'BN': (dict(type='BN', requires_grad=True), False),
             'SyncBN': (dict(type='SyncBN', requires_grad=True), False),
             'GN': (dict(type='GN', num_groups=32, requires_grad=True), False)}
    if norm not in norms:
        get.refuse('MODEL.RESNETS.NORM', f'one of {sorted(norms)} is translated')
        norm = 'FrozenBN'
    norm_cfg, norm_eval = norms[norm]
    freeze_at = int(get('MODEL.BACKBONE.FREEZE_AT'))
    backbone = dict(
        type='ResNeXt' if groups > 1 else 'ResNet', depth=depth, num_stages=4,
        out_indices=(0, 1, 2, 3),
        # FREEZE_AT=2 freezes the stem and res2, MMDetection's frozen_stages=1
        frozen_stages=freeze_at - 1 if freeze_at > 0 else -1,
        norm_cfg=norm_cfg, norm_eval=norm_eval,
        style='caffe' if get('MODEL.RESNETS.STRIDE_IN_1X1') else 'pytorch')
    if groups > 1:
        backbone.update(groups=groups, base_width=width)
    else:
        get.expect('MODEL.RESNETS.WIDTH_PER_GROUP', 64, 'ResNet (1 group) has width 64')
    if int(get('MODEL.RESNETS.RES5_DILATION')) == 2:
        backbone.update(strides=(1, 2, 2, 1), dilations=(1, 1, 1, 2))
    else:
        get.expect('MODEL.RESNETS.RES5_DILATION', 1, 'RES5_DILATION 1 or 2 is translated')
    get.expect('MODEL.RESNETS.RES2_OUT_CHANNELS', 256 if depth >= 50 else 64,
               'the standard res2 width is translated')
    get.expect('MODEL.RESNETS.STEM_OUT_CHANNELS', 64, 'the standard stem is translated')
    get.expect('MODEL.RESNETS.DEFORM_ON_PER_STAGE', [[False] * 4],
               'deformable convolutions are not supported')
    weights = get('MODEL.WEIGHTS')
    if weights in _BACKBONE_WEIGHTS:
        backbone['init_cfg'] = dict(type='Pretrained', checkpoint=_BACKBONE_WEIGHTS[weights])
    else:
        backbone['init_cfg'] = None
        if weights:
            get.refuse('MODEL.WEIGHTS', 'only the zoo ImageNet backbones are translated; '
                       'convert a Detectron2 model with `detforge convert detectron2` and '
                       'pass it with --checkpoint / load_from')
    return backbone


def _fpn(get, in_features, retinanet: bool) -> dict:
    wide = get('MODEL.RESNETS.DEPTH') >= 50
    get.expect('MODEL.FPN.NORM', '', 'FPN normalisation is not translated')
    get.expect('MODEL.FPN.FUSE_TYPE', 'sum', "FUSE_TYPE 'avg' is not translated")
    first, last = _RES[in_features[0]], _RES[in_features[-1]]
    neck = dict(type='FPN', in_channels=[(256 if wide else 64) * 2 ** i for i in range(4)],
                out_channels=int(get('MODEL.FPN.OUT_CHANNELS')),
                num_outs=len(in_features) + (2 if retinanet else 1),
                # Detectron2 upsamples by 2 (the same as to the next size: padded to 32)
                upsample_cfg=dict(scale_factor=2, mode='nearest'))
    if first:
        neck['start_level'] = first
    if last != 3:
        neck['end_level'] = last
    if retinanet:  # LastLevelP6P7 on res5, ReLU before P7
        neck.update(add_extra_convs='on_input', relu_before_extra_convs=True)
    return neck


def _anchors(get, strides) -> dict:
    get.expect('MODEL.ANCHOR_GENERATOR.NAME', 'DefaultAnchorGenerator',
               'only DefaultAnchorGenerator is translated')
    sizes, ratios = get('MODEL.ANCHOR_GENERATOR.SIZES'), get('MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS')
    # Detectron2 broadcasts a single entry to every level
    sizes = sizes * len(strides) if len(sizes) == 1 else sizes
    if len(ratios) > 1 and any(r != ratios[0] for r in ratios):
        get.refuse('MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS', 'per-level aspect ratios are not translated')
    if len(sizes) != len(strides):
        get.refuse('MODEL.ANCHOR_GENERATOR.SIZES', f'{len(sizes)} levels of sizes for '
                   f'{len(strides)} feature levels')
        sizes = [sizes[0]] * len(strides)
    return dict(type='AnchorGenerator', strides=list(strides), ratios=list(ratios[0]),
                # Detectron2 orders a position's anchors size-major
                scale_major=False, sizes=[list(s) for s in sizes],
                center_offset=float(get('MODEL.ANCHOR_GENERATOR.OFFSET')))


def _level_strides(names) -> list[int]:
    return [2 ** int(n[1:]) for n in names]


def _model(get, arch: str, path) -> dict:
    mean, std = list(get('MODEL.PIXEL_MEAN')), list(get('MODEL.PIXEL_STD'))
    to_rgb = get('INPUT.FORMAT') == 'RGB'
    get.expect('INPUT.FORMAT', ['BGR', 'RGB'], 'only BGR and RGB inputs are translated')
    for key in ('MODEL.KEYPOINT_ON', 'MODEL.LOAD_PROPOSALS'):
        get.expect(key, False, 'keypoints and precomputed proposals are not translated')
    retinanet = arch == 'RetinaNet'
    c4 = not retinanet and get('MODEL.ROI_HEADS.NAME') == 'Res5ROIHeads'
    backbone_name = get('MODEL.BACKBONE.NAME')
    wanted = 'build_retinanet_resnet_fpn_backbone' if retinanet else \
        'build_resnet_backbone' if c4 else 'build_resnet_fpn_backbone'
    if backbone_name != wanted:
        raise DetforgeError(f'{path}: MODEL.BACKBONE.NAME {backbone_name!r} is not translated for '
                            f'{arch} with {get("MODEL.ROI_HEADS.NAME")} (expected {wanted!r})')
    model = dict(type='RetinaNet' if retinanet else 'FasterRCNN',
                 data_preprocessor=dict(mean=mean, std=std, to_rgb=to_rgb))
    if c4:
        model['backbone'] = _c4_backbone(get, path)
    else:
        in_features = list(get('MODEL.FPN.IN_FEATURES'))
        get('MODEL.RESNETS.OUT_FEATURES')  # Detectron2 requires OUT_FEATURES to cover IN_FEATURES
        model.update(backbone=_backbone(get, in_features), neck=_fpn(get, in_features, retinanet))
    if retinanet:
        get.expect('MODEL.MASK_ON', False, 'RetinaNet has no mask head')
        model.update(_retinanet(get))
        return model
    model.update(_faster_rcnn(get, c4))
    if c4:  # res5 as the backbone would build it (caffe style: stride on the 1x1 conv)
        backbone = model['backbone']
        model['roi_head']['shared_head'] = dict(
            type='ResLayer', depth=backbone['depth'], stage=3, stride=2, dilation=1,
            style=backbone['style'], norm_cfg=backbone['norm_cfg'],
            norm_eval=backbone['norm_eval'], init_cfg=backbone['init_cfg'])
    if get('MODEL.MASK_ON'):
        if c4:
            get.refuse('MODEL.MASK_ON', 'the C4 mask head (on res5 features) is not translated')
        else:
            model['type'] = 'MaskRCNN'
            _add_mask_head(get, model)
    if get('MODEL.ROI_HEADS.NAME') == 'CascadeROIHeads':
        _make_cascade(get, model)
    return model


def _make_cascade(get, model: dict) -> None:
    """StandardROIHeads' translation -> Detectron2's CascadeROIHeads: one box head per
    ``ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS`` entry (class-agnostic), matched at
    ``ROI_BOX_CASCADE_HEAD.IOUS``; softmax probabilities averaged over the stages at test;
    one mask head (on the detections)."""
    weights = [list(w) for w in get('MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS')]
    ious = [float(t) for t in get('MODEL.ROI_BOX_CASCADE_HEAD.IOUS')]
    if len(weights) != len(ious):
        raise DetforgeError(f'MODEL.ROI_BOX_CASCADE_HEAD: {len(weights)} BBOX_REG_WEIGHTS for '
                            f'{len(ious)} IOUS (one of each per stage)')
    # Detectron2 asserts it: a cascade stage refines one box per RoI
    get.expect('MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG', True,
               'CascadeROIHeads needs class-agnostic box regression')
    roi_head, train = model['roi_head'], model['train_cfg']
    stages, stage_train = [], []
    for w, iou in zip(weights, ious):
        head = dict(roi_head['bbox_head'], reg_class_agnostic=True)
        head['bbox_coder'] = dict(head['bbox_coder'], target_stds=_stds(w))
        stages.append(head)
        rcnn = dict(train['rcnn'])
        rcnn['assigner'] = dict(rcnn['assigner'], pos_iou_thr=iou, neg_iou_thr=iou, min_pos_iou=iou)
        stage_train.append(rcnn)
    roi_head.update(type='CascadeRoIHead', num_stages=len(weights),
                    # Detectron2 sums the stages' losses unweighted (and scales the gradient
                    # into the pooled features by 1 / stages, which is not translated)
                    stage_loss_weights=[1.0] * len(weights), bbox_head=stages,
                    score_average='probs', mask_stages='last')
    train['rcnn'] = stage_train
    model['type'] = 'CascadeRCNN'


def _c4_backbone(get, path) -> dict:
    """ResNet stem..res4 (``RESNETS.OUT_FEATURES ['res4']``): res5 runs in the RoI head."""
    if list(get('MODEL.RESNETS.OUT_FEATURES')) != ['res4']:
        raise DetforgeError(f'{path}: MODEL.RESNETS.OUT_FEATURES {get("MODEL.RESNETS.OUT_FEATURES")} '
                            f"is not translated with Res5ROIHeads (expected ['res4'])")
    backbone = _backbone(get, ['res4'])
    backbone.update(num_stages=3, strides=(1, 2, 2), dilations=(1, 1, 1), out_indices=(2,))
    return backbone


def _add_mask_head(get, model: dict) -> None:
    """MaskRCNNConvUpsampleHead (ROI_MASK_HEAD) as FCNMaskHead, pooled as ROIPooler does."""
    get.expect('MODEL.ROI_MASK_HEAD.NAME', 'MaskRCNNConvUpsampleHead',
               'only MaskRCNNConvUpsampleHead is translated')
    get.expect('MODEL.ROI_MASK_HEAD.NORM', '', 'a normalised mask head is not translated')
    get.expect('INPUT.MASK_FORMAT', ['polygon', 'bitmask'],
               "'polygon' or 'bitmask' (detforge rasterises COCO polygons when loading)")
    pooler = get('MODEL.ROI_MASK_HEAD.POOLER_TYPE')
    if pooler not in ('ROIAlignV2', 'ROIAlign'):
        get.refuse('MODEL.ROI_MASK_HEAD.POOLER_TYPE', 'ROIAlign and ROIAlignV2 are translated')
    resolution = int(get('MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION'))
    roi_head = model['roi_head']
    box_extractor = roi_head['bbox_roi_extractor']
    roi_head['mask_roi_extractor'] = dict(
        type='SingleRoIExtractor',
        roi_layer=dict(type='RoIAlign', output_size=resolution,
                       sampling_ratio=int(get('MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO')),
                       aligned=pooler == 'ROIAlignV2'),
        out_channels=box_extractor['out_channels'],
        featmap_strides=box_extractor['featmap_strides'], level_mapping='detectron2')
    roi_head['mask_head'] = dict(
        type='FCNMaskHead', num_convs=int(get('MODEL.ROI_MASK_HEAD.NUM_CONV')),
        roi_feat_size=resolution, in_channels=box_extractor['out_channels'],
        conv_out_channels=int(get('MODEL.ROI_MASK_HEAD.CONV_DIM')),
        num_classes=int(get('MODEL.ROI_HEADS.NUM_CLASSES')),
        class_agnostic=bool(get('MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK')),
        # Detectron2's paste_masks_in_image is MMDetection 2.x's grid_sample paste
        paste_mode='mmdet',
        loss_mask=dict(type='CrossEntropyLoss', use_mask=True, loss_weight=1.0))
    # the targets are the gt masks cut at the logits' size (2x the pooled size, deconv)
    model['train_cfg']['rcnn']['mask_size'] = 2 * resolution
    # detector_postprocess binarises at 0.5 (its default; no config key)
    model['test_cfg']['rcnn']['mask_thr_binary'] = 0.5


def _matcher(get, key: str, labels_key: str, expected_labels) -> tuple[float, float]:
    low, high = (float(t) for t in get(key))
    get.expect(labels_key, [expected_labels], f'IOU_LABELS {expected_labels} is translated')
    return low, high


def _retinanet(get) -> dict:
    levels = list(get('MODEL.RETINANET.IN_FEATURES'))
    get.expect('MODEL.RETINANET.NORM', '', 'a normalised RetinaNet head is not translated')
    prior = float(get('MODEL.RETINANET.PRIOR_PROB'))
    neg, pos = _matcher(get, 'MODEL.RETINANET.IOU_THRESHOLDS', 'MODEL.RETINANET.IOU_LABELS',
                        [0, -1, 1])
    loss_bbox = _box_loss(get, 'MODEL.RETINANET.BBOX_REG_LOSS_TYPE',
                          'MODEL.RETINANET.SMOOTH_L1_LOSS_BETA')
    head = dict(
        type='RetinaHead', num_classes=int(get('MODEL.RETINANET.NUM_CLASSES')),
        in_channels=int(get('MODEL.FPN.OUT_CHANNELS')), stacked_convs=int(get('MODEL.RETINANET.NUM_CONVS')),
        feat_channels=int(get('MODEL.FPN.OUT_CHANNELS')),
        anchor_generator=_anchors(get, _level_strides(levels)),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4,
                        target_stds=_stds(get('MODEL.RETINANET.BBOX_REG_WEIGHTS')),
                        # Detectron2 decodes and suppresses unclipped boxes
                        clip_border=False, clamp_shrink=False),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=float(get('MODEL.RETINANET.FOCAL_LOSS_GAMMA')),
                      alpha=float(get('MODEL.RETINANET.FOCAL_LOSS_ALPHA')), loss_weight=1.0),
        loss_bbox=loss_bbox,
        # Detectron2 divides the losses by a moving average of the number of positives
        loss_normalizer_momentum=0.9, prior_prob=prior)
    if loss_bbox['type'] == 'GIoULoss':
        head['reg_decoded_bbox'] = True
    return dict(
        bbox_head=head,
        train_cfg=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=pos, neg_iou_thr=neg,
                                     min_pos_iou=0.0, low_quality_gt='best', ignore_iof_thr=-1),
                       allowed_border=-1, pos_weight=-1, debug=False),
        test_cfg=dict(nms_pre=int(get('MODEL.RETINANET.TOPK_CANDIDATES_TEST')),
                      min_bbox_size=0, score_thr=float(get('MODEL.RETINANET.SCORE_THRESH_TEST')),
                      nms=dict(type='nms', iou_threshold=float(get('MODEL.RETINANET.NMS_THRESH_TEST'))),
                      max_per_img=int(get('TEST.DETECTIONS_PER_IMAGE')), clip_rescaled=True))


def _faster_rcnn(get, c4: bool = False) -> dict:
    """RPN + StandardROIHeads (FPN: FastRCNNConvFCHead, 2 FC) or Res5ROIHeads (C4: the
    ResNet's res5 on 14x14 RoIs, mean-pooled, then the box predictor)."""
    get.expect('MODEL.PROPOSAL_GENERATOR.NAME', 'RPN', 'only the RPN proposal generator is translated')
    get.expect('MODEL.RPN.HEAD_NAME', 'StandardRPNHead', 'only StandardRPNHead is translated')
    get.expect('MODEL.RPN.CONV_DIMS', [[-1]], 'only the one-conv RPN head is translated')
    get.expect('MODEL.ROI_HEADS.NAME', ['StandardROIHeads', 'Res5ROIHeads', 'CascadeROIHeads'],
               'only StandardROIHeads, CascadeROIHeads (FPN) and Res5ROIHeads (C4) are translated')
    if not c4:  # Res5ROIHeads has no box head of its own (res5 is)
        get.expect('MODEL.ROI_BOX_HEAD.NAME', 'FastRCNNConvFCHead',
                   'only FastRCNNConvFCHead is translated')
        get.expect('MODEL.ROI_BOX_HEAD.NUM_CONV', 0, 'box-head convolutions are not translated')
        get.expect('MODEL.ROI_BOX_HEAD.NORM', '', 'a normalised box head is not translated')
    for key in ('TRAIN_ON_PRED_BOXES', 'USE_FED_LOSS', 'USE_SIGMOID_CE'):
        get.expect(f'MODEL.ROI_BOX_HEAD.{key}', False, 'not supported by detforge')
    rpn_levels = list(get('MODEL.RPN.IN_FEATURES'))
    roi_levels = list(get('MODEL.ROI_HEADS.IN_FEATURES'))
    if c4:
        for key, levels in (('MODEL.RPN.IN_FEATURES', rpn_levels),
                            ('MODEL.ROI_HEADS.IN_FEATURES', roi_levels)):
            if levels != ['res4']:
                get.refuse(key, "only ['res4'] is translated with Res5ROIHeads")
        rpn_levels = roi_levels = ['p4']  # res4: stride 16
        channels = int(get('MODEL.RESNETS.RES2_OUT_CHANNELS')) * 4  # res4's output
        get.expect('MODEL.RESNETS.RES5_DILATION', 1, 'a dilated res5 head is not translated')
    else:
        channels = int(get('MODEL.FPN.OUT_CHANNELS'))
    pooler = get('MODEL.ROI_BOX_HEAD.POOLER_TYPE')
    if pooler not in ('ROIAlignV2', 'ROIAlign'):
        get.refuse('MODEL.ROI_BOX_HEAD.POOLER_TYPE', 'ROIAlign and ROIAlignV2 are translated')
    resolution = int(get('MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION'))
    box_coder = dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4,
                     target_stds=_stds(get('MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS')),
                     clamp_shrink=False)
    if c4:
        bbox_head = dict(type='BBoxHead', with_avg_pool=True, roi_feat_size=resolution // 2,
                         in_channels=2 * channels, bbox_coder=box_coder)
    else:
        num_fc = int(get('MODEL.ROI_BOX_HEAD.NUM_FC'))
        if num_fc != 2:
            get.refuse('MODEL.ROI_BOX_HEAD.NUM_FC', 'the Shared2FCBBoxHead (2 FC layers) is translated')
        bbox_head = dict(type='Shared2FCBBoxHead', in_channels=channels,
                         fc_out_channels=int(get('MODEL.ROI_BOX_HEAD.FC_DIM')),
                         roi_feat_size=resolution, bbox_coder=box_coder)
    rpn_neg, rpn_pos = _matcher(get, 'MODEL.RPN.IOU_THRESHOLDS', 'MODEL.RPN.IOU_LABELS', [0, -1, 1])
    (roi_iou,) = (float(t) for t in get('MODEL.ROI_HEADS.IOU_THRESHOLDS'))
    get.expect('MODEL.ROI_HEADS.IOU_LABELS', [[0, 1]], 'IOU_LABELS [0, 1] is translated')
    get.expect('MODEL.RPN.BOUNDARY_THRESH', -1, 'only -1 (anchors may cross the border) is translated')
    rpn_nms = dict(type='nms', iou_threshold=float(get('MODEL.RPN.NMS_THRESH')))
    min_size = float(get('MODEL.PROPOSAL_GENERATOR.MIN_SIZE'))
    rpn_loss_weight = float(get('MODEL.RPN.LOSS_WEIGHT'))
    rpn_head = dict(
        type='RPNHead', in_channels=channels, feat_channels=channels,
        anchor_generator=_anchors(get, _level_strides(rpn_levels)),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4,
                        target_stds=_stds(get('MODEL.RPN.BBOX_REG_WEIGHTS')), clamp_shrink=False),
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=rpn_loss_weight),
        loss_bbox=_box_loss(get, 'MODEL.RPN.BBOX_REG_LOSS_TYPE', 'MODEL.RPN.SMOOTH_L1_BETA',
                            rpn_loss_weight * float(get('MODEL.RPN.BBOX_REG_LOSS_WEIGHT'))))
    bbox_head.update(
        num_classes=int(get('MODEL.ROI_HEADS.NUM_CLASSES')),
        reg_class_agnostic=bool(get('MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG')),
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
        loss_bbox=_box_loss(get, 'MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE',
                            'MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA',
                            float(get('MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT'))))
    if bbox_head['loss_bbox']['type'] == 'GIoULoss':
        bbox_head['reg_decoded_bbox'] = True
    roi_head = dict(
        type='StandardRoIHead',
        bbox_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=resolution,
                           sampling_ratio=int(get('MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO')),
                           aligned=pooler == 'ROIAlignV2'),
            out_channels=channels, featmap_strides=_level_strides(roi_levels),
            level_mapping='detectron2'),
        bbox_head=bbox_head)
    return dict(
        rpn_head=rpn_head, roi_head=roi_head,
        train_cfg=dict(
            rpn=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=rpn_pos, neg_iou_thr=rpn_neg,
                                   min_pos_iou=0.0, match_low_quality=True, low_quality_gt='best',
                                   ignore_iof_thr=-1),
                     sampler=dict(type='RandomSampler', num=int(get('MODEL.RPN.BATCH_SIZE_PER_IMAGE')),
                                  pos_fraction=float(get('MODEL.RPN.POSITIVE_FRACTION')),
                                  neg_pos_ub=-1, add_gt_as_proposals=False),
                     allowed_border=-1, pos_weight=-1, debug=False),
            rpn_proposal=dict(nms_pre=int(get('MODEL.RPN.PRE_NMS_TOPK_TRAIN')),
                              max_per_img=int(get('MODEL.RPN.POST_NMS_TOPK_TRAIN')),
                              nms=rpn_nms, min_bbox_size=min_size),
            rcnn=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=roi_iou, neg_iou_thr=roi_iou,
                                    min_pos_iou=roi_iou, match_low_quality=False, ignore_iof_thr=-1),
                      sampler=dict(type='RandomSampler', num=int(get('MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE')),
                                   pos_fraction=float(get('MODEL.ROI_HEADS.POSITIVE_FRACTION')),
                                   neg_pos_ub=-1,
                                   add_gt_as_proposals=bool(get('MODEL.ROI_HEADS.PROPOSAL_APPEND_GT'))),
                      pos_weight=-1, debug=False)),
        test_cfg=dict(
            rpn=dict(nms_pre=int(get('MODEL.RPN.PRE_NMS_TOPK_TEST')),
                     max_per_img=int(get('MODEL.RPN.POST_NMS_TOPK_TEST')), nms=rpn_nms,
                     min_bbox_size=min_size),
            rcnn=dict(score_thr=float(get('MODEL.ROI_HEADS.SCORE_THRESH_TEST')),
                      nms=dict(type='nms', iou_threshold=float(get('MODEL.ROI_HEADS.NMS_THRESH_TEST'))),
                      max_per_img=int(get('TEST.DETECTIONS_PER_IMAGE')), clip_rescaled=True)))


def _dataset(get, key: str, pipeline_name: str) -> dict | None:
    names = list(get(key))
    if not names:
        return None
    if len(names) > 1 or names[0] not in _COCO:
        get.refuse(key, f'only one of the COCO datasets {sorted(_COCO)} is translated; set '
                   f'data.*.ann_file / img_prefix yourself')
        return None
    images, ann = _COCO[names[0]]
    return dict(type='CocoDataset', ann_file='data/coco/' + ann, img_prefix='data/coco/' + images,
                pipeline=pipeline_name)


def _data(get, model: dict) -> dict:
    norm = dict(model['data_preprocessor'])
    sizes = get('INPUT.MIN_SIZE_TRAIN')
    sizes = [int(s) for s in (sizes if isinstance(sizes, (list, tuple)) else [sizes])]
    sampling = get('INPUT.MIN_SIZE_TRAIN_SAMPLING')
    if sampling not in ('choice', 'range'):
        get.refuse('INPUT.MIN_SIZE_TRAIN_SAMPLING', "only 'choice' and 'range' are translated")
        sampling = 'choice'
    flip = get('INPUT.RANDOM_FLIP')
    flips = {'horizontal': dict(flip_ratio=0.5, direction='horizontal'),
             'vertical': dict(flip_ratio=0.5, direction='vertical'), 'none': dict(flip_ratio=0.0)}
    if flip not in flips:
        get.refuse('INPUT.RANDOM_FLIP', f'one of {sorted(flips)} is translated')
        flip = 'horizontal'
    get.expect('INPUT.CROP.ENABLED', False, 'random crops are not translated')
    get.expect('TEST.AUG.ENABLED', False, 'test-time augmentation is not translated')
    masks = 'mask_head' in model.get('roi_head', {})
    # the backbone's size_divisibility: an FPN's 32; a plain ResNet (C4) 0 (the batch is
    # padded to its largest image only)
    divisor = 32 if 'neck' in model else 1
    train_pipeline = [
        dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True,
                                             **(dict(with_mask=True) if masks else {})),
        dict(type='ResizeShortestEdge', short_edge_length=tuple(sizes),
             max_size=int(get('INPUT.MAX_SIZE_TRAIN')), sample_style=sampling, backend='pillow'),
        dict(type='RandomFlip', **flips[flip]), dict(type='Normalize', **norm),
        dict(type='Pad', size_divisor=divisor), dict(type='DefaultFormatBundle'),
        dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels'] + (['gt_masks'] if masks else []))]
    test_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='MultiScaleFlipAug', img_scale=(int(get('INPUT.MAX_SIZE_TEST')),
                                                  int(get('INPUT.MIN_SIZE_TEST'))), flip=False,
             transforms=[dict(type='ResizeShortestEdge', short_edge_length=int(get('INPUT.MIN_SIZE_TEST')),
                              max_size=int(get('INPUT.MAX_SIZE_TEST')), backend='pillow'),
                         dict(type='RandomFlip'), dict(type='Normalize', **norm),
                         dict(type='Pad', size_divisor=divisor), dict(type='ImageToTensor', keys=['img']),
                         dict(type='Collect', keys=['img'])])]
    get.expect('DATALOADER.SAMPLER_TRAIN', 'TrainingSampler', 'only the plain training sampler is translated')
    get.expect('DATALOADER.ASPECT_RATIO_GROUPING', True, "detforge's GroupSampler always groups")
    get.expect('DATALOADER.FILTER_EMPTY_ANNOTATIONS', True, 'images without boxes are skipped')
    ims = int(get('SOLVER.IMS_PER_BATCH'))
    data = dict(samples_per_gpu=2, workers_per_gpu=int(get('DATALOADER.NUM_WORKERS')))
    if ims != 16:
        get.refuse('SOLVER.IMS_PER_BATCH', f'the total batch {ims} is yours to split: set '
                   f'data.samples_per_gpu x the number of GPUs to it')
    for split, key, pipe in (('train', 'DATASETS.TRAIN', 'train'), ('val', 'DATASETS.TEST', 'test'),
                             ('test', 'DATASETS.TEST', 'test')):
        ds = _dataset(get, key, pipe)
        if ds is not None:
            ds['pipeline'] = train_pipeline if pipe == 'train' else test_pipeline
            data[split] = ds
    return dict(img_norm_cfg=norm, train_pipeline=train_pipeline, test_pipeline=test_pipeline,
                data=data, evaluation=dict(interval=1, metric=['bbox', 'segm'] if masks else 'bbox'),
                _total_batch=ims)


def _schedule(get) -> dict:
    get.expect('SOLVER.LR_SCHEDULER_NAME', 'WarmupMultiStepLR', 'only WarmupMultiStepLR is translated')
    get.expect('SOLVER.WARMUP_METHOD', ['linear', 'constant'], 'linear or constant warm-up is translated')
    get.expect('SOLVER.CLIP_GRADIENTS.ENABLED', False, 'gradient clipping is not translated')
    optimizer = dict(type='SGD', lr=float(get('SOLVER.BASE_LR')), momentum=float(get('SOLVER.MOMENTUM')),
                     weight_decay=float(get('SOLVER.WEIGHT_DECAY')))
    if get('SOLVER.NESTEROV'):
        optimizer['nesterov'] = True
    max_iter = int(get('SOLVER.MAX_ITER'))
    out = dict(
        optimizer=optimizer, optimizer_config=dict(grad_clip=None),
        # Detectron2 counts iterations (of SOLVER.IMS_PER_BATCH images)
        lr_config=dict(policy='step', by_epoch=False, warmup=get('SOLVER.WARMUP_METHOD'),
                       warmup_iters=int(get('SOLVER.WARMUP_ITERS')),
                       warmup_ratio=float(get('SOLVER.WARMUP_FACTOR')),
                       step=[int(s) for s in get('SOLVER.STEPS')], gamma=float(get('SOLVER.GAMMA'))),
        runner=dict(type='IterBasedRunner', max_iters=max_iter),
        checkpoint_config=dict(interval=int(get('SOLVER.CHECKPOINT_PERIOD')), by_epoch=False),
        work_dir=str(get('OUTPUT_DIR')))
    if get('SOLVER.AMP.ENABLED'):
        out['fp16'] = dict(loss_scale='dynamic')
    seed = int(get('SEED'))
    if seed >= 0:
        out['seed'] = seed
    return out
