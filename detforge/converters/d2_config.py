"""Translate a Detectron2 YAML config (with its ``_BASE_`` chain) into a detforge config.

    detforge convert d2-config configs/COCO-Detection/retinanet_R_50_FPN_1x.yaml retinanet.py

RetinaNet and Faster R-CNN (GeneralizedRCNN with StandardROIHeads) on ResNet / ResNeXt FPN
backbones are translated: model, input (pixel statistics, resize, flip), COCO datasets,
solver (iteration-based). Every key of the YAML chain that has no detforge equivalent is
named in a comment block at the top of OUT.py and printed as a warning; none is dropped
silently. YAML is read with ``yaml.safe_load`` semantics (Detectron2's
``!!python/object/apply:eval`` anchor sizes by a restricted arithmetic evaluator).
"""
from __future__ import annotations

from pathlib import Path

from ._detectron2_config import translate

NAME = 'd2-config'
HELP = 'Detectron2 YAML config (RetinaNet / Faster R-CNN FPN) → detforge config (.py)'


def add_arguments(parser) -> None:
    parser.add_argument('src', metavar='D2.yaml', help='Detectron2 YAML config')
    parser.add_argument('dst', metavar='OUT.py', help='detforge config to write')


def main(args) -> int:
    tr = translate(args.src)
    out = Path(args.dst)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(tr.render())
    for key, value, why in tr.untranslated:
        print(f'warning: {key} = {value!r} not translated: {why}')
    print(f'wrote {out} ({tr.config["model"]["type"]}; {len(tr.untranslated)} key(s) not '
          f'translated, named at its top)')
    return 0
