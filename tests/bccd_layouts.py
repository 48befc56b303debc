"""A few real BCCD images in every layout detforge reads (helpers for the format and
check-data tests): a VOC subset copied from the shared data, and its YOLO, LabelMe and
Roboflow-COCO conversions written by ``detforge convert``."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from detforge.cli import main as cli

# no degenerate box among them (BCCD's two are in 00338 and 00343)
TRAIN = ['BloodImage_00001', 'BloodImage_00003', 'BloodImage_00004', 'BloodImage_00005']
VAL = ['BloodImage_00000', 'BloodImage_00002']
SPARE = 'BloodImage_00006'  # a real image that is in no split (for the damaged copies)
TINY = 'tests/configs/retinanet_r18_tiny_bccd.py'


def make_voc_subset(bccd_voc_root: Path, out: Path) -> Path:
    """``out`` in VOC layout with the TRAIN and VAL images and split files."""
    for sub in ('Annotations', 'JPEGImages', 'ImageSets/Main'):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for img_id in TRAIN + VAL:
        shutil.copy(bccd_voc_root / 'Annotations' / f'{img_id}.xml', out / 'Annotations')
        shutil.copy(bccd_voc_root / 'JPEGImages' / f'{img_id}.jpg', out / 'JPEGImages')
    (out / 'ImageSets/Main/train.txt').write_text('\n'.join(TRAIN) + '\n')
    (out / 'ImageSets/Main/val.txt').write_text('\n'.join(VAL) + '\n')
    return out


def add_roboflow_placeholder(coco_root: Path, name: str = 'cells') -> None:
    """Make ``detforge convert to-coco`` output look like a Roboflow export: category 0 is
    the data set's name, the supercategory of every real class, used by no annotation."""
    for ann_file in coco_root.glob('*/_annotations.coco.json'):
        data = json.loads(ann_file.read_text())
        cats = [dict(c, supercategory=name) for c in data['categories']]
        data['categories'] = [dict(id=0, name=name, supercategory='none')] + cats
        ann_file.write_text(json.dumps(data))


def make_layouts(voc: Path, tmp: Path) -> dict[str, Path]:
    """``{format: folder}`` for voc, yolo, labelme and roboflow-coco, all from ``voc``."""
    layouts = {'voc': voc}
    for fmt, name in (('yolo', 'to-yolo'), ('labelme', 'to-labelme'),
                      ('roboflow-coco', 'to-coco')):
        out = tmp / fmt
        assert cli(['convert', name, str(voc), str(out), '--images', 'copy']) == 0
        layouts[fmt] = out
    add_roboflow_placeholder(layouts['roboflow-coco'])
    return layouts


def write_train_config(repo_root: Path, found, path: Path, base: str = TINY,
                       **overrides) -> Path:
    """The tiny RetinaNet test config (or ``base``) reading the data ``found`` by
    ``detect_format``."""
    from detforge.compat import load_config
    cfg = load_config(str(repo_root / base))
    train_pipeline, test_pipeline = cfg.data.train.pipeline, cfg.data.val.pipeline
    cfg.data.train = found.dataset_cfg('train', pipeline=train_pipeline)
    val = 'val' if 'val' in found.splits else 'train'
    cfg.data.val = found.dataset_cfg(val, pipeline=test_pipeline, test_mode=True)
    cfg.data.test = found.dataset_cfg(val, pipeline=test_pipeline, test_mode=True)
    head = cfg.model.roi_head.bbox_head if 'roi_head' in cfg.model else cfg.model.bbox_head
    head.num_classes = len(found.classes)
    cfg.evaluation = dict(interval=1, metric=found.metric)
    cfg.data.samples_per_gpu = 2
    for key, value in overrides.items():
        cfg[key] = value
    cfg.dump(str(path))
    return path
