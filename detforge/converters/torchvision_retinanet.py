"""Convert a torchvision ``retinanet_resnet50_fpn`` (v1) or ``retinanet_resnet50_fpn_v2``
checkpoint to detforge's RetinaNet.

v1 loads into ``configs/retinanet/retinanet_r50_fpn_tv.py``, v2 (GroupNorm in the head's
conv towers, P6 from C5, GIoU loss) into ``configs/retinanet/retinanet_r50_fpn_tv_v2.py``::

    detforge convert torchvision-retinanet torchvision://retinanet_resnet50_fpn retinanet_tv.pth
    detforge test configs/retinanet/retinanet_r50_fpn_tv.py retinanet_tv.pth ...

SRC is a file saved with ``torch.save(model.state_dict(), ...)`` (or a dict holding ``model`` /
``state_dict``), a URL, or ``torchvision://retinanet_resnet50_fpn`` for torchvision's COCO
weights (downloaded to torch.hub's cache). Both torchvision's current and older (pre-0.13)
key layouts are understood. Labels keep torchvision's 91 COCO slots (0 is the unused
background slot, as in torchvision).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from detforge.registry import DetforgeError

NAME = 'torchvision-retinanet'
HELP = ("torchvision's retinanet_resnet50_fpn (v1 or _v2) weights → "
        "configs/retinanet/retinanet_r50_fpn_tv[_v2].py")

__all__ = ['convert_state_dict']

# (pattern on torchvision's key, replacement in detforge's); tried in order
_RULES = [
    (r'^backbone\.body\.(.*)$', r'backbone.\1'),
    (r'^backbone\.fpn\.inner_blocks\.(\d+)\.(?:0\.)?(weight|bias)$', r'neck.lateral_convs.\1.conv.\2'),
    (r'^backbone\.fpn\.layer_blocks\.(\d+)\.(?:0\.)?(weight|bias)$', r'neck.fpn_convs.\1.conv.\2'),
    (r'^head\.classification_head\.cls_logits\.(weight|bias)$', r'bbox_head.retina_cls.\1'),
    (r'^head\.regression_head\.bbox_reg\.(weight|bias)$', r'bbox_head.retina_reg.\1'),
]
_TOWER = re.compile(r'^head\.(classification|regression)_head\.conv\.(\d+)\.(?:([01])\.)?'
                    r'(weight|bias)$')
_EXTRA = re.compile(r'^backbone\.fpn\.extra_blocks\.(p6|p7)\.(weight|bias)$')


def convert_state_dict(tv_state: dict, num_fpn_levels: int = 3) -> dict:
    """Rename torchvision RetinaNet keys to detforge's; raises on a key it does not know."""
    out = {}
    for key, value in tv_state.items():
        new = None
        for pattern, repl in _RULES:
            if re.match(pattern, key):
                new = re.sub(pattern, repl, key)
                break
        if new is None and (m := _TOWER.match(key)):
            branch, idx, part, param = m.groups()
            # current layout: conv.{j}.0 (Conv2dNormActivation's conv) and, in v2, conv.{j}.1
            # (its GroupNorm); old: conv.{2j} (conv, relu, ...)
            j = int(idx) if part else int(idx) // 2
            layer = 'gn' if part == '1' else 'conv'
            new = f"bbox_head.{'cls' if branch == 'classification' else 'reg'}_convs.{j}.{layer}.{param}"
        if new is None and (m := _EXTRA.match(key)):
            level, param = m.groups()
            new = f'neck.fpn_convs.{num_fpn_levels + (0 if level == "p6" else 1)}.conv.{param}'
        if new is None:
            if key.startswith('anchor_generator'):
                continue
            raise DetforgeError(f'unexpected key {key!r} in the torchvision RetinaNet checkpoint')
        out[new] = value
    return out


def _load_source(src: str) -> dict:
    from detforge.models.pretrained import load_pretrained_state_dict
    if '://' not in src and not Path(src).is_file():
        raise DetforgeError(f'source checkpoint not found: {src}')
    return load_pretrained_state_dict(src)


def _class_names() -> list[str]:
    from torchvision.models.detection import RetinaNet_ResNet50_FPN_Weights
    return list(RetinaNet_ResNet50_FPN_Weights.COCO_V1.meta['categories'])


def add_arguments(parser) -> None:
    parser.add_argument('src', metavar='SRC',
                        help='torchvision checkpoint: a file, a URL or torchvision://retinanet_resnet50_fpn')
    parser.add_argument('dst', metavar='DST', help='output checkpoint (.pth)')


def main(args) -> int:
    state = convert_state_dict(_load_source(args.src))
    dst = Path(args.dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    v2 = any('.gn.' in key for key in state)
    config = 'configs/retinanet/retinanet_r50_fpn_tv{}.py'.format('_v2' if v2 else '')
    meta = dict(CLASSES=_class_names(), converted_from=str(args.src), config=config)
    tmp = dst.with_name(dst.name + '.tmp')
    torch.save(dict(meta=meta, state_dict=state), tmp)
    tmp.replace(dst)
    print(f'wrote {len(state)} tensors to {dst}; use it with {config}')
    return 0
