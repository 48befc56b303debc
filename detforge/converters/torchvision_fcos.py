"""Convert a torchvision ``fcos_resnet50_fpn`` checkpoint to detforge's FCOS.

The result loads into ``configs/fcos/fcos_r50_fpn_tv.py``::

    detforge convert torchvision-fcos torchvision://fcos_resnet50_fpn fcos_tv.pth
    detforge test configs/fcos/fcos_r50_fpn_tv.py fcos_tv.pth ...

SRC is a file saved with ``torch.save(model.state_dict(), ...)`` (or a dict holding ``model`` /
``state_dict``), a URL, or ``torchvision://fcos_resnet50_fpn`` for torchvision's COCO weights.
torchvision's FCOS has no per-level scale: the converted checkpoint sets MMDetection's
``bbox_head.scales.*.scale`` to 1. Labels keep torchvision's 91 COCO slots (0 is the unused
background slot).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from detforge.registry import DetforgeError

NAME = 'torchvision-fcos'
HELP = "torchvision's fcos_resnet50_fpn weights → configs/fcos/fcos_r50_fpn_tv.py"

__all__ = ['convert_state_dict']

# (pattern on torchvision's key, replacement in detforge's); tried in order
_RULES = [
    (r'^backbone\.body\.(.*)$', r'backbone.\1'),
    (r'^backbone\.fpn\.inner_blocks\.(\d+)\.(?:0\.)?(weight|bias)$', r'neck.lateral_convs.\1.conv.\2'),
    (r'^backbone\.fpn\.layer_blocks\.(\d+)\.(?:0\.)?(weight|bias)$', r'neck.fpn_convs.\1.conv.\2'),
    (r'^head\.classification_head\.cls_logits\.(weight|bias)$', r'bbox_head.conv_cls.\1'),
    (r'^head\.regression_head\.bbox_reg\.(weight|bias)$', r'bbox_head.conv_reg.\1'),
    (r'^head\.regression_head\.bbox_ctrness\.(weight|bias)$', r'bbox_head.conv_centerness.\1'),
]
# towers: Sequential(conv, GroupNorm, ReLU) * num_convs
_TOWER = re.compile(r'^head\.(classification|regression)_head\.conv\.(\d+)\.(weight|bias)$')
_EXTRA = re.compile(r'^backbone\.fpn\.extra_blocks\.(p6|p7)\.(weight|bias)$')


def convert_state_dict(tv_state: dict, num_fpn_levels: int = 3, num_head_levels: int = 5) -> dict:
    """Rename torchvision FCOS keys to detforge's and add the unit per-level scales; raises on a
    key it does not know."""
    out = {}
    for key, value in tv_state.items():
        new = None
        for pattern, repl in _RULES:
            if re.match(pattern, key):
                new = re.sub(pattern, repl, key)
                break
        if new is None and (m := _TOWER.match(key)):
            branch, idx, param = m.groups()
            j, part = divmod(int(idx), 3)
            if part == 2:
                raise DetforgeError(f'unexpected key {key!r}: a ReLU has no parameters')
            new = f"bbox_head.{'cls' if branch == 'classification' else 'reg'}_convs.{j}." \
                  f"{'conv' if part == 0 else 'gn'}.{param}"
        if new is None and (m := _EXTRA.match(key)):
            level, param = m.groups()
            new = f'neck.fpn_convs.{num_fpn_levels + (0 if level == "p6" else 1)}.conv.{param}'
        if new is None:
            if key.startswith('anchor_generator'):
                continue
            raise DetforgeError(f'unexpected key {key!r} in the torchvision FCOS checkpoint')
        out[new] = value
    for level in range(num_head_levels):
        out[f'bbox_head.scales.{level}.scale'] = torch.tensor(1.0)
    return out


def _load_source(src: str) -> dict:
    from detforge.models.pretrained import load_pretrained_state_dict
    if '://' not in src and not Path(src).is_file():
        raise DetforgeError(f'source checkpoint not found: {src}')
    return load_pretrained_state_dict(src)


def _class_names() -> list[str]:
    from torchvision.models.detection import FCOS_ResNet50_FPN_Weights
    return list(FCOS_ResNet50_FPN_Weights.COCO_V1.meta['categories'])


def add_arguments(parser) -> None:
    parser.add_argument('src', metavar='SRC',
                        help='torchvision checkpoint: a file, a URL or torchvision://fcos_resnet50_fpn')
    parser.add_argument('dst', metavar='DST', help='output checkpoint (.pth)')


def main(args) -> int:
    state = convert_state_dict(_load_source(args.src))
    dst = Path(args.dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(CLASSES=_class_names(), converted_from=str(args.src), config='configs/fcos/fcos_r50_fpn_tv.py')
    tmp = dst.with_name(dst.name + '.tmp')
    torch.save(dict(meta=meta, state_dict=state), tmp)
    tmp.replace(dst)
    print(f'wrote {len(state)} tensors to {dst}')
    return 0
