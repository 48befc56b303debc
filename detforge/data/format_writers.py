"""Write a data set (any format :func:`~detforge.data.formats.detect_format` reads) as COCO,
YOLO or LabelMe; the work behind ``detforge convert to-coco / to-yolo / to-labelme``.

Every split is read with its dataset type (``test_mode=True``: no image left out), so the
written boxes are exactly the boxes detforge trains on: invalid boxes (degenerate, outside
the image, unknown class) are dropped as the datasets drop them, and counted in the log.
Ignore boxes (COCO crowd, VOC difficult) are written as ``iscrowd=1`` (COCO) and
``"difficult": true`` (LabelMe); YOLO has no ignore boxes, so they are left out (counted).

Output layouts (each recognised again by ``detect_format``):

- COCO: ``OUT/{train,valid,test}/_annotations.coco.json`` (Roboflow's layout); with
  ``images='keep'`` the ``file_name``s point at the source images (relative paths). The
  ``segmentation`` of COCO sources and the shape outlines of LabelMe sources are kept
  (``area`` is the box area).
- YOLO: ``OUT/data.yaml``, ``OUT/images/SPLIT/``, ``OUT/labels/SPLIT/NAME.txt``
  (``CLASS cx cy w h`` normalised, 6 decimals; an image without boxes gets an empty file).
- LabelMe: ``OUT/SPLIT/NAME.json`` with ``rectangle`` shapes, the image beside it (or, with
  ``images='keep'``, ``imagePath`` pointing at the source image).
"""
from __future__ import annotations

import json
import logging
import os
import os.path as osp
import shutil

import numpy as np

from .errors import DatasetError

__all__ = ['read_splits', 'write_coco', 'write_yolo', 'write_labelme', 'IMAGE_MODES']

logger = logging.getLogger('detforge.data')
IMAGE_MODES = ('copy', 'link', 'keep')
_ROBOFLOW_SPLIT = {'train': 'train', 'val': 'valid', 'test': 'test'}


def read_splits(src: str):
    """``(found, {split: dataset})``: the data set at ``src`` with every split built in test
    mode (no pipeline)."""
    from .builder import build_dataset
    from .formats import detect_format
    found = detect_format(src)
    datasets = {split: build_dataset(found.dataset_cfg(split, pipeline=[], test_mode=True))
                for split in found.splits}
    return found, datasets


def _records(dataset):
    """Per image: ``(source image path, width, height, boxes xyxy, labels, ignore boxes,
    ignore labels, masks)``; ``masks``: the segmentation of each gt box (COCO polygons or
    RLE, from COCO and LabelMe data) or ``None``."""
    for info in dataset.data_infos:
        ann = info['ann']
        path = osp.join(dataset.img_prefix, info['filename']) if dataset.img_prefix \
            else info['filename']
        yield (osp.abspath(path), int(info['width']), int(info['height']),
               np.asarray(ann['bboxes'], np.float64).reshape(-1, 4),
               np.asarray(ann['labels'], np.int64).reshape(-1),
               np.asarray(ann.get('bboxes_ignore', np.zeros((0, 4))), np.float64).reshape(-1, 4),
               np.asarray(ann.get('labels_ignore', np.zeros(0)), np.int64).reshape(-1),
               ann.get('masks'))


def _target_names(paths: list[str]) -> list[str]:
    """File names for the images in one output folder: the base name, or the source path
    with folders joined by ``__`` where base names clash."""
    base = [osp.basename(p) for p in paths]
    if len(set(base)) == len(base):
        return base
    common = osp.commonpath(paths)
    return [osp.relpath(p, common).replace(os.sep, '__') for p in paths]


def _place_image(src: str, dst: str, mode: str) -> None:
    os.makedirs(osp.dirname(dst), exist_ok=True)
    if osp.lexists(dst):
        os.remove(dst)
    if mode == 'link':
        os.symlink(src, dst)
    else:
        shutil.copyfile(src, dst)


def _check_mode(images: str, allowed=IMAGE_MODES) -> None:
    if images not in allowed:
        raise DatasetError(f'images={images!r}: expected one of {allowed}')


def write_coco(datasets: dict, classes, out: str, images: str = 'keep') -> dict[str, str]:
    """Write ``OUT/{train,valid,test}/_annotations.coco.json``; returns ``{split: path}``.
    ``images``: 'keep' (file_names relative to the JSON, pointing at the sources), 'copy' or
    'link' (into the split folder)."""
    _check_mode(images)
    written = {}
    for split, dataset in datasets.items():
        folder = osp.join(out, _ROBOFLOW_SPLIT.get(split, split))
        os.makedirs(folder, exist_ok=True)
        recs = list(_records(dataset))
        names = _target_names([r[0] for r in recs])
        imgs, anns = [], []
        for image_id, (rec, name) in enumerate(zip(recs, names), start=1):
            src, width, height, boxes, labels, ign, ign_labels, masks = rec
            if images == 'keep':
                file_name = osp.relpath(src, folder)
            else:
                file_name = name
                _place_image(src, osp.join(folder, name), images)
            imgs.append(dict(id=image_id, file_name=file_name, width=width, height=height))
            segms = list(masks) if masks is not None and len(masks) == len(boxes) else []
            segms += [[]] * (len(boxes) + len(ign) - len(segms))
            for k, (box, label) in enumerate(zip(np.concatenate([boxes, ign]).tolist(),
                                                 np.concatenate([labels, ign_labels]).tolist())):
                crowd = int(k >= len(boxes))
                if label < 0:  # an ignore box of no class
                    continue
                x, y = round(box[0], 3), round(box[1], 3)
                w, h = round(box[2] - box[0], 3), round(box[3] - box[1], 3)
                anns.append(dict(id=len(anns) + 1, image_id=image_id, category_id=label + 1,
                                 bbox=[x, y, w, h], area=round(w * h, 3), iscrowd=crowd,
                                 segmentation=segms[k] or []))
        coco = dict(info=dict(description='written by detforge convert to-coco'),
                    images=imgs, annotations=anns, type='instances',
                    categories=[dict(id=i + 1, name=n, supercategory='none')
                                for i, n in enumerate(classes)])
        path = osp.join(folder, '_annotations.coco.json')
        with open(path, 'w', encoding='utf-8') as f:
            json.dump(coco, f)
        written[split] = path
    return written


def write_yolo(datasets: dict, classes, out: str, images: str = 'copy') -> str:
    """Write the YOLO layout; returns the path of ``data.yaml``. ``images``: 'copy' or
    'link' (YOLO finds labels next to the images, so they must be placed)."""
    import yaml
    _check_mode(images, ('copy', 'link'))
    meta = dict(names=list(classes), nc=len(classes))
    dropped = 0
    for split, dataset in datasets.items():
        img_dir = osp.join(out, 'images', split)
        label_dir = osp.join(out, 'labels', split)
        os.makedirs(label_dir, exist_ok=True)
        recs = list(_records(dataset))
        for rec, name in zip(recs, _target_names([r[0] for r in recs])):
            src, width, height, boxes, labels, ign, _, _ = rec
            dropped += len(ign)
            _place_image(src, osp.join(img_dir, name), images)
            cx = (boxes[:, 0] + boxes[:, 2]) / 2 / width
            cy = (boxes[:, 1] + boxes[:, 3]) / 2 / height
            w = (boxes[:, 2] - boxes[:, 0]) / width
            h = (boxes[:, 3] - boxes[:, 1]) / height
            lines = [f'{label} {a:.6f} {b:.6f} {c:.6f} {d:.6f}\n'
                     for label, a, b, c, d in zip(labels.tolist(), cx, cy, w, h)]
            with open(osp.join(label_dir, osp.splitext(name)[0] + '.txt'), 'w') as f:
                f.writelines(lines)
        meta[split] = f'images/{split}'
    if dropped:
        logger.warning('%d ignore boxes (crowd / difficult) left out: YOLO labels have no '
                       'ignore boxes', dropped)
    path = osp.join(out, 'data.yaml')
    with open(path, 'w', encoding='utf-8') as f:
        yaml.safe_dump(meta, f, sort_keys=False, allow_unicode=True)
    return path


def write_labelme(datasets: dict, classes, out: str, images: str = 'copy') -> dict[str, str]:
    """Write ``OUT/SPLIT/NAME.json`` (LabelMe 5 files with ``rectangle`` shapes); returns
    ``{split: folder}``. ``images``: 'copy'/'link' beside the JSON files, or 'keep'
    (``imagePath`` relative to the JSON file, pointing at the source)."""
    _check_mode(images)
    written = {}
    for split, dataset in datasets.items():
        folder = osp.join(out, split)
        os.makedirs(folder, exist_ok=True)
        recs = list(_records(dataset))
        for rec, name in zip(recs, _target_names([r[0] for r in recs])):
            src, width, height, boxes, labels, ign, ign_labels, _ = rec
            if images == 'keep':
                image_path = osp.relpath(src, folder)
            else:
                image_path = name
                _place_image(src, osp.join(folder, name), images)
            shapes = []
            for box_set, label_set, difficult in ((boxes, labels, False), (ign, ign_labels, True)):
                for box, label in zip(box_set.tolist(), label_set.tolist()):
                    if label < 0:
                        continue
                    box = [round(v, 3) for v in box]  # float32 noise would read as data
                    shape = dict(label=classes[label], points=[box[:2], box[2:]], group_id=None,
                                 description='', shape_type='rectangle', flags={})
                    if difficult:
                        shape['difficult'] = True
                    shapes.append(shape)
            data = dict(version='5.4.1', flags={}, shapes=shapes, imagePath=image_path,
                        imageData=None, imageHeight=height, imageWidth=width)
            with open(osp.join(folder, osp.splitext(name)[0] + '.json'), 'w',
                      encoding='utf-8') as f:
                json.dump(data, f, indent=1)
        written[split] = folder
    with open(osp.join(out, 'labels.txt'), 'w', encoding='utf-8') as f:
        f.write(''.join(f'{n}\n' for n in ('__ignore__', *classes)))
    return written
