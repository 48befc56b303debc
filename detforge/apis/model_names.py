"""Short model names for ``detforge train --data PATH --model NAME``: each is a shipped config,
with its BCCD-320 accuracy and speed as recorded by ``benchmarks/bench_accuracy.py``.

Nothing here is a measurement: the numbers are read from ``benchmarks/accuracy.md`` (one row
per run, with its date), so a model without a recorded run says "not measured".
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from detforge.registry import DetforgeError

__all__ = ['ModelName', 'MODEL_NAMES', 'repo_root', 'config_path_of', 'find_model',
           'Measurement', 'recorded_measurements']


@dataclass(frozen=True)
class ModelName:
    """A short name, the shipped config it stands for, and what it needs of the data."""
    name: str
    config: str  # relative to the repository root
    summary: str
    needs_masks: bool = False


MODEL_NAMES: dict[str, ModelName] = {m.name: m for m in (
    ModelName('retinanet_r18', 'configs/retinanet/retinanet_r18_fpn_gn-head_giou_ms_9e_bccd320.py',
              'RetinaNet, ResNet-18-FPN, GroupNorm head, GIoU loss, multi-scale; 9 epochs'),
    ModelName('retinanet_r18_plain', 'configs/retinanet/retinanet_r18_fpn_12e_bccd320.py',
              'RetinaNet, ResNet-18-FPN, the plain MMDetection recipe; 12 epochs'),
    ModelName('faster_rcnn_r18', 'configs/faster_rcnn/faster_rcnn_r18_fpn_1x_bccd.py',
              'Faster R-CNN, ResNet-18-FPN; 12 epochs'),
    ModelName('fcos_r18',
              'configs/fcos/fcos_r18_fpn_gn-head_center-normbbox-centeronreg-giou_ms_9e_bccd320.py',
              'FCOS, ResNet-18-FPN, GroupNorm head, multi-scale; 9 epochs'),
    ModelName('atss_r18', 'configs/atss/atss_r18_fpn_gn-head_ms_9e_bccd320.py',
              'ATSS, ResNet-18-FPN, GroupNorm head, multi-scale; 9 epochs'),
    ModelName('gfl_r18', 'configs/gfl/gfl_r18_fpn_gn-head_ms_9e_bccd320.py',
              'GFL, ResNet-18-FPN, GroupNorm head, multi-scale; 9 epochs'),
    ModelName('rtmdet_tiny', 'configs/rtmdet/rtmdet_tiny_bccd320.py',
              'RTMDet-tiny (CSPNeXt), AdamW, EMA, mosaic/mixup; 40 epochs'),
    ModelName('mask_rcnn_r18', 'configs/mask_rcnn/mask_rcnn_r18_fpn_12e_pennfudan.py',
              'Mask R-CNN, ResNet-18-FPN (needs masks: COCO or LabelMe polygons); 12 epochs',
              needs_masks=True),
)}


def repo_root() -> Path:
    """The folder holding ``configs/`` and ``benchmarks/`` (detforge installs with
    ``pip install -e .`` from its source tree)."""
    return Path(__file__).resolve().parents[2]


def find_model(name: str) -> ModelName:
    if name in MODEL_NAMES:
        return MODEL_NAMES[name]
    import difflib
    close = difflib.get_close_matches(name, list(MODEL_NAMES), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ''
    raise DetforgeError(f'--model {name!r} is not a known model name{hint} '
                        f'(`detforge list-models` lists them: {", ".join(MODEL_NAMES)}); '
                        f'or pass a config file instead: detforge train CONFIG')


def config_path_of(name: str) -> Path:
    path = repo_root() / find_model(name).config
    if not path.is_file():
        raise DetforgeError(f'--model {name}: its config {path} is missing (the model names '
                            f'need the configs/ folder of a detforge source checkout)')
    return path


@dataclass(frozen=True)
class Measurement:
    """One row of ``benchmarks/accuracy.md``: COCO box AP on the config's test set after
    training it as configured, on the machine the row names (CPU threads or a GPU)."""
    date: str
    ap: str
    ap50: str
    train_minutes: str
    s_per_iter: str
    s_per_test_image: str
    machine: str


_ROW = re.compile(r'^\|\s*(?P<date>[^|]+?)\s*\|\s*`(?P<config>[^`]+)`\s*\|\s*(?P<schedule>[^|]+?)'
                  r'\s*\|\s*(?P<ap>[^|]+?)\s*\|\s*(?P<ap50>[^|]+?)\s*\|\s*(?P<minutes>[^|]+?)'
                  r'\s*\|\s*(?P<s_iter>[^|]+?)\s*\|\s*(?P<s_img>[^|]+?)\s*\|\s*(?P<threads>[^|]+?)'
                  r'\s*\|(?:[^|]*\|)*\s*$')  # then the mask AP columns, if any


def recorded_measurements(path: Path | None = None) -> tuple[dict[str, Measurement], str]:
    """``({config path: latest measurement as configured}, caveat)`` from
    ``benchmarks/accuracy.md``; the caveat is the file's bold warning, if it has one
    (e.g. that the rows predate a change of the training code). Missing file: ``({}, '')``.
    """
    path = path or repo_root() / 'benchmarks' / 'accuracy.md'
    try:
        text = path.read_text(encoding='utf-8')
    except OSError:
        return {}, ''
    caveat = ''
    bold = re.search(r'\*\*(.+?)\*\*', text, flags=re.S)
    if bold:
        caveat = ' '.join(bold.group(1).split())
    found: dict[str, Measurement] = {}
    for line in text.splitlines():
        m = _ROW.match(line.strip())
        if not m or m['schedule'] != 'as configured':  # overrides change the model
            continue
        found[m['config']] = Measurement(m['date'], m['ap'], m['ap50'], m['minutes'],
                                         m['s_iter'], m['s_img'], m['threads'])
    return found, caveat
