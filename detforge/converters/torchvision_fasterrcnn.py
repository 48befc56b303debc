"""Convert a torchvision ``fasterrcnn_resnet50_fpn`` checkpoint to detforge's layout.

Use it with ``configs/faster_rcnn/faster_rcnn_r50_fpn_tv.py`` (torchvision's conventions:
91 class slots = 90 foreground classes plus background). torchvision puts background at
class index 0, detforge (as MMDetection 2.x) at the last index, so the classifier rows are
rotated (``[1..90, 0]``) and the background rows of the box regressor are dropped; our
class ``k`` is torchvision's label ``k + 1``.

Example::

    detforge convert torchvision-fasterrcnn fasterrcnn_resnet50_fpn_coco-258fb6c6.pth \\
        checkpoints/faster_rcnn_r50_fpn_tv.pth
"""
from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

import torch

from detforge.registry import DetforgeError

NAME = 'torchvision-fasterrcnn'
HELP = "torchvision's fasterrcnn_resnet50_fpn checkpoint -> detforge checkpoint"

# (torchvision pattern, detforge replacement); both the current (Conv2dNormActivation,
# ``.0.0``/``.0``) and the older plain-conv key names are accepted
_RULES = [
    (r'^backbone\.body\.', 'backbone.'),
    (r'^backbone\.fpn\.inner_blocks\.(\d+)\.(?:0\.)?(weight|bias)$', r'neck.lateral_convs.\1.conv.\2'),
    (r'^backbone\.fpn\.layer_blocks\.(\d+)\.(?:0\.)?(weight|bias)$', r'neck.fpn_convs.\1.conv.\2'),
    (r'^rpn\.head\.conv\.(?:0\.0\.)?(weight|bias)$', r'rpn_head.rpn_conv.\1'),
    (r'^rpn\.head\.cls_logits\.', 'rpn_head.rpn_cls.'),
    (r'^rpn\.head\.bbox_pred\.', 'rpn_head.rpn_reg.'),
    (r'^roi_heads\.box_head\.fc6\.', 'roi_head.bbox_head.shared_fcs.0.'),
    (r'^roi_heads\.box_head\.fc7\.', 'roi_head.bbox_head.shared_fcs.1.'),
    (r'^roi_heads\.box_predictor\.cls_score\.', 'roi_head.bbox_head.fc_cls.'),
    (r'^roi_heads\.box_predictor\.bbox_pred\.', 'roi_head.bbox_head.fc_reg.'),
]


def convert_key(key: str) -> str:
    """A torchvision key -> the detforge key, or raise ``DetforgeError`` for unknown keys."""
    for pattern, repl in _RULES:
        new, n = re.subn(pattern, repl, key)
        if n:
            return new
    raise DetforgeError(f'unexpected key {key!r} in a torchvision Faster R-CNN checkpoint')


def convert_state_dict(tv_state: dict) -> OrderedDict:
    """torchvision ``FasterRCNN.state_dict()`` -> detforge ``FasterRCNN.state_dict()``."""
    out = OrderedDict()
    for key, value in tv_state.items():
        new = convert_key(key)
        if new.startswith('roi_head.bbox_head.fc_cls.'):
            # background: torchvision row 0 -> our last row
            value = torch.cat([value[1:], value[:1]])
        elif new.startswith('roi_head.bbox_head.fc_reg.'):
            # (91 * 4) rows, background first -> (90 * 4) foreground rows
            value = value[4:]
        out[new] = value
    return out


def add_arguments(parser):
    parser.add_argument('src', help="torchvision checkpoint (a state dict, or {'model': ...})")
    parser.add_argument('dst', help='detforge checkpoint to write')


def main(args):
    src = Path(args.src)
    if not src.is_file():
        raise DetforgeError(f'{src}: no such checkpoint file')
    try:
        ckpt = torch.load(src, map_location='cpu', weights_only=True)
    except Exception as e:  # noqa: BLE001 - report any unreadable file the same way
        raise DetforgeError(f'{src}: cannot read it as a PyTorch checkpoint ({e})') from e
    state = ckpt.get('model', ckpt.get('state_dict', ckpt)) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or 'roi_heads.box_predictor.cls_score.weight' not in state:
        raise DetforgeError(f'{src}: not a torchvision Faster R-CNN state dict (expected keys '
                            "such as 'roi_heads.box_predictor.cls_score.weight')")
    converted = convert_state_dict(state)
    num_classes = converted['roi_head.bbox_head.fc_cls.weight'].size(0) - 1
    dst = Path(args.dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(dst.suffix + '.tmp')
    torch.save({'meta': dict(source=str(src), converter=NAME, num_classes=num_classes),
                'state_dict': converted}, tmp)
    tmp.replace(dst)
    print(f'wrote {dst}: {len(converted)} tensors, {num_classes} foreground classes')
    return 0
