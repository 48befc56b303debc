"""Pascal VOC folders: ``XMLDataset`` (any classes) and ``VOCDataset`` (the 20 VOC classes).

Layout::

    ROOT/Annotations/ID.xml  ROOT/JPEGImages/ID.jpg  ROOT/ImageSets/Main/SPLIT.txt

VOC stores integer coordinates, 1-based and inclusive; like MMDetection 2.x
(``mmdet/datasets/xml_style.py`` and ``tools/dataset_converters/pascal_voc.py``) we subtract 1
from all four, so that the COCO JSON written by ``detforge convert voc2coco`` and the VOC
route give the same boxes. ``difficult`` objects become ignore boxes.
"""
from __future__ import annotations

import os
import os.path as osp
import xml.etree.ElementTree as ET

import numpy as np

from detforge.registry import DATASETS
from .custom import CustomDataset, sanitize_boxes
from .errors import AnnotationError, DatasetError, SkipCounter

__all__ = ['XMLDataset', 'VOCDataset', 'parse_voc_xml', 'read_split_file']


def read_split_file(path: str) -> list[str]:
    """Image ids of a VOC split file (one per line; extra columns ignored)."""
    if not osp.isfile(path):
        raise DatasetError(f'split file not found: {path}')
    with open(path, 'rb') as f:
        lines = f.read().splitlines()
    ids = []
    for number, raw in enumerate(lines, 1):
        try:
            line = raw.decode('utf-8')
        except UnicodeDecodeError as e:
            raise DatasetError(f'{path}, line {number}: not valid UTF-8 ({raw[:60]!r}: '
                               f'{e.reason} at byte {e.start}); save the split file as UTF-8'
                               ) from None
        if line.strip():
            ids.append(line.split()[0])
    return ids


def _image_size(img_path: str) -> tuple[int, int]:
    from PIL import Image
    try:
        with Image.open(img_path) as im:
            return im.size
    except (FileNotFoundError, OSError) as e:
        raise DatasetError(f'cannot read the size of {img_path}: {e}') from None


def parse_voc_xml(xml_path: str, classes: tuple[str, ...], *, img_path: str | None = None,
                  counter: SkipCounter | None = None, skip_invalid: bool = True,
                  min_size: float | None = None) -> dict:
    """Parse one VOC XML file.

    Returns ``dict(filename, width, height, ann)`` where ``filename`` is the ``<filename>`` of
    the XML and ``ann`` holds float32 0-based xyxy ``bboxes`` / ``bboxes_ignore`` (difficult and
    small objects) with int64 ``labels`` / ``labels_ignore`` (index into ``classes``).
    Objects are numbered from 0 in file order ("object 3") in errors and warnings.
    """
    try:
        root = ET.parse(xml_path).getroot()
    except FileNotFoundError:
        raise DatasetError(f'annotation file not found: {xml_path}') from None
    except ET.ParseError as e:
        raise DatasetError(f'{xml_path} is not a valid XML file: {e}') from None
    size = root.find('size')
    try:
        width = int(float(size.find('width').text))
        height = int(float(size.find('height').text))
        if width <= 0 or height <= 0:
            raise ValueError
    except (AttributeError, TypeError, ValueError):
        if img_path is None:
            raise DatasetError(f'{xml_path}: no valid <size><width>/<height>') from None
        width, height = _image_size(img_path)
    cat = {name: i for i, name in enumerate(classes)}
    boxes, labels, ignore, ids = [], [], [], []
    for k, obj in enumerate(root.findall('object')):
        name_el = obj.find('name')
        name = name_el.text.strip() if name_el is not None and name_el.text else ''
        if name not in cat:
            if not skip_invalid:
                raise AnnotationError(f'{xml_path}: object {k} has class {name!r}, which is not in '
                                      f'classes {tuple(classes)}')
            if counter is not None:
                counter.add('unknown_class', osp.basename(xml_path), f'object {k} ({name!r})')
            continue
        bnd = obj.find('bndbox')
        try:
            # int(float()) as MMDetection: tolerate "12.0" in files written by other tools
            box = [int(float(bnd.find(key).text)) for key in ('xmin', 'ymin', 'xmax', 'ymax')]
        except (AttributeError, TypeError, ValueError):
            raise AnnotationError(f'{xml_path}: object {k} has no valid <bndbox> '
                                  f'(xmin, ymin, xmax, ymax numbers)') from None
        difficult = obj.find('difficult')
        boxes.append(box)
        labels.append(cat[name])
        ignore.append(difficult is not None and difficult.text is not None
                      and int(float(difficult.text)) == 1)
        ids.append(f'object {k}')
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) - 1  # 1-based -> 0-based
    filename = root.findtext('filename')
    ann = sanitize_boxes(boxes, labels, ignore, width, height, file=xml_path, ann_ids=ids,
                         counter=counter, skip_invalid=skip_invalid, min_size=min_size)
    return dict(filename=filename, width=width, height=height, ann=ann)


@DATASETS.register_module()
class XMLDataset(CustomDataset):
    """VOC-layout folders with any class names.

    Args:
        ann_file: split file with one image id per line (e.g. ``ImageSets/Main/trainval.txt``),
            or ``None`` for every XML in ``ann_subdir``.
        img_prefix: the folder holding ``img_subdir`` and ``ann_subdir``.
        img_subdir, ann_subdir: sub-folders of images and XML files.
        img_suffix: image file extension ('.jpg').
        (others: see :class:`CustomDataset`)
    """

    def __init__(self, *args, img_subdir: str = 'JPEGImages', ann_subdir: str = 'Annotations',
                 img_suffix: str = '.jpg', **kwargs):
        self.img_subdir = img_subdir
        self.ann_subdir = ann_subdir
        self.img_suffix = img_suffix
        super().__init__(*args, **kwargs)

    def load_annotations(self, ann_file):
        if not self.CLASSES:
            raise DatasetError(f'{type(self).__name__}: no classes given; pass classes=(...)')
        ann_dir = osp.join(self.img_prefix, self.ann_subdir)
        if ann_file is None:
            if not osp.isdir(ann_dir):
                raise DatasetError(f'annotation folder not found: {ann_dir}')
            img_ids = sorted(f[:-4] for f in os.listdir(ann_dir) if f.endswith('.xml'))
        else:
            img_ids = read_split_file(ann_file)
        infos = []
        for img_id in img_ids:
            filename = osp.join(self.img_subdir, f'{img_id}{self.img_suffix}')
            info = parse_voc_xml(osp.join(ann_dir, f'{img_id}.xml'), self.ann_classes,
                                 img_path=osp.join(self.img_prefix, filename), counter=self.skipped,
                                 skip_invalid=self.skip_invalid, min_size=self.min_size)
            info.update(id=img_id, filename=filename)
            infos.append(info)
        return infos

    def _filter_imgs(self, min_size: int = 32):
        # MMDet's VOC rule: with filter_empty_gt, keep images with at least one box of CLASSES
        # (ignore boxes count), and images of at least min_size pixels a side.
        valid = []
        for i, info in enumerate(self.data_infos):
            if min(info['width'], info['height']) < min_size:
                continue
            ann = info['ann']
            if self.filter_empty_gt and len(ann['bboxes']) + len(ann['bboxes_ignore']) == 0:
                continue
            valid.append(i)
        return valid

    def evaluate(self, results, metric='mAP', logger=None, **kwargs):
        """VOC mAP (``'mAP'``, ``'recall'``; MMDetection's default here) or COCO box AP
        (``'bbox'``, so that a VOC folder can be scored like every other format)."""
        metrics = [metric] if isinstance(metric, str) else list(metric)
        if any(m in ('bbox', 'proposal') for m in metrics):
            from detforge.evaluation.coco_metric import evaluate_coco
            return evaluate_coco(self, results, metric=metric, logger=logger, **kwargs)
        return super().evaluate(results, metric=metric, logger=logger, **kwargs)


@DATASETS.register_module()
class VOCDataset(XMLDataset):
    """Pascal VOC 2007/2012; evaluated with VOC mAP (11 points for VOC2007, as MMDet)."""

    CLASSES = ('aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair',
               'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep',
               'sofa', 'train', 'tvmonitor')

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        prefix = str(self.img_prefix)
        self.year = 2007 if 'VOC2007' in prefix else 2012 if 'VOC2012' in prefix else None

    def evaluate(self, results, metric='mAP', logger=None, iou_thr=0.5, scale_ranges=None,
                 eval_mode=None, **kwargs):
        from detforge.evaluation.voc_metric import evaluate_voc
        if eval_mode is None:
            eval_mode = '11points' if self.year == 2007 else 'area'
        return evaluate_voc(self, results, metric=metric, iou_thr=iou_thr,
                            scale_ranges=scale_ranges, eval_mode=eval_mode, logger=logger, **kwargs)
