"""Run a trained detector on images: ``init_detector`` and ``inference_detector``.

Example::

    >>> model = init_detector('configs/retinanet/retinanet_r18_fpn_bccd.py', 'epoch_12.pth')
    >>> result = inference_detector(model, 'blood.jpg')      # list over classes of (n, 5)
    >>> det = inference_detector(model, 'blood.jpg', return_structured=True)
    >>> det.bboxes.shape, det.scores.shape, det.labels.shape
    ((n, 4), (n,), (n,))

Images go through the config's test pipeline (``cfg.data.test.pipeline``); for arrays its
``LoadImageFromFile`` step is replaced by one that takes the array (as MMDetection 2.x's
``LoadImageFromWebcam``). A list of images is one batch.
"""
from __future__ import annotations

import copy
import os
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from detforge.registry import DetforgeError, build_context
from detforge.utils.setup_env import model_to_device

__all__ = ['init_detector', 'inference_detector', 'DetResult', 'result_to_structured',
           'LoadImageFromArray', 'build_test_pipeline']


@dataclass
class DetResult:
    """One image's detections, flat: ``bboxes (n, 4)`` xyxy pixels of the original image,
    ``scores (n,)``, ``labels (n,)`` 0-based, sorted by score (highest first); ``masks``
    bool ``(n, H, W)`` for a mask detector (else None)."""
    bboxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    class_names: tuple = field(default=())
    masks: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.scores)

    def to_list(self, score_thr: float = 0.0) -> list[dict]:
        """JSON-ready: ``[{'bbox': [x1, y1, x2, y2], 'score': s, 'label': i, 'class': name}]``,
        plus ``'segmentation'`` (COCO compressed RLE ``{'size': [h, w], 'counts': str}``) for
        a mask detector."""
        keep = self.scores >= score_thr
        names = self.class_names
        out = [dict(bbox=[round(v, 2) for v in b], score=round(s, 4), label=lab,
                    **({'class': names[lab]} if lab < len(names) else {}))
               for b, s, lab in zip(self.bboxes[keep].tolist(), self.scores[keep].tolist(),
                                  self.labels[keep].tolist())]
        if self.masks is not None:
            from detforge.structures.masks import mask2rle
            for record, mask in zip(out, self.masks[keep]):
                record['segmentation'] = mask2rle(mask)
        return out


def result_to_structured(result: Sequence[np.ndarray], class_names=()) -> DetResult:
    """A list over classes of ``(n, 5)`` arrays (or ``(that, per class masks)``) ->
    :class:`DetResult`."""
    masks = None
    if isinstance(result, tuple):
        result, segm_result = result[0], result[1]
        from detforge.structures.masks import rle2mask
        masks = [rle2mask(m) if isinstance(m, dict) else np.asarray(m, bool)
                 for per_class in segm_result for m in per_class]
    per_class = [np.asarray(r, dtype=np.float32).reshape(-1, 5) for r in result]
    dets = np.concatenate(per_class) if per_class else np.zeros((0, 5), np.float32)
    labels = np.repeat(np.arange(len(per_class), dtype=np.int64), [len(r) for r in per_class])
    order = np.argsort(-dets[:, 4], kind='stable')
    if masks is not None:
        masks = np.stack(masks)[order] if masks else np.zeros((0, 0, 0), bool)
    return DetResult(dets[order, :4], dets[order, 4], labels[order], tuple(class_names or ()),
                     masks)


class LoadImageFromArray:
    """Pipeline step taking ``results['img']`` (BGR uint8 ``(H, W, 3)``) as the loaded image."""

    def __init__(self, to_float32: bool = False, **kwargs):
        self.to_float32 = to_float32

    def __call__(self, results: dict) -> dict:
        img = results['img']
        if not isinstance(img, np.ndarray) or img.ndim not in (2, 3):
            raise DetforgeError(f'an image array must be (H, W, 3) BGR uint8, got '
                                f'{type(img).__name__} {getattr(img, "shape", "")}')
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        if self.to_float32:
            img = img.astype(np.float32)
        results.setdefault('filename', None)
        results.setdefault('ori_filename', None)
        results['img'] = img
        results['img_shape'] = img.shape
        results['ori_shape'] = img.shape
        results['img_fields'] = ['img']
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(to_float32={self.to_float32})'


def _load_config(config, cfg_options=None):
    from detforge.compat import load_config
    return load_config(config, cfg_options)


def _build_detector(model_cfg, cfg):
    try:
        from detforge.models.builder import build_detector
    except ImportError:  # the builder module is the models' part; fall back to the registry
        from detforge.registry import DETECTORS

        def build_detector(c, train_cfg=None, test_cfg=None):
            return DETECTORS.build(c)
    kwargs = {}
    if cfg.get('test_cfg') is not None and 'test_cfg' not in model_cfg:
        kwargs['test_cfg'] = cfg.get('test_cfg')
    with build_context('model', filename=getattr(cfg, 'filename', None)):
        return build_detector(model_cfg, **kwargs)


def _classes_from_config(cfg):
    """Class names of the test data set in the config (``classes=`` or the type's CLASSES)."""
    test = (cfg.get('data') or {}).get('test') or {}
    if isinstance(test, (list, tuple)):
        test = test[0] if test else {}
    if test.get('classes'):
        classes = test['classes']
        return tuple(classes) if not isinstance(classes, str) else None
    dataset_type = test.get('type')
    if isinstance(dataset_type, str):
        try:
            from detforge.registry import DATASETS
            cls = DATASETS.get(dataset_type)
            if cls is not None and getattr(cls, 'CLASSES', None):
                return tuple(cls.CLASSES)
        except Exception:  # noqa: BLE001 - names are a convenience, never a reason to fail
            return None
    return None


def init_detector(config, checkpoint: str | None = None, device: str = 'cpu',
                  cfg_options: dict | None = None, fuse: bool = False,
                  channels_last: bool = False, compile: bool | dict = False):
    """Build a detector from a config (path or :class:`Config`) and load its weights.

    The class names (``model.CLASSES``) come from the checkpoint's ``meta['CLASSES']`` when it
    has them, else from the config's test data set. The model is in eval mode on ``device``
    and keeps its config as ``model.cfg`` (used by :func:`inference_detector`).

    Speed options (each gives the same detections as the plain model, within float32
    rounding; see docs/deployment.md):

    - ``fuse=True`` folds every batch norm into the convolution before it
      (:func:`~detforge.models.fuse_conv_bn.fuse_detector`): fewer operations; such a model
      is for inference only.
    - ``channels_last=True`` (or the config's ``channels_last = True``) stores the
      convolution weights NHWC, so oneDNN runs the convolutions in that layout.
    - ``compile=True`` compiles the backbone, the neck and the dense head's ``forward`` (its
      convolutions; decoding and NMS stay eager) with ``torch.compile`` (TorchInductor,
      weights frozen as constants); a dict gives
      :func:`~detforge.models.compile_parts.compile_detector_parts`'s arguments
      instead (``backend``, ``mode``, ``dynamic``, ``fullgraph``, ``options``,
      ``with_head``). Compilation
      happens at the first image of each new padded size, so the first call is slow.
    """
    cfg = _load_config(config, cfg_options)
    model_cfg = cfg.model
    # no ImageNet download for inference: the checkpoint holds every weight
    if 'pretrained' in model_cfg:
        model_cfg.pretrained = None
    backbone = model_cfg.get('backbone')
    if isinstance(backbone, dict):
        if backbone.get('init_cfg') is not None:
            backbone['init_cfg'] = None
        if 'pretrained' in backbone:
            backbone['pretrained'] = None
    if 'train_cfg' in model_cfg:
        model_cfg.train_cfg = None
    model = _build_detector(model_cfg, cfg)
    classes = None
    if checkpoint is not None:
        from detforge.engine.checkpoint import load_checkpoint
        if not os.path.isfile(checkpoint) and '://' not in str(checkpoint):
            raise DetforgeError(f'checkpoint file not found: {checkpoint}')
        ckpt = load_checkpoint(model, checkpoint, map_location='cpu')
        meta = ckpt.get('meta') or {}
        classes = meta.get('CLASSES') or meta.get('classes')
    if not classes:
        classes = _classes_from_config(cfg)
        if checkpoint is not None:
            warnings.warn(f'the checkpoint {checkpoint} has no meta["CLASSES"]; using the class '
                          'names of the config', stacklevel=2)
    model.CLASSES = tuple(classes) if classes else None
    model.cfg = cfg
    model = model_to_device(model, device, cfg)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.eval()
    if fuse:
        from detforge.models.fuse_conv_bn import fuse_detector
        fuse_detector(model)
    if compile is not False and compile is not None:
        from detforge.models.compile_parts import (INFERENCE_COMPILE,
                                                      compile_detector_parts,
                                                      compile_options_from_config)
        options = compile_options_from_config({'compile': compile})
        if compile is True:
            options = dict(INFERENCE_COMPILE)
        compile_detector_parts(model, **options)
    return model


def build_test_pipeline(cfg, from_array: bool = False):
    """The config's test pipeline as a :class:`Compose`; ``from_array`` swaps the loader."""
    from detforge.data.pipelines.compose import Compose
    try:
        pipeline = copy.deepcopy(list(cfg.data.test.pipeline))
    except (AttributeError, KeyError, TypeError):
        raise DetforgeError(f'{getattr(cfg, "filename", "the config")}: data.test.pipeline is '
                            f'needed to run inference') from None
    if from_array:
        first = pipeline[0] if pipeline else None
        if isinstance(first, dict) and 'LoadImage' in str(first.get('type')):
            pipeline[0] = LoadImageFromArray(to_float32=bool(first.get('to_float32', False)))
        else:
            pipeline.insert(0, LoadImageFromArray())
    with build_context('data', 'test', filename=getattr(cfg, 'filename', None)):
        return Compose(pipeline)


def _collate(samples):
    try:
        from detforge.data import collate
    except ImportError:
        from detforge.data.loader import collate
    return collate(samples)


def inference_detector(model, imgs, return_structured: bool = False):
    """Detect objects in one image or a batch.

    Args:
        model: from :func:`init_detector` (has ``cfg``).
        imgs: an image path, a BGR uint8 ``(H, W, 3)`` array, or a list of them (a batch).
        return_structured: return :class:`DetResult` instead of per-class arrays.

    Returns:
        For one image, a list over classes of ``(n, 5)`` float32 arrays ``[x1, y1, x2, y2,
        score]`` in the image's pixels (or a :class:`DetResult`); for a mask detector
        ``(bbox_result, segm_result)`` with per class lists of bool ``(H, W)`` masks, as
        MMDetection 2.x; for a list, a list of those.
    """
    single = not isinstance(imgs, (list, tuple))
    imgs = [imgs] if single else list(imgs)
    if not imgs:
        return []
    cfg = getattr(model, 'cfg', None)
    if cfg is None:
        raise DetforgeError('the model has no config (model.cfg); build it with init_detector')
    from_array = isinstance(imgs[0], np.ndarray)
    if any(isinstance(i, np.ndarray) != from_array for i in imgs):
        raise DetforgeError('a batch must be all image paths or all arrays')
    pipeline = build_test_pipeline(cfg, from_array=from_array)
    samples = []
    for img in imgs:
        if from_array:
            data = dict(img=img)
        else:
            path = os.fspath(img)
            if not os.path.isfile(path):
                raise DetforgeError(f'image not found: {path}')
            data = dict(img_info=dict(filename=path), img_prefix=None)
        sample = pipeline(data)
        if sample is None:
            name = '(array)' if from_array else img
            raise DetforgeError(f'the test pipeline dropped the image {name}')
        samples.append(sample)
    batch = _collate(samples)
    with torch.inference_mode():
        results = model(return_loss=False, rescale=True, **batch)
    if return_structured:
        names = getattr(model, 'CLASSES', None) or ()
        results = [result_to_structured(r, names) for r in results]
    return results[0] if single else results
