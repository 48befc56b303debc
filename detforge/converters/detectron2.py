"""Convert a Detectron2 checkpoint (RetinaNet, Faster / Mask R-CNN R-FPN, Faster R-CNN C4).

    detforge convert detectron2 model_final.pkl retinanet_d2.pth --config retinanet_R_50_FPN_1x.yaml
    detforge test configs/retinanet/retinanet_r50_fpn_d2.py retinanet_d2.pth ...

SRC is a zoo ``.pkl`` (a pickle of numpy arrays, read with an unpickler that rebuilds arrays
only) or a ``.pth`` saved by Detectron2's checkpointer (read with
``torch.load(weights_only=True)``). DST gets ``{'meta', 'state_dict'}`` in MMDetection 2.x's
layout for ``configs/retinanet/retinanet_r50_fpn_d2.py``,
``configs/faster_rcnn/faster_rcnn_r50_fpn_d2.py``, ``configs/mask_rcnn/mask_rcnn_r50_fpn_d2.py``
or ``configs/faster_rcnn/faster_rcnn_r50_c4_d2.py``, which reproduce Detectron2's COCO models
(docs/detectron2.md). With ``--config`` (the model's Detectron2 YAML file), the class count
and the pixel statistics are checked against the checkpoint, and ``--out-config`` writes the
YAML translated into a detforge config (``detforge convert d2-config``) for a model that is
not Detectron2's COCO default (other classes, depth, anchors).
"""
from __future__ import annotations

from pathlib import Path

import torch

from detforge.registry import DetforgeError

from ._detectron2_weights import (FAMILIES, convert_state_dict, detect_family,
                                  load_detectron2_checkpoint)

NAME = 'detectron2'
HELP = ("Detectron2's RetinaNet / Faster R-CNN / Mask R-CNN R-FPN and Faster R-CNN C4 "
        'checkpoints (.pkl or .pth) → configs/*/*_d2.py')


def _num_classes(state: dict, family: str) -> int:
    if family == 'retinanet':
        return None  # depends on the anchors per position; checked by loading
    key = 'roi_head.bbox_head.{}fc_cls.weight'.format('2.' if family == 'cascade_mask_rcnn' else '')
    return state[key].shape[0] - 1


def _family_of(model: dict) -> str:
    """The :data:`FAMILIES` key of a translated detforge model config."""
    if model['type'] == 'RetinaNet':
        return 'retinanet'
    if model['type'] == 'MaskRCNN':
        return 'mask_rcnn'
    if model['roi_head']['type'] == 'CascadeRoIHead':
        return 'cascade_mask_rcnn'
    return 'faster_rcnn_c4' if model['roi_head'].get('shared_head') else 'faster_rcnn'


def _check_against_yaml(yaml_path: str, family: str, state: dict, weights: dict):
    """The translated YAML; raises when it describes another model than the checkpoint."""
    from ._detectron2_config import translate
    tr = translate(yaml_path)
    model = tr.config['model']
    want = _family_of(model)
    if want != family:
        raise DetforgeError(f'{yaml_path} describes a {want} model, but the checkpoint '
                            f'is a {family} model')
    if family != 'retinanet':
        head = model['roi_head']['bbox_head']
        classes = (head[-1] if isinstance(head, list) else head)['num_classes']
        if _num_classes(state, family) != classes:
            raise DetforgeError(f'{yaml_path}: MODEL.ROI_HEADS.NUM_CLASSES is {classes} but the '
                                f'checkpoint has {_num_classes(state, family)} classes')
    else:
        head = model['bbox_head']
        anchors = len(head['anchor_generator']['sizes'][0]) * len(head['anchor_generator']['ratios'])
        out = state['bbox_head.retina_cls.weight'].shape[0]
        if out != anchors * head['num_classes']:
            raise DetforgeError(f'{yaml_path}: MODEL.RETINANET.NUM_CLASSES {head["num_classes"]} '
                                f'x {anchors} anchors per position != the {out} outputs of '
                                f'head.cls_score in the checkpoint')
    for name, key in (('pixel_mean', 'mean'), ('pixel_std', 'std')):
        if name in weights:  # older checkpoints keep the input statistics as buffers
            saved = [round(float(v), 3) for v in weights[name].flatten()]
            wanted = [round(float(v), 3) for v in model['data_preprocessor'][key]]
            if saved != wanted:
                print(f'warning: the checkpoint was trained with {name} {saved}, the config '
                      f'says {wanted}')
    return tr


def add_arguments(parser) -> None:
    parser.add_argument('src', metavar='SRC', help='Detectron2 checkpoint (.pkl or .pth)')
    parser.add_argument('dst', metavar='DST', help='output checkpoint (.pth)')
    parser.add_argument('--config', metavar='D2_CONFIG.yaml',
                        help="the model's Detectron2 YAML config (checked against the weights)")
    parser.add_argument('--out-config', metavar='OUT.py',
                        help='also write the YAML translated into a detforge config (needs --config)')


def main(args) -> int:
    if args.out_config and not args.config:
        raise DetforgeError('--out-config needs --config (the Detectron2 YAML to translate)')
    weights, info = load_detectron2_checkpoint(args.src)
    family = detect_family(weights)
    state, skipped = convert_state_dict(weights)
    config = FAMILIES[family]
    if args.config:
        tr = _check_against_yaml(args.config, family, state, weights)
        if args.out_config:
            out = Path(args.out_config)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(tr.render())
            config = str(out)
            for key, value, why in tr.untranslated:
                print(f'warning: {key} = {value!r} not translated: {why}')
    meta = dict(converted_from=str(args.src), config=config, detectron2=dict(info))
    if family != 'retinanet' and _num_classes(state, family) == 80 or \
            family == 'retinanet' and state['bbox_head.retina_cls.weight'].shape[0] == 720:
        from detforge.data.coco import CocoDataset
        meta['CLASSES'] = list(CocoDataset.CLASSES)  # Detectron2's COCO order is the same
    dst = Path(args.dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + '.tmp')
    torch.save(dict(meta=meta, state_dict=state), tmp)
    tmp.replace(dst)
    note = f' (not weights, left out: {", ".join(skipped)})' if skipped else ''
    print(f'wrote {len(state)} tensors of a Detectron2 {family} model to {dst}{note}; '
          f'use it with {config}')
    return 0
