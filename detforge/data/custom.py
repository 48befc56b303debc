"""``CustomDataset``: the base of every detection data set (MMDetection 2.x's API).

A data set is a list of image records (``data_infos``) and a pipeline of transforms. Each
record is a dict ``dict(id, filename, width, height, ann=dict(bboxes, labels, bboxes_ignore,
labels_ignore))``; boxes are float32 ``(n, 4)`` xyxy in pixels, 0-based, labels int64 0-based.
Subclasses implement :meth:`load_annotations` (COCO JSON, VOC XML, ...); the base class
validates the boxes, filters images for training, sets the aspect-ratio ``flag`` and runs the
pipeline.

The base class itself reads MMDetection's "middle format": a ``.pkl``/``.json`` list of
records as above (``ann`` with plain lists is accepted).
"""
from __future__ import annotations

import json
import logging
import os.path as osp
import pickle
from typing import Any, Sequence

import numpy as np
from torch.utils.data import Dataset

from detforge.registry import DATASETS
from detforge.utils.file_client import check_file_client_args
from .errors import AnnotationError, DatasetError, SkipCounter
from .pipelines.compose import Compose
from .record_store import RecordStore
from .safe_pickle import load_data_pickle
from .seeding import apply_sample_seed

__all__ = ['CustomDataset', 'sanitize_boxes']

logger = logging.getLogger('detforge.data')


def _join(root: str | None, path: str | None) -> str | None:
    if root is None or path is None or osp.isabs(path):
        return path
    return osp.join(root, path)


def sanitize_boxes(boxes, labels, ignore, width, height, *, file: str, ann_ids=None,
                   counter: SkipCounter | None = None, skip_invalid: bool = True,
                   min_size: float | None = None, return_inds: bool = False
                   ) -> dict[str, np.ndarray]:
    """Check the boxes of one image and split them into ground truth and ignore boxes.

    Args:
        boxes: ``(n, 4)`` xyxy pixels, 0-based.
        labels: ``(n,)`` class index.
        ignore: ``(n,)`` bool, True for crowd / difficult boxes.
        width, height: image size in pixels (``None`` skips the outside check).
        file, ann_ids: named in errors and in the skip summary.
        skip_invalid: drop invalid boxes (counted in ``counter``) instead of raising.
        min_size: boxes with a side smaller than this become ignore boxes (MMDet's VOC rule).
        return_inds: also return ``inds`` / ``inds_ignore``, the input positions kept as
            ground truth / ignore (to keep per-annotation data such as masks in step).

    Degenerate boxes (width or height < 1 px, e.g. ``x2 <= x1``) and boxes that do not overlap
    the image at all are invalid.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    ignore = np.asarray(ignore, dtype=bool).reshape(-1)
    ids = [f'annotation {i}' for i in range(len(boxes))] if ann_ids is None else list(ann_ids)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    degenerate = (w < 1) | (h < 1)
    outside = np.zeros(len(boxes), dtype=bool)
    if width is not None and height is not None:
        outside = ((boxes[:, 2] <= 0) | (boxes[:, 3] <= 0) | (boxes[:, 0] >= width)
                   | (boxes[:, 1] >= height)) & ~degenerate
    for kind, mask in (('degenerate', degenerate), ('outside', outside)):
        for i in np.flatnonzero(mask):
            what = str(ids[i])
            if not skip_invalid:
                size = f' in an image of {width}x{height}' if kind == 'outside' else ''
                raise AnnotationError(
                    f'{file}: {what} has an invalid box {boxes[i].tolist()} (xyxy, 0-based): '
                    + ('its width or height is < 1 px (x2 <= x1 or y2 <= y1)' if kind == 'degenerate'
                       else f'it lies entirely outside the image{size}')
                    + '; fix the annotation or build the dataset with skip_invalid=True')
            if counter is not None:
                counter.add(kind, osp.basename(file), what)
    keep = ~(degenerate | outside)
    if min_size:
        small = ((w < min_size) | (h < min_size)) & keep & ~ignore
        ignore = ignore | small
        if counter is not None:
            for i in np.flatnonzero(small):
                counter.add('small', osp.basename(file), str(ids[i]))
    gt = keep & ~ignore
    ign = keep & ignore
    out = dict(bboxes=boxes[gt].reshape(-1, 4), labels=labels[gt],
               bboxes_ignore=boxes[ign].reshape(-1, 4), labels_ignore=labels[ign])
    if return_inds:
        out.update(inds=np.flatnonzero(gt), inds_ignore=np.flatnonzero(ign))
    return out


@DATASETS.register_module()
class CustomDataset(Dataset):
    """A detection data set in MMDetection's middle format (see the module docstring).

    Args:
        ann_file: annotation file (relative paths are taken under ``data_root``).
        pipeline: list of transform configs (or callables).
        classes: class names to use instead of ``CLASSES``: a tuple/list, or a text file
            with one name per line. A subset selects (and re-indexes) those classes. A dict
            ``{name in the annotations: new name}`` selects its keys, in its order, and
            renames them (``CLASSES`` holds the new names).
        data_root: prefix of ``ann_file``, ``img_prefix``, ``seg_prefix``, ``proposal_file``.
        img_prefix: folder the record ``filename``s are relative to.
        test_mode: keep every image, never re-draw, and run the test pipeline.
        filter_empty_gt: in training, drop images without ground truth boxes.
        min_size: boxes with a side smaller than this many pixels become ignore boxes.
        skip_invalid: drop invalid boxes (degenerate, outside the image, unknown class) with
            one summary warning per kind; ``False`` raises :class:`AnnotationError` instead.
        allow_pickle: load ``.pkl`` annotation and proposal files with plain ``pickle``,
            which runs any code the file names. By default they are read as data only
            (numpy arrays, dicts, lists, numbers) and any other object is refused.
        serialize_data: keep the records pickled in one numpy buffer
            (:class:`~detforge.data.record_store.RecordStore`, MMEngine's ``serialize_data``)
            rather than as a list of dicts, so that forked loader workers share them instead
            of copying them page by page. ``data_infos[i]`` is then a fresh copy of record
            ``i`` on every access: change records through ``data_infos = ...`` only.

    In training, images without boxes (``filter_empty_gt``) and images smaller than 32 px a
    side are left out, with one log line saying how many; a training set left with no image
    at all is a :class:`DatasetError`.
    """

    CLASSES: tuple[str, ...] | None = None
    applies_sample_seeds = True  # __getitem__ seeds the RNGs from a SeededIndex

    def __init__(self, ann_file, pipeline: Sequence = (), classes=None, data_root: str | None = None,
                 img_prefix: str = '', seg_prefix: str | None = None, proposal_file: str | None = None,
                 test_mode: bool = False, filter_empty_gt: bool = True, min_size: float | None = None,
                 skip_invalid: bool = True, file_client_args: dict | None = None,
                 allow_pickle: bool = False, serialize_data: bool = True):
        self.data_root = data_root
        check_file_client_args(file_client_args, type(self).__name__)
        self.ann_file = _join(data_root, ann_file)
        self.img_prefix = _join(data_root, img_prefix) if img_prefix else (data_root or img_prefix)
        self.seg_prefix = _join(data_root, seg_prefix)
        self.proposal_file = _join(data_root, proposal_file)
        self.test_mode = test_mode
        self.filter_empty_gt = filter_empty_gt
        self.min_size = min_size
        self.skip_invalid = skip_invalid
        self.allow_pickle = allow_pickle
        self.serialize_data = serialize_data
        self.CLASSES = self.get_classes(classes)
        # the names the annotation files use (differ from CLASSES when classes= renames)
        self.ann_classes = tuple(classes) if isinstance(classes, dict) else self.CLASSES
        self.skipped = SkipCounter(f'{type(self).__name__}({self.ann_file})')

        self.data_infos = self.load_annotations(self.ann_file)
        self.proposals = self.load_proposals(self.proposal_file) if self.proposal_file else None
        if not test_mode:
            valid = self._filter_imgs()
            self._report_filtered(valid)
            self._keep(valid)
        self.skipped.report()
        self._set_group_flag()
        if serialize_data and not isinstance(self.data_infos, RecordStore):
            self.data_infos = self._serialize(self.data_infos)
        elif not serialize_data and isinstance(self.data_infos, RecordStore):
            self.data_infos = list(self.data_infos)
        self.pipeline = Compose(pipeline)

    # ------------------------------------------------------------------ loading
    def _serialize(self, infos: list) -> RecordStore | list:
        """``infos`` as a :class:`RecordStore`; kept as a list (with a warning) when a record
        holds something pickle cannot store (an open file, a lambda)."""
        try:
            return RecordStore(infos)
        except (pickle.PicklingError, TypeError, AttributeError) as e:
            logger.warning('%s(%s): records kept as Python dicts, not serialised '
                           '(serialize_data=True): %s; each loader worker will copy them',
                           type(self).__name__, self.ann_file, e)
            return infos

    @classmethod
    def get_classes(cls, classes=None) -> tuple[str, ...] | None:
        """The class names: ``CLASSES`` by default, else ``classes`` (names, a text file, or
        a dict ``{old name: new name}`` whose values are returned)."""
        if classes is None:
            return cls.CLASSES
        if isinstance(classes, dict):
            names = tuple(classes.values())
            if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
                raise DatasetError(f'classes={dict(classes)!r}: a dict must map each class name '
                                   f'of the annotations to a new, distinct name')
            return names
        if isinstance(classes, str):
            if not osp.isfile(classes):
                raise DatasetError(f'classes={classes!r}: expected a tuple of class names or a '
                                   f'text file with one name per line; no such file')
            with open(classes, encoding='utf-8') as f:
                return tuple(line.strip() for line in f if line.strip())
        if isinstance(classes, (tuple, list)):
            return tuple(classes)
        raise DatasetError(f'classes must be a tuple/list of names or a file, got {type(classes)}')

    def load_annotations(self, ann_file: str) -> list[dict] | RecordStore:
        """Read the middle format: a list of ``dict(filename, width, height, ann=...)``."""
        try:
            if ann_file.endswith(('.pkl', '.pickle')):
                infos = load_data_pickle(ann_file, self.allow_pickle)
            else:
                with open(ann_file, encoding='utf-8') as f:
                    infos = json.load(f)
        except FileNotFoundError:
            raise DatasetError(f'annotation file not found: {ann_file}') from None
        except (json.JSONDecodeError, pickle.UnpicklingError, UnicodeDecodeError, EOFError) as e:
            raise DatasetError(f'{ann_file} is not a valid annotation file: {e}') from None
        if not isinstance(infos, list):
            raise DatasetError(f'{ann_file}: expected a list of image records, got {type(infos).__name__}')
        out = []
        for i, info in enumerate(infos):
            info = dict(info)
            info.setdefault('id', i)
            ann = info.get('ann') or {}
            boxes = np.asarray(ann.get('bboxes', ()), np.float32).reshape(-1, 4)
            ignored = np.asarray(ann.get('bboxes_ignore', ()), np.float32).reshape(-1, 4)
            labels = np.asarray(ann.get('labels', ()), np.int64).reshape(-1)
            labels_ignore = np.asarray(ann.get('labels_ignore', [-1] * len(ignored)),
                                       np.int64).reshape(-1)
            info['ann'] = sanitize_boxes(
                np.concatenate([boxes, ignored]), np.concatenate([labels, labels_ignore]),
                np.arange(len(boxes) + len(ignored)) >= len(boxes),
                info.get('width'), info.get('height'),
                file=f'{ann_file} [{info.get("filename")}]', counter=self.skipped,
                skip_invalid=self.skip_invalid, min_size=self.min_size)
            out.append(info)
        return out

    def load_proposals(self, proposal_file: str):
        return load_data_pickle(proposal_file, self.allow_pickle)

    def get_ann_info(self, idx: int) -> dict[str, np.ndarray]:
        """``dict(bboxes float32 (n,4), labels int64 (n,), bboxes_ignore (m,4), labels_ignore)``."""
        return self.data_infos[idx]['ann']

    def get_cat_ids(self, idx: int) -> list[int]:
        """Class indices (0-based) present in image ``idx``."""
        return self.get_ann_info(idx)['labels'].astype(np.int64).tolist()

    # ------------------------------------------------------------------ filtering and grouping
    def _filter_imgs(self, min_size: int = 32) -> list[int]:
        """Indices of images kept for training: big enough, and with boxes if filter_empty_gt."""
        valid = []
        for i, info in enumerate(self.data_infos):
            w, h = info.get('width'), info.get('height')
            if w is not None and h is not None and min(w, h) < min_size:
                continue
            if self.filter_empty_gt and len(info['ann']['bboxes']) == 0:
                continue
            valid.append(i)
        return valid

    def _image_sizes(self) -> np.ndarray:
        """``(N, 2)`` float64 ``(width, height)`` of each record, NaN where not recorded."""
        def size(v):
            return np.nan if v is None else float(v)
        return np.array([(size(info.get('width')), size(info.get('height')))
                         for info in self.data_infos], dtype=np.float64).reshape(-1, 2)

    def _keep(self, indices) -> None:
        """Keep only records ``indices`` (in this order), with their proposals."""
        if isinstance(self.data_infos, RecordStore):
            self.data_infos = self.data_infos.take(indices)
        else:
            self.data_infos = [self.data_infos[i] for i in indices]
        if self.proposals is not None:
            self.proposals = [self.proposals[i] for i in indices]

    def _report_filtered(self, valid: list[int]) -> None:
        """Log how many images training leaves out and why; stop when none is left."""
        left = np.ones(len(self.data_infos), dtype=bool)
        left[np.asarray(valid, dtype=np.int64)] = False
        sizes = self._image_sizes()[left]
        num_left_out = int(left.sum())
        with np.errstate(invalid='ignore'):  # NaN (size not recorded) is not small
            small = int((sizes.min(axis=1) < 32).sum())
        empty = num_left_out - small
        reasons = []
        if empty:
            reasons.append(f'{empty} without a box of classes {self.CLASSES} '
                           f'(filter_empty_gt=True)')
        if small:
            reasons.append(f'{small} smaller than 32 px a side')
        if len(valid) and num_left_out:
            logger.info('%s(%s): %d of %d images left out of training: %s',
                        type(self).__name__, self.ann_file, num_left_out, len(self.data_infos),
                        '; '.join(reasons))
        if not len(valid):
            if not len(self.data_infos):
                raise DatasetError(f'{self.ann_file}: the training set has no image')
            hint = ('check classes= against the categories of the annotation file, or set '
                    'filter_empty_gt=False to train on images without boxes' if empty else
                    'the images are too small to train on')
            raise DatasetError(f'{self.ann_file}: no image is left to train on: all '
                               f'{len(self.data_infos)} images were left out '
                               f'({"; ".join(reasons)}); {hint}')

    def _set_group_flag(self) -> None:
        """``flag[i] = 1`` for landscape images (w / h > 1), 0 otherwise (uint8)."""
        sizes = np.nan_to_num(self._image_sizes(), nan=1.0)
        self.flag = (sizes[:, 0] / np.maximum(sizes[:, 1], 1) > 1).astype(np.uint8)

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.data_infos)

    def pre_pipeline(self, results: dict) -> None:
        results['img_prefix'] = self.img_prefix
        results['seg_prefix'] = self.seg_prefix
        results['proposal_file'] = self.proposal_file
        results['bbox_fields'] = []
        results['mask_fields'] = []
        results['seg_fields'] = []

    def _results(self, idx: int, with_ann: bool) -> dict[str, Any]:
        img_info = self.data_infos[idx]
        results = dict(img_info=img_info)
        if with_ann:
            results['ann_info'] = self.get_ann_info(idx)
        if self.proposals is not None:
            results['proposals'] = self.proposals[idx]
        self.pre_pipeline(results)
        return results

    def prepare_train_img(self, idx: int):
        return self.pipeline(self._results(idx, with_ann=True))

    def prepare_test_img(self, idx: int):
        return self.pipeline(self._results(idx, with_ann=False))

    def _rand_another(self, idx: int) -> int:
        """Another index of the same aspect-ratio group (the image is re-drawn, as MMDet)."""
        pool = np.flatnonzero(self.flag == self.flag[idx])
        return int(np.random.choice(pool))

    def __getitem__(self, idx: int):
        idx = apply_sample_seed(idx)
        if self.test_mode:
            return self.prepare_test_img(idx)
        for _ in range(100):
            data = self.prepare_train_img(idx)
            if data is not None:
                return data
            idx = self._rand_another(idx)
        raise DatasetError(f'{type(self).__name__}: the pipeline returned None for 100 images in a '
                           f'row; check the transforms (e.g. RandomCrop with allow_negative_crop)')

    def evaluate(self, results, metric='mAP', logger=None, **kwargs):
        """mAP (VOC-style) of ``results`` (per image, per class ``(n, 5)`` arrays)."""
        from detforge.evaluation.voc_metric import evaluate_voc
        return evaluate_voc(self, results, metric=metric, logger=logger, **kwargs)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(ann_file={self.ann_file!r}, {len(self)} images, '
                f'{"test" if self.test_mode else "train"} mode, classes={self.CLASSES})')
