"""``detforge train --data PATH --model NAME``: a complete config for a folder of labelled
images, written as a file the user reads, edits and re-runs (``detforge train THAT_FILE``).

The config is the model's shipped config fully resolved (no ``_base_``: what you read is what
trains, and a later change to the shipped files does not change your experiment), with:

- the data: the format found by :func:`detforge.data.formats.detect_format`, one dataset
  config per split (``train``; ``val`` or else ``test`` or else the training images for the
  evaluation during training; ``test`` or else ``val``), the classes it names, and the
  model's own train / test pipelines;
- ``num_classes`` of every head set to the number of classes;
- ``--epochs N``: ``runner.max_epochs = N`` and lr steps scaled in proportion;
- ``--img-size S``: every ``img_scale`` of the pipelines scaled so the test short side is S;
- an evaluation every epoch that keeps the best checkpoint (``save_best='auto'``).
"""
from __future__ import annotations

import copy
import os.path as osp
import shlex
import sys
from collections import OrderedDict

from detforge.registry import DetforgeError

__all__ = ['config_from_data', 'render_config', 'scale_pipeline', 'set_num_classes',
           'scale_schedule']

# the order a user reads the file in: what they edit first comes first
_SECTIONS = OrderedDict([
    ('Data: the classes, splits and pipelines found in --data', (
        'dataset_type', 'data_root', 'classes', 'img_norm_cfg', 'train_pipeline',
        'test_pipeline', 'data', 'evaluation')),
    ('Model', ('model',)),
    ('Schedule', ('optimizer', 'optimizer_config', 'lr_config', 'momentum_config', 'runner')),
    ('Runtime: checkpoints, logs, hooks', ('checkpoint_config', 'log_config', 'custom_hooks',
                                            'work_dir')),
])


def set_num_classes(model_cfg, num_classes: int) -> int:
    """Set every ``num_classes`` inside the model config (dense head, RoI box and mask heads,
    each stage of a cascade); return how many were set."""
    count = 0
    if isinstance(model_cfg, dict):
        for key, value in model_cfg.items():
            if key == 'num_classes' and isinstance(value, int):
                model_cfg[key] = num_classes
                count += 1
            else:
                count += set_num_classes(value, num_classes)
    elif isinstance(model_cfg, list):
        for item in model_cfg:
            count += set_num_classes(item, num_classes)
    return count


def _scale_size(size, factor: float):
    return tuple(max(1, int(round(s * factor))) for s in size)


# the pixel sizes of a pipeline: every ``img_scale`` (Resize, MultiScaleFlipAug, Mosaic,
# CachedMosaic, MixUp...), RandomResize's ``scale``, an absolute RandomCrop's ``crop_size`` and
# a fixed Pad ``size`` (RTMDet's pipelines use the last three)
_SIZE_KEYS = {'img_scale': None, 'scale': ('RandomResize',),
              'crop_size': ('RandomCrop',), 'size': ('Pad',)}


def scale_pipeline(pipeline: list, factor: float) -> list:
    """A copy of ``pipeline`` with every pixel size (see ``_SIZE_KEYS``; a ``(w, h)`` or a
    list of them) multiplied by ``factor``."""
    out = copy.deepcopy(pipeline)
    for step in out:
        for inner in [step] + list(step.get('transforms', [])):
            for key, types in _SIZE_KEYS.items():
                size = inner.get(key)
                if size is None or (types is not None and inner.get('type') not in types):
                    continue
                if key == 'crop_size' and inner.get('crop_type', 'absolute') not in (
                        'absolute', 'absolute_range'):
                    continue  # relative crops follow the image
                if isinstance(size, list) and size and isinstance(size[0], (list, tuple)):
                    inner[key] = [_scale_size(s, factor) for s in size]
                else:
                    inner[key] = _scale_size(size, factor)
    return out


def _test_short_side(pipeline: list) -> int | None:
    for step in pipeline:
        for inner in [step] + list(step.get('transforms', [])):
            scale = inner.get('img_scale')
            if scale is not None:
                first = scale[0] if isinstance(scale, list) else scale
                return int(min(first))
    return None


def scale_schedule(cfg: dict, epochs: int) -> None:
    """``runner.max_epochs = epochs`` and the epochs of a step lr schedule scaled in
    proportion (as ``benchmarks/bench_accuracy.py --max-iters`` scales its steps)."""
    runner = cfg.setdefault('runner', {'type': 'EpochBasedRunner'})
    if runner.get('type', 'EpochBasedRunner') != 'EpochBasedRunner':
        raise DetforgeError(f"--epochs needs an EpochBasedRunner; the model's config has "
                            f"{runner.get('type')!r}")
    old = int(runner.get('max_epochs') or epochs)
    runner['max_epochs'] = int(epochs)
    lr = cfg.get('lr_config') or {}
    if lr.get('policy', 'step') == 'step' and 'step' in lr and old != epochs:
        steps = lr['step'] if isinstance(lr['step'], list) else [lr['step']]
        scaled = sorted({min(max(1, int(round(s * epochs / old))), max(epochs - 1, 1))
                         for s in steps})
        lr['step'] = scaled if isinstance(lr['step'], list) else scaled[0]
    for key in ('max_epochs', 'num_last_epochs', 'switch_epoch'):  # hooks counting epochs
        for hook in cfg.get('custom_hooks') or []:
            if key in hook and isinstance(hook[key], int) and old:
                hook[key] = max(1, int(round(hook[key] * epochs / old)))


def _split_cfg(found, split: str, pipeline: list) -> dict:
    return dict(found.dataset_cfg(split, pipeline=copy.deepcopy(pipeline)))


def config_from_data(data_path: str, model: str, epochs: int | None = None,
                     img_size: int | None = None, batch_size: int | None = None,
                     work_dir: str | None = None) -> tuple[dict, list[str]]:
    """The complete config (a plain ``dict``) to train ``model`` on the labelled images at
    ``data_path``, and notes on what was guessed (log them)."""
    from detforge.apis.model_names import config_path_of, find_model
    from detforge.config import Config
    from detforge.data.formats import detect_format

    entry = find_model(model)
    base = Config.fromfile(str(config_path_of(model)))
    cfg = base._cfg_dict.to_dict()
    found = detect_format(data_path)
    notes = [f'--data {data_path}: {found.format} data at {found.root}, '
             f'{len(found.classes)} classes {tuple(found.classes)}, splits '
             f'{sorted(found.splits)}'] + list(found.notes)
    if entry.needs_masks and found.format not in ('coco', 'roboflow-coco', 'labelme'):
        raise DetforgeError(f'--model {model} needs instance masks, and {found.format} data '
                            f'has boxes only; use a box detector (detforge list-models) or '
                            f'COCO / LabelMe data with polygons')
    if 'train' not in found.splits:
        raise DetforgeError(f'--data {data_path}: no training split found '
                            f'(found {sorted(found.splits)})')

    data = cfg['data']
    train_pipeline = copy.deepcopy(data['train']['pipeline'])
    test_pipeline = copy.deepcopy(data.get('test', data.get('val'))['pipeline'])
    if img_size is not None:
        short = _test_short_side(test_pipeline)
        if short is None:
            raise DetforgeError(f'--img-size: the config of {model} has no img_scale to scale')
        factor = img_size / short
        train_pipeline = scale_pipeline(train_pipeline, factor)
        test_pipeline = scale_pipeline(test_pipeline, factor)
        for hook in cfg.get('custom_hooks') or []:  # PipelineSwitchHook's later pipeline
            if hook.get('switch_pipeline'):
                hook['switch_pipeline'] = scale_pipeline(hook['switch_pipeline'], factor)
        notes.append(f'--img-size {img_size}: every img_scale scaled by {factor:.3g} (the '
                     f'test short side was {short})')

    val_split = next((s for s in ('val', 'test') if s in found.splits), None)
    if val_split is None:
        val_split = 'train'
        notes.append('no val or test split: the evaluation during training uses the training '
                     'images (it shows how well the model fits them, not how it generalises)')
    elif val_split == 'test':
        notes.append('no val split: evaluating on the test split during training')
    test_split = next(s for s in ('test', 'val', 'train') if s in found.splits)

    new_data = OrderedDict()
    for key in ('samples_per_gpu', 'workers_per_gpu'):
        if key in data:
            new_data[key] = data[key]
    if batch_size is not None:
        new_data['samples_per_gpu'] = int(batch_size)
    new_data['train'] = _split_cfg(found, 'train', train_pipeline)
    new_data['val'] = _split_cfg(found, val_split, test_pipeline)
    new_data['test'] = _split_cfg(found, test_split, test_pipeline)
    cfg['data'] = dict(new_data)

    for stale in [k for k in cfg if k.startswith(('train_pipeline', 'test_pipeline'))]:
        del cfg[stale]  # e.g. train_pipeline_ms of the base dataset file
    cfg['train_pipeline'] = train_pipeline
    cfg['test_pipeline'] = test_pipeline
    cfg['dataset_type'] = new_data['train']['type']
    cfg['data_root'] = found.root
    cfg['classes'] = tuple(found.classes)
    if set_num_classes(cfg['model'], len(found.classes)) == 0:
        raise DetforgeError(f'the config of {model} has no num_classes to set')

    if epochs is not None:
        scale_schedule(cfg, epochs)
    metric = found.metric
    if entry.needs_masks:  # box and mask AP, as the model's own config evaluates
        metric = (cfg.get('evaluation') or {}).get('metric', ['bbox', 'segm'])
    cfg['evaluation'] = dict(interval=1, metric=metric, save_best='auto')
    checkpoint = dict(cfg.get('checkpoint_config') or {})
    checkpoint.update(interval=1, max_keep_ckpts=3)
    cfg['checkpoint_config'] = checkpoint
    if work_dir is not None:
        cfg['work_dir'] = osp.abspath(work_dir)
    return cfg, notes


def render_config(cfg: dict, model: str, argv: list[str] | None = None,
                  notes: list[str] | None = None) -> str:
    """The config as a commented Python file, sections in the order a user edits them."""
    from detforge.apis.model_names import find_model
    from detforge.config import format_python
    entry = find_model(model)
    command = 'detforge ' + ' '.join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    import textwrap

    def comment(text: str) -> list[str]:
        return ['# ' + line for line in textwrap.wrap(text, 90, break_long_words=False,
                                                     break_on_hyphens=False)]
    head = comment(f'Written by `{command}`.')
    head += comment(f'Model {model!r}: {entry.summary}. From {entry.config}, resolved in '
                    f'full (no _base_): edit anything here and train again with')
    head += ['#     detforge train THIS_FILE.py']
    head += comment('data.train / data.val / data.test are what the run reads; their '
                    'pipelines are copies of train_pipeline / test_pipeline below (edit the '
                    'ones inside data to change the run).')
    for note in notes or []:
        head += comment(f'note: {note}')
    parts = ['\n'.join(head), '']
    done = set()
    for title, keys in _SECTIONS.items():
        block = OrderedDict((k, cfg[k]) for k in keys if k in cfg)
        if not block:
            continue
        done.update(block)
        parts.append(f'# ---- {title}')
        parts.append(format_python(dict(block)).rstrip('\n'))
        parts.append('')
    rest = OrderedDict((k, v) for k, v in cfg.items() if k not in done)
    if rest:
        parts.append('# ---- Other settings')
        parts.append(format_python(dict(rest)).rstrip('\n'))
        parts.append('')
    return '\n'.join(parts)
