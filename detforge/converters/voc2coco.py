"""Convert a Pascal VOC folder (one XML per image) to a COCO JSON annotation file.

    detforge convert voc2coco data/bccd data/bccd/annotations/test.json \\
        --split data/bccd/ImageSets/Main/test.txt --classes RBC WBC Platelets

Boxes follow MMDetection 2.x's ``tools/dataset_converters/pascal_voc.py``: VOC's 1-based
corners minus 1, written as COCO ``[x, y, w, h]`` with ``w = x2 - x1``; so ``CocoDataset`` on
the output and ``XMLDataset`` on the folder give the same boxes. Difficult objects are written
with ``iscrowd=1`` (ignore boxes). Invalid boxes (degenerate, outside the image) and objects of
classes not in ``--classes`` are dropped, as the datasets drop them, and counted.
Image ``file_name``s are relative to VOC_ROOT; image, annotation and category ids start at 1.
"""
from __future__ import annotations

import json
import os
import os.path as osp

import numpy as np

NAME = 'voc2coco'
HELP = 'Pascal VOC folder (+ split file) -> COCO JSON'


def add_arguments(parser):
    parser.add_argument('voc_root', help='folder with Annotations/ and JPEGImages/')
    parser.add_argument('out', help='output COCO JSON file')
    parser.add_argument('--split', help='split file of image ids (path, or a name such as '
                        '"trainval" for VOC_ROOT/ImageSets/Main/trainval.txt); default: all XMLs')
    parser.add_argument('--classes', nargs='+', help='class names in label order '
                        '(default: the sorted names found in the XML files)')
    parser.add_argument('--img-subdir', default='JPEGImages')
    parser.add_argument('--ann-subdir', default='Annotations')
    parser.add_argument('--img-suffix', default='.jpg')


def _split_ids(voc_root, split, ann_dir):
    from detforge.data.voc import read_split_file
    from detforge.data.errors import DatasetError
    if split is None:
        if not osp.isdir(ann_dir):
            raise DatasetError(f'annotation folder not found: {ann_dir}')
        return sorted(f[:-4] for f in os.listdir(ann_dir) if f.endswith('.xml'))
    if not osp.isfile(split):
        named = osp.join(voc_root, 'ImageSets', 'Main', f'{split}.txt')
        if osp.isfile(named):
            split = named
    return read_split_file(split)


def _names_in(xml_paths):
    import xml.etree.ElementTree as ET
    from detforge.data.errors import DatasetError
    names = set()
    for path in xml_paths:
        try:
            root = ET.parse(path).getroot()
        except FileNotFoundError:
            raise DatasetError(f'annotation file not found: {path}') from None
        except ET.ParseError as e:
            raise DatasetError(f'{path} is not a valid XML file: {e}') from None
        names.update(o.findtext('name', '').strip() for o in root.findall('object'))
    return sorted(n for n in names if n)


def convert(voc_root: str, out: str | None = None, split: str | None = None, classes=None,
            img_subdir: str = 'JPEGImages', ann_subdir: str = 'Annotations',
            img_suffix: str = '.jpg', verbose: bool = True) -> dict:
    """Convert and (if ``out``) write; returns the COCO dict, with the skip summary lines in
    ``coco['info']['skipped']``."""
    from detforge.data.errors import SkipCounter
    from detforge.data.voc import parse_voc_xml
    ann_dir = osp.join(voc_root, ann_subdir)
    img_ids = _split_ids(voc_root, split, ann_dir)
    xml_paths = [osp.join(ann_dir, f'{i}.xml') for i in img_ids]
    classes = tuple(classes) if classes else tuple(_names_in(xml_paths))
    counter = SkipCounter(osp.basename(out) if out else 'voc2coco')
    images, annotations = [], []
    for image_id, (img_id, xml_path) in enumerate(zip(img_ids, xml_paths), start=1):
        file_name = f'{img_subdir}/{img_id}{img_suffix}'
        rec = parse_voc_xml(xml_path, classes, img_path=osp.join(voc_root, file_name),
                            counter=counter, skip_invalid=True)
        images.append(dict(id=image_id, file_name=file_name, width=rec['width'],
                           height=rec['height']))
        ann = rec['ann']
        for boxes, labels, crowd in ((ann['bboxes'], ann['labels'], 0),
                                     (ann['bboxes_ignore'], ann['labels_ignore'], 1)):
            xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
            for box, label in zip(xywh.tolist(), labels.tolist()):
                annotations.append(dict(id=len(annotations) + 1, image_id=image_id,
                                        category_id=label + 1, bbox=box,
                                        area=box[2] * box[3], iscrowd=crowd, ignore=0,
                                        segmentation=[]))
    coco = dict(info=dict(description=f'converted from VOC {voc_root} by detforge voc2coco',
                          skipped=counter.summary_lines()),
                images=images, annotations=annotations, type='instances',
                categories=[dict(id=i + 1, name=n, supercategory='none')
                            for i, n in enumerate(classes)])
    if out:
        os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
        with open(out, 'w', encoding='utf-8') as f:
            json.dump(coco, f)
    if verbose:
        print(f'{len(images)} images, {len(annotations)} boxes, classes {classes}'
              + (f' -> {out}' if out else ''))
        for line in counter.summary_lines():
            print(line)
    return coco


def main(args):
    convert(args.voc_root, args.out, args.split, args.classes, args.img_subdir, args.ann_subdir,
            args.img_suffix)
    return 0
