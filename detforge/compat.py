"""Upgrade configs written with MMDetection 1.x-era keys to their current form.

MMDetection 2.x still accepted a few 1.x spellings with a deprecation warning, and configs
in the wild use them. :func:`compat_cfg` rewrites them, warning once per old key with the
name of its current form, so that the rest of detforge sees one format only:

==========================================  ======================================================
1.x-era key                                  current form
==========================================  ======================================================
``data.imgs_per_gpu``                        ``data.samples_per_gpu``
``total_epochs``                             ``runner=dict(type='EpochBasedRunner', max_epochs=N)``
top-level ``train_cfg`` / ``test_cfg``       ``model.train_cfg`` / ``model.test_cfg``
head ``anchor_scales``, ``anchor_ratios``,   ``anchor_generator=dict(type='AnchorGenerator',
``anchor_strides``, ``anchor_base_sizes``,   scales=, ratios=, strides=, base_sizes=,
``octave_base_scale``, ``scales_per_octave`` octave_base_scale=, scales_per_octave=)``
head ``target_means`` / ``target_stds``      ``bbox_coder=dict(type='DeltaXYWHBBoxCoder', ...)``
head ``num_classes`` counting background     ``num_classes`` of foreground classes (81 -> 80)
``nms=dict(type='nms', iou_thr=...)``        ``nms=dict(type='nms', iou_threshold=...)``
RPN ``nms_thr`` / ``max_num``                ``nms=dict(type='nms', iou_threshold=...)`` /
                                             ``max_per_img``
``RoIAlign(out_size=, sample_num=)``         ``RoIAlign(output_size=, sampling_ratio=)``
``SharedFCBBoxHead(num_fcs=2)``              ``Shared2FCBBoxHead``
model-level ``bbox_roi_extractor`` and       ``roi_head=dict(type='StandardRoIHead' or
``bbox_head`` of a two-stage detector        'CascadeRoIHead', ...)``
==========================================  ======================================================

``model.pretrained`` is kept as it is: the backbone resolves it.
"""
from __future__ import annotations

import copy
import sys
import warnings
from typing import Any

from detforge.config import Config, ConfigError

__all__ = ['compat_cfg', 'load_config', 'ConfigDeprecationWarning']


class ConfigDeprecationWarning(DeprecationWarning):
    """A config uses an old key; the message names its current form."""


# Python hides DeprecationWarning outside __main__; a user running `detforge train` with an
# old config should see what to change, once per message.
if not sys.warnoptions:  # unless the user chose warning filters (-W, PYTHONWARNINGS)
    warnings.filterwarnings('default', category=ConfigDeprecationWarning)

_ANCHOR_KEYS = {  # 1.x head key -> AnchorGenerator argument
    'anchor_scales': 'scales',
    'anchor_ratios': 'ratios',
    'anchor_strides': 'strides',
    'anchor_base_sizes': 'base_sizes',
    'octave_base_scale': 'octave_base_scale',
    'scales_per_octave': 'scales_per_octave',
}
# 1.x defaults, used when a 1.x head gave only some of its anchor settings
_RETINA_ANCHOR_DEFAULTS = dict(octave_base_scale=4, scales_per_octave=3,
                               ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32, 64, 128])
_ANCHOR_DEFAULTS = dict(scales=[8, 16, 32], ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32, 64])
_CODER_KEYS = ('target_means', 'target_stds')


class _Upgrade:
    """Collects the rewrites so that each old key is warned about once, with every place it
    was found."""

    def __init__(self):
        self.found: dict[str, tuple[str, list[str]]] = {}
        self.messages: dict[str, str] = {}

    def note(self, old: str, new: str, path: str, message: str | None = None) -> None:
        """Record that ``old`` (found at ``path``) was rewritten as ``new``; ``message``
        replaces the standard wording."""
        new_form, paths = self.found.setdefault(old, (new, []))
        paths.append(path)
        if message is not None:
            self.messages[old] = message

    def warn(self, filename: str | None) -> None:
        source = f' in {filename}' if filename else ''
        for old, (new, paths) in self.found.items():
            where = ', '.join(paths[:4]) + (f' and {len(paths) - 4} more' if len(paths) > 4 else '')
            text = self.messages.get(old, f"'{old}' is an old key ({where}); use {new} instead")
            warnings.warn(f'config{source}: {text}', ConfigDeprecationWarning, stacklevel=3)


def load_config(config, cfg_options: dict | None = None) -> Config:
    """The one way every entry point (train, test, infer, export, benchmark, the analysis
    tools, :func:`~detforge.apis.inference.init_detector`) loads a config: a path, a
    :class:`Config` (copied) or a plain dict; then ``--cfg-options``; then the 1.x upgrade
    (:func:`compat_cfg`, a no-op on a current config). So an old config builds the same
    model everywhere (e.g. ``num_classes`` counting background is rewritten before the head
    is built, and a checkpoint trained with the upgraded config loads into it)."""
    import copy
    import os

    from detforge.registry import DetforgeError
    if isinstance(config, (str, os.PathLike)):
        if not os.path.isfile(config):
            raise DetforgeError(f'config file not found: {config}')
        config = Config.fromfile(str(config))
    elif isinstance(config, Config):
        config = copy.deepcopy(config)
    elif isinstance(config, dict):
        config = Config(config)
    else:
        raise DetforgeError(f'config must be a file path or a Config, got {type(config).__name__}')
    if cfg_options:
        config.merge_from_dict(cfg_options)
    return compat_cfg(config)


def compat_cfg(cfg: Config) -> Config:
    """A copy of ``cfg`` with 1.x-era keys rewritten to their current form (see the module
    docstring), warning with :class:`ConfigDeprecationWarning` (a ``DeprecationWarning``)
    once per old key. A config without old keys comes back equal and without warnings."""
    out = cfg.copy()
    up = _Upgrade()
    _data_loader_keys(out, up)
    _runner(out, up)
    model = out.get('model')
    if isinstance(model, dict):
        _train_test_cfg(out, model, up)
        _two_stage_layout(model, up)
        for path, head in _heads(model):
            _head(head, path, up)
        for key in ('train_cfg', 'test_cfg'):
            if isinstance(model.get(key), dict):
                _rpn_cfg(model[key], f'model.{key}', up)
    _walk(out._cfg_dict, '', up)
    up.warn(cfg.filename)
    return out


# ---------------------------------------------------------------------- top level
def _data_loader_keys(cfg: Config, up: _Upgrade) -> None:
    data = cfg.get('data')
    if not isinstance(data, dict) or 'imgs_per_gpu' not in data:
        return
    value = data.pop('imgs_per_gpu')
    if 'samples_per_gpu' in data and data['samples_per_gpu'] != value:
        warnings.warn(f'config: both data.imgs_per_gpu={value} and data.samples_per_gpu='
                      f'{data["samples_per_gpu"]} are set; imgs_per_gpu is used, as '
                      'MMDetection 2.x did', UserWarning, stacklevel=3)
    data['samples_per_gpu'] = value
    up.note('data.imgs_per_gpu', 'data.samples_per_gpu', 'data.imgs_per_gpu')


def _runner(cfg: Config, up: _Upgrade) -> None:
    if 'total_epochs' not in cfg:
        return
    epochs = cfg.pop('total_epochs')
    runner = cfg.get('runner')
    if runner is None:
        cfg['runner'] = dict(type='EpochBasedRunner', max_epochs=epochs)
    elif runner.get('max_epochs') != epochs:
        raise ConfigError(f'{cfg.filename or "config"}: total_epochs={epochs} disagrees with '
                          f'runner.max_epochs={runner.get("max_epochs")}; keep only runner')
    up.note('total_epochs', f"runner=dict(type='EpochBasedRunner', max_epochs={epochs})",
            'total_epochs')


def _train_test_cfg(cfg: Config, model: dict, up: _Upgrade) -> None:
    for key in ('train_cfg', 'test_cfg'):
        if key not in cfg:
            continue
        value = cfg.pop(key)
        if value is None:
            continue
        if model.get(key) is not None and model[key] != value:
            raise ConfigError(f'{cfg.filename or "config"}: {key} is given both at the top level '
                              f'and as model.{key}, with different values; keep model.{key}')
        model[key] = value
        if hasattr(model[key], '_path'):  # errors found when building name the key as written
            object.__setattr__(model[key], '_path', key)
        up.note(key, f'model.{key}', key)


def _two_stage_layout(model: dict, up: _Upgrade) -> None:
    """1.x two-stage detectors kept the RoI parts on the model; 2.x has a ``roi_head``."""
    if 'bbox_roi_extractor' not in model or 'roi_head' in model:
        return
    roi_head: dict[str, Any] = {}
    if 'num_stages' in model or isinstance(model.get('bbox_head'), list):
        roi_head['type'] = 'CascadeRoIHead'
        roi_head['num_stages'] = model.pop('num_stages', len(model['bbox_head']))
        train_cfg = model.get('train_cfg')
        if isinstance(train_cfg, dict) and 'stage_loss_weights' in train_cfg:
            roi_head['stage_loss_weights'] = train_cfg.pop('stage_loss_weights')
    else:
        roi_head['type'] = 'StandardRoIHead'
    for key in ('bbox_roi_extractor', 'bbox_head', 'shared_head'):
        if key in model:
            roi_head[key] = model.pop(key)
            up.note(f'model.{key}', f'model.roi_head.{key}', f'model.{key}')
    model['roi_head'] = roi_head


def _heads(model: dict):
    """(key path, head dict) of every detection head of the model."""
    def each(path, value):
        if isinstance(value, dict):
            yield path, value
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    yield f'{path}.{i}', item

    for key in ('rpn_head', 'bbox_head'):
        yield from each(f'model.{key}', model.get(key))
    roi_head = model.get('roi_head')
    if isinstance(roi_head, dict):
        yield from each('model.roi_head.bbox_head', roi_head.get('bbox_head'))


# ---------------------------------------------------------------------- heads
def _head(head: dict, path: str, up: _Upgrade) -> None:
    head_type = str(head.get('type', ''))
    old_style = False

    anchor_keys = [k for k in _ANCHOR_KEYS if k in head]
    if anchor_keys:
        old_style = True
        defaults = _RETINA_ANCHOR_DEFAULTS if 'octave_base_scale' in head or \
            head_type.startswith('Retina') else _ANCHOR_DEFAULTS
        generator = dict(type='AnchorGenerator')
        for key in anchor_keys:
            value = head.pop(key)
            if value is not None:  # anchor_base_sizes=None meant "the strides"
                generator[_ANCHOR_KEYS[key]] = value
            up.note(key, f"anchor_generator=dict(type='AnchorGenerator', "
                         f'{_ANCHOR_KEYS[key]}=...)', f'{path}.{key}')
        for key, value in defaults.items():
            if key == 'scales' and 'octave_base_scale' in generator:
                continue
            generator.setdefault(key, copy.deepcopy(value))
        head['anchor_generator'] = generator

    coder_keys = [k for k in _CODER_KEYS if k in head]
    if coder_keys:
        old_style = True
        roi_head = '.roi_head.' in path
        coder = dict(type='DeltaXYWHBBoxCoder',
                     target_means=[0.0, 0.0, 0.0, 0.0],
                     target_stds=[0.1, 0.1, 0.2, 0.2] if roi_head else [1.0, 1.0, 1.0, 1.0])
        for key in coder_keys:
            coder[key] = head.pop(key)
            up.note(key, f"bbox_coder=dict(type='DeltaXYWHBBoxCoder', {key}=...)",
                    f'{path}.{key}')
        head['bbox_coder'] = coder

    if head_type == 'SharedFCBBoxHead':
        num_fcs = head.pop('num_fcs', 2)
        if num_fcs == 2:
            head['type'] = 'Shared2FCBBoxHead'
            new = "type='Shared2FCBBoxHead'"
        else:
            head['type'] = 'ConvFCBBoxHead'
            head.update(num_shared_convs=0, num_shared_fcs=num_fcs, num_cls_convs=0,
                        num_cls_fcs=0, num_reg_convs=0, num_reg_fcs=0)
            new = f"type='ConvFCBBoxHead', num_shared_fcs={num_fcs}"
        up.note('SharedFCBBoxHead', new, f'{path}.type')

    if old_style and isinstance(head.get('num_classes'), int) and head_type != 'RPNHead':
        # 1.x counted the background as a class: 81 for COCO's 80
        old = head['num_classes']
        head['num_classes'] = old - 1
        up.note(f'num_classes={old}', f'num_classes={old - 1}', f'{path}.num_classes',
                message=f'{path}.num_classes={old} counts the background class, as 1.x-style '
                        f'heads (with anchor_* or target_* keys) did; detforge counts foreground '
                        f'classes only, so it is now num_classes={old - 1}')


def _rpn_cfg(cfg: dict, path: str, up: _Upgrade) -> None:
    """RPN proposal settings: ``nms_thr`` and ``max_num`` became ``nms`` and ``max_per_img``."""
    for key in ('rpn', 'rpn_proposal'):
        rpn = cfg.get(key)
        if not isinstance(rpn, dict):
            continue
        where = f'{path}.{key}'
        if 'nms_thr' in rpn:
            threshold = rpn.pop('nms_thr')
            rpn.setdefault('nms', dict(type='nms', iou_threshold=threshold))
            up.note('nms_thr', "nms=dict(type='nms', iou_threshold=...)", f'{where}.nms_thr')
        if 'max_num' in rpn:
            rpn.setdefault('max_per_img', rpn.pop('max_num'))
            rpn.pop('max_num', None)
            up.note('max_num', 'max_per_img', f'{where}.max_num')


# ---------------------------------------------------------------------- anywhere in the config
def _walk(value: Any, path: str, up: _Upgrade) -> None:
    if isinstance(value, dict):
        kind = value.get('type')
        if kind in ('nms', 'soft_nms') and 'iou_thr' in value:
            value['iou_threshold'] = value.pop('iou_thr')
            up.note('iou_thr', f"nms=dict(type='{kind}', iou_threshold=...)", f'{path}.iou_thr')
        elif kind in ('RoIAlign', 'RoIPool'):
            for old, new in (('out_size', 'output_size'), ('sample_num', 'sampling_ratio')):
                if old in value:
                    value[new] = value.pop(old)
                    up.note(old, f'{kind}({new}=...)', f'{path}.{old}')
        for key, item in list(value.items()):
            _walk(item, f'{path}.{key}' if path else str(key), up)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _walk(item, f'{path}.{i}', up)


