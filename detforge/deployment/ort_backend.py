"""Run an exported ``.onnx`` detector with onnxruntime, as a drop-in for the PyTorch model.

:class:`ORTDetector` takes the batches the test and inference code build (``img`` uint8
``(B, 3, Hp, Wp)`` and ``img_metas``), feeds the graph made by
:func:`~detforge.deployment.onnx_export.export_onnx`, and returns what
:meth:`BaseDetector.simple_test` returns: per image, a list over classes of float32 ``(n, 5)``
arrays in original-image pixels. So ``single_gpu_test(ORTDetector(...), loader)`` and
``inference_detector(build_backend_model(cfg, 'model.onnx'), 'img.jpg')`` work unchanged.
"""
from __future__ import annotations

import json
import os

import numpy as np
import torch
from torch import Tensor, nn

from detforge.registry import DetforgeError

from .onnx_export import METADATA_KEY

__all__ = ['ORTDetector', 'build_backend_model', 'BACKENDS']

BACKENDS = ('pytorch', 'onnxruntime')


def _scale_factor(meta) -> np.ndarray:
    sf = np.asarray(meta.get('scale_factor', 1.0), dtype=np.float32).reshape(-1)
    return np.repeat(sf, 4) if sf.size == 1 else sf


class ORTDetector(nn.Module):
    """An exported detector run by onnxruntime (``CPUExecutionProvider`` by default).

    Args:
        onnx_file: a file written by :func:`export_onnx` (its metadata gives the classes, the
            normalisation baked into the graph and the static input shape, if any).
        class_names: overrides the class names of the metadata.
        providers: onnxruntime execution providers.
        num_threads: intra-op threads (0: onnxruntime's default).

    The graph's input is uint8: floating (already normalised) images are refused. A static
    graph's ``(H, W)`` must hold every padded batch (the batch is padded further with zeros,
    which the graph masks out using ``img_shape``); a static batch size is filled by running
    the images in chunks.
    """

    def __init__(self, onnx_file: str, class_names=None, providers=('CPUExecutionProvider',),
                 num_threads: int = 0):
        super().__init__()
        import onnxruntime as ort
        if not os.path.isfile(onnx_file):
            raise DetforgeError(f'ONNX file not found: {onnx_file}')
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(onnx_file), sess_options=options,
                                                providers=list(providers))
        except Exception as e:  # noqa: BLE001 - a corrupt or foreign file: say which
            raise DetforgeError(f'onnxruntime cannot load {onnx_file}: {e}') from e
        raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if raw is None:
            raise DetforgeError(f'{onnx_file} was not written by `detforge export` (no '
                                f'{METADATA_KEY!r} metadata); export it with detforge export')
        self.meta = json.loads(raw)
        self.onnx_file = str(onnx_file)
        self.num_classes = int(self.meta['num_classes'])
        names = class_names or self.meta.get('classes')
        self.CLASSES = tuple(names) if names else None
        self.norm_cfg = self.meta['norm_cfg']
        self.input_shape = tuple(self.meta['input_shape']) if self.meta.get('input_shape') else None
        self.batch_size = self.meta.get('batch_size')

    # ------------------------------------------------------------------ nn.Module duties
    @property
    def device(self) -> torch.device:
        return torch.device('cpu')

    def to(self, *args, **kwargs):  # onnxruntime owns the memory; keep the call harmless
        return self

    # ------------------------------------------------------------------ the detector API
    def forward(self, img, img_metas, return_loss: bool = False, rescale: bool = True, **kwargs):
        """Like :meth:`BaseDetector.forward` in test mode: ``img`` is a batch, or a list over
        augmentations holding one batch (test-time augmentation is not in the graph)."""
        if return_loss:
            raise DetforgeError('an ONNX model cannot be trained (return_loss=True)')
        if isinstance(img, (list, tuple)):
            if len(img) != 1:
                raise DetforgeError(f'the onnxruntime backend runs one augmentation, got {len(img)} '
                                    '(use a test pipeline with one scale and flip=False)')
            img, img_metas = img[0], img_metas[0]
        return self.simple_test(img, img_metas, rescale=rescale)

    def _check_norm(self, img_metas) -> None:
        norm = img_metas[0].get('img_norm_cfg') if img_metas else None
        if norm is None:
            return
        for key in ('mean', 'std'):
            if not np.allclose(np.asarray(norm[key], np.float32).reshape(-1),
                               np.asarray(self.norm_cfg[key], np.float32), atol=1e-4):
                raise DetforgeError(f'the test pipeline normalises with {key}='
                                    f'{np.asarray(norm[key]).tolist()} but {self.onnx_file} was '
                                    f'exported with {self.norm_cfg[key]}; re-export with this config')
        if bool(norm.get('to_rgb', False)) != bool(self.norm_cfg['to_rgb']):
            raise DetforgeError(f'the test pipeline has to_rgb={norm.get("to_rgb")} but '
                                f'{self.onnx_file} was exported with to_rgb={self.norm_cfg["to_rgb"]}')

    def _run(self, img: np.ndarray, img_shape: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One graph call (padding the input to a static shape / batch if needed)."""
        B, _, H, W = img.shape
        if self.input_shape is not None:
            h, w = self.input_shape
            if H > h or W > w:
                raise DetforgeError(f'a batch of padded size {H}x{W} does not fit the static input '
                                    f'{h}x{w} of {self.onnx_file}; export with --shape {H} {W} (or '
                                    'larger) or with --dynamic')
            if (H, W) != (h, w):
                canvas = np.zeros((B, 3, h, w), dtype=np.uint8)
                canvas[:, :, :H, :W] = img
                img = canvas
        n = B
        if self.batch_size is not None and B < self.batch_size:
            img = np.concatenate([img, np.zeros((self.batch_size - B,) + img.shape[1:], np.uint8)])
            img_shape = np.concatenate([img_shape, np.repeat(img_shape[:1], self.batch_size - B, 0)])
        dets, labels = self.session.run(['dets', 'labels'], {'img': img, 'img_shape': img_shape})
        return dets[:n], labels[:n]

    def simple_test(self, img: Tensor, img_metas: list[dict], rescale: bool = True, **kwargs):
        """Per image, a list over classes of float32 ``(n, 5)`` arrays (original-image pixels
        when ``rescale``), sorted by score within each class."""
        if isinstance(img, Tensor):
            if img.is_floating_point():
                raise DetforgeError('the ONNX graph takes uint8 images and normalises them itself; '
                                    'got floating images')
            img = img.detach().cpu().numpy()
        img = np.ascontiguousarray(img, dtype=np.uint8)
        if img.ndim != 4 or img.shape[1] != 3:
            raise DetforgeError(f'images must be a (B, 3, H, W) batch, got shape {img.shape}')
        self._check_norm(img_metas)
        H, W = img.shape[-2:]
        img_shape = np.asarray([list(m.get('img_shape', (H, W))[:2]) for m in img_metas],
                               dtype=np.float32)
        step = self.batch_size or len(img)
        results = []
        for start in range(0, len(img), step):
            dets, labels = self._run(img[start:start + step], img_shape[start:start + step])
            for i in range(len(dets)):
                meta = img_metas[start + i]
                keep = labels[i] >= 0
                boxes, cls = dets[i][keep].astype(np.float32), labels[i][keep]
                if rescale:
                    boxes[:, :4] /= _scale_factor(meta)
                results.append([boxes[cls == c] for c in range(self.num_classes)])
        return results

    def aug_test(self, imgs, img_metas, rescale: bool = True, **kwargs):
        raise DetforgeError('the onnxruntime backend has no test-time augmentation')

    def __repr__(self) -> str:
        return (f'{type(self).__name__}({self.onnx_file!r}, detector={self.meta.get("detector")}, '
                f'input_shape={self.input_shape or "dynamic"}, classes={self.CLASSES})')


def build_backend_model(config, onnx_file: str, device: str = 'cpu', cfg_options: dict | None = None,
                        backend: str = 'onnxruntime'):
    """An :class:`ORTDetector` set up like :func:`init_detector`'s model: ``model.cfg`` (for
    :func:`inference_detector`'s test pipeline) and ``model.CLASSES`` (from the file's metadata,
    else the config's test data set).

    Args:
        config: config path or :class:`Config` (its test pipeline feeds the graph).
        onnx_file: the exported model.
        device: only ``'cpu'`` (onnxruntime's CPU provider).
    """
    if backend not in BACKENDS[1:]:
        raise DetforgeError(f'unknown backend {backend!r}; expected one of {list(BACKENDS[1:])}')
    if not str(device).startswith('cpu'):
        raise DetforgeError(f'the onnxruntime backend runs on the CPU, got --device {device}')
    from detforge.apis.inference import _classes_from_config, _load_config
    cfg = _load_config(config, cfg_options)
    model = ORTDetector(onnx_file)
    if not model.CLASSES:
        classes = _classes_from_config(cfg)
        model.CLASSES = tuple(classes) if classes else None
    model.cfg = cfg
    return model.eval()
