"""Convert a torchvision ``maskrcnn_resnet50_fpn`` (v1) or ``maskrcnn_resnet50_fpn_v2``
checkpoint to detforge's layout.

Use it with ``configs/mask_rcnn/mask_rcnn_r50_fpn_tv.py`` (v1) or
``configs/mask_rcnn/mask_rcnn_r50_fpn_tv_v2.py`` (v2: the v2 Faster R-CNN's changes, and a
BatchNorm after each mask-head conv). Backbone, FPN, RPN and box head
are mapped as by ``torchvision-fasterrcnn`` (background moved from torchvision's class 0 to
our last class); the mask branch maps ``mask_head.{i}`` (or the older ``mask_fcn{i+1}``) to
``roi_head.mask_head.convs.{i}.conv``, ``mask_predictor.conv5_mask`` to ``upsample`` and
``mask_predictor.mask_fcn_logits`` to ``conv_logits`` without its background channel 0 (our
mask channel ``k`` is torchvision's label ``k + 1``).

Example::

    detforge convert torchvision-maskrcnn maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth \\
        checkpoints/mask_rcnn_r50_fpn_tv.pth
"""
from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

import torch

from detforge.registry import DetforgeError

from . import torchvision_fasterrcnn as box_converter

NAME = 'torchvision-maskrcnn'
HELP = "torchvision's maskrcnn_resnet50_fpn (v1 or _v2) checkpoint -> detforge checkpoint"

_MASK_RULES = [
    (r'^roi_heads\.mask_head\.(\d+)\.(?:0\.)?(weight|bias)$',
     lambda m: f'roi_head.mask_head.convs.{m.group(1)}.conv.{m.group(2)}'),
    # v2 (maskrcnn_resnet50_fpn_v2): each conv is Conv2dNormActivation(conv, BatchNorm2d)
    (r'^roi_heads\.mask_head\.(\d+)\.1\.', lambda m: f'roi_head.mask_head.convs.{m.group(1)}.bn.'),
    (r'^roi_heads\.mask_head\.mask_fcn(\d+)\.(weight|bias)$',
     lambda m: f'roi_head.mask_head.convs.{int(m.group(1)) - 1}.conv.{m.group(2)}'),
    (r'^roi_heads\.mask_predictor\.conv5_mask\.', lambda m: 'roi_head.mask_head.upsample.'),
    (r'^roi_heads\.mask_predictor\.mask_fcn_logits\.',
     lambda m: 'roi_head.mask_head.conv_logits.'),
]


def convert_key(key: str) -> str:
    """A torchvision key -> the detforge key, or raise ``DetforgeError`` for unknown keys."""
    for pattern, repl in _MASK_RULES:
        new, n = re.subn(pattern, repl, key)
        if n:
            return new
    try:
        return box_converter.convert_key(key)
    except DetforgeError:
        raise DetforgeError(f'unexpected key {key!r} in a torchvision Mask R-CNN checkpoint') \
            from None


def convert_state_dict(tv_state: dict) -> OrderedDict:
    """torchvision ``MaskRCNN.state_dict()`` -> detforge ``MaskRCNN.state_dict()``."""
    box_keys = {k: v for k, v in tv_state.items() if 'mask_' not in k}
    out = box_converter.convert_state_dict(box_keys)
    for key, value in tv_state.items():
        if key in box_keys:
            continue
        new = convert_key(key)
        if new.startswith('roi_head.mask_head.conv_logits.'):
            value = value[1:]  # drop torchvision's background channel
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
    if not isinstance(state, dict) or \
            'roi_heads.mask_predictor.mask_fcn_logits.weight' not in state:
        raise DetforgeError(f'{src}: not a torchvision Mask R-CNN state dict (expected keys such '
                            "as 'roi_heads.mask_predictor.mask_fcn_logits.weight')")
    converted = convert_state_dict(state)
    num_classes = converted['roi_head.bbox_head.fc_cls.weight'].size(0) - 1
    config = 'configs/mask_rcnn/mask_rcnn_r50_fpn_tv{}.py'.format(
        '_v2' if box_converter.is_v2(state) else '')
    dst = Path(args.dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(dst.suffix + '.tmp')
    torch.save({'meta': dict(source=str(src), converter=NAME, num_classes=num_classes,
                             config=config),
                'state_dict': converted}, tmp)
    tmp.replace(dst)
    print(f'wrote {dst}: {len(converted)} tensors, {num_classes} foreground classes; '
          f'use it with {config}')
    return 0
