"""Convert a torchvision ``fasterrcnn_resnet50_fpn`` (v1) or ``fasterrcnn_resnet50_fpn_v2``
checkpoint to detforge's layout.

Use it with ``configs/faster_rcnn/faster_rcnn_r50_fpn_tv.py`` (v1) or
``configs/faster_rcnn/faster_rcnn_r50_fpn_tv_v2.py`` (v2: batch norm in the FPN, two RPN
convs, a box head of four conv+BN layers and one fc), both with torchvision's conventions:
91 class slots = 90 foreground classes plus background. torchvision puts background at
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
HELP = "torchvision's fasterrcnn_resnet50_fpn (v1 or _v2) checkpoint -> detforge checkpoint"

# (torchvision pattern, detforge replacement); both the current (Conv2dNormActivation,
# ``.0.0``/``.0``) and the older plain-conv key names are accepted
_RULES = [
    # MobileNetV3 bodies are torchvision's `features` (numbered blocks); ResNet ones named layers
    (r'^backbone\.body\.(\d+)\.', r'backbone.features.\1.'),
    (r'^backbone\.body\.', 'backbone.'),
    (r'^backbone\.fpn\.inner_blocks\.(\d+)\.(?:0\.)?(weight|bias)$', r'neck.lateral_convs.\1.conv.\2'),
    (r'^backbone\.fpn\.layer_blocks\.(\d+)\.(?:0\.)?(weight|bias)$', r'neck.fpn_convs.\1.conv.\2'),
    # v2: the FPN's convs are Conv2dNormActivation(conv, BatchNorm2d)
    (r'^backbone\.fpn\.inner_blocks\.(\d+)\.1\.', r'neck.lateral_convs.\1.bn.'),
    (r'^backbone\.fpn\.layer_blocks\.(\d+)\.1\.', r'neck.fpn_convs.\1.bn.'),
    (r'^rpn\.head\.conv\.(?:0\.0\.)?(weight|bias)$', r'rpn_head.rpn_conv.\1'),
    (r'^rpn\.head\.cls_logits\.', 'rpn_head.rpn_cls.'),
    (r'^rpn\.head\.bbox_pred\.', 'rpn_head.rpn_reg.'),
    (r'^roi_heads\.box_head\.fc6\.', 'roi_head.bbox_head.shared_fcs.0.'),
    (r'^roi_heads\.box_head\.fc7\.', 'roi_head.bbox_head.shared_fcs.1.'),
    # v2: FastRCNNConvFCHead = 4 x (conv, BN, ReLU), Flatten (index 4), Linear (index 5), ReLU
    (r'^roi_heads\.box_head\.([0-3])\.0\.', r'roi_head.bbox_head.shared_convs.\1.conv.'),
    (r'^roi_heads\.box_head\.([0-3])\.1\.', r'roi_head.bbox_head.shared_convs.\1.norm.'),
    (r'^roi_heads\.box_head\.5\.', 'roi_head.bbox_head.shared_fcs.0.'),
    (r'^roi_heads\.box_predictor\.cls_score\.', 'roi_head.bbox_head.fc_cls.'),
    (r'^roi_heads\.box_predictor\.bbox_pred\.', 'roi_head.bbox_head.fc_reg.'),
]


# v2: RPNHead(conv_depth=2) -> rpn_conv.{0,1}.0; detforge's RPNHead(num_convs=2) is
# MMDetection's Sequential of two ConvModules: rpn_conv.{0,1}.conv
_RPN_CONV_V2 = re.compile(r'^rpn\.head\.conv\.(\d+)\.0\.(weight|bias)$')


def is_v2(tv_state: dict) -> bool:
    """A ``fasterrcnn_resnet50_fpn_v2`` state dict (a second RPN conv)."""
    return 'rpn.head.conv.1.0.weight' in tv_state


def convert_key(key: str, v2: bool = False) -> str:
    """A torchvision key -> the detforge key, or raise ``DetforgeError`` for unknown keys."""
    if v2 and (m := _RPN_CONV_V2.match(key)):
        return f'rpn_head.rpn_conv.{m.group(1)}.conv.{m.group(2)}'
    for pattern, repl in _RULES:
        new, n = re.subn(pattern, repl, key)
        if n:
            return new
    raise DetforgeError(f'unexpected key {key!r} in a torchvision Faster R-CNN checkpoint')


def convert_state_dict(tv_state: dict) -> OrderedDict:
    """torchvision ``FasterRCNN.state_dict()`` (v1 or v2) -> detforge ``FasterRCNN.state_dict()``."""
    out = OrderedDict()
    v2 = is_v2(tv_state)
    for key, value in tv_state.items():
        new = convert_key(key, v2)
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
    if 'backbone.body.0.0.weight' in state:
        config = 'configs/faster_rcnn/faster_rcnn_mobilenet_v3_large_fpn_tv.py'
    else:
        config = 'configs/faster_rcnn/faster_rcnn_r50_fpn_tv{}.py'.format(
            '_v2' if is_v2(state) else '')
    torch.save({'meta': dict(source=str(src), converter=NAME, num_classes=num_classes,
                             config=config),
                'state_dict': converted}, tmp)
    tmp.replace(dst)
    print(f'wrote {dst}: {len(converted)} tensors, {num_classes} foreground classes; '
          f'use it with {config}')
    return 0
