"""What every exported detector shares, whatever runs its graph.

A graph written by :func:`~detforge.deployment.onnx_export.export_onnx` takes ``img`` (uint8
``(B, 3, H, W)``, padded) and ``img_shape`` (float32 ``(B, 2)``) and returns ``dets (B, N, 5)``
and ``labels (B, N)``. :class:`ExportedDetector` turns the batches of the test and inference
code into those inputs (padding to a static shape or batch when the graph has one) and the
outputs into what :meth:`BaseDetector.simple_test` returns, so a backend only says how to
load a file and run the graph once (:meth:`ExportedDetector._infer`).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from detforge.registry import DetforgeError

__all__ = ['ExportedDetector']


def _scale_factor(meta) -> np.ndarray:
    sf = np.asarray(meta.get('scale_factor', 1.0), dtype=np.float32).reshape(-1)
    return np.repeat(sf, 4) if sf.size == 1 else sf


class ExportedDetector(nn.Module):
    """Base of the backends: set ``self.meta`` (the export metadata), ``self.model_file`` and
    ``self.backend`` in ``__init__`` (then call :meth:`_read_meta`), implement :meth:`_infer`.
    """

    backend = 'exported'

    def _read_meta(self, meta: dict, class_names=None) -> None:
        self.meta = meta
        self.num_classes = int(meta['num_classes'])
        names = class_names or meta.get('classes')
        self.CLASSES = tuple(names) if names else None
        self.norm_cfg = meta['norm_cfg']
        self.input_shape = tuple(meta['input_shape']) if meta.get('input_shape') else None
        self.batch_size = meta.get('batch_size')

    def _infer(self, img: np.ndarray, img_shape: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the graph once.

        Args:
            img: uint8 ``(B, 3, H, W)`` at the graph's input shape and batch size.
            img_shape: float32 ``(B, 2)``, each image's ``[h, w]`` inside the padding.

        Returns:
            ``dets`` float32 ``(B, N, 5)`` and ``labels`` int64 ``(B, N)`` (-1: padding row).
        """
        raise NotImplementedError(f'{type(self).__name__} must implement _infer')

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
            raise DetforgeError('an exported model cannot be trained (return_loss=True)')
        if isinstance(img, (list, tuple)):
            if len(img) != 1:
                raise DetforgeError(f'the {self.backend} backend runs one augmentation, got {len(img)} '
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
                                    f'{np.asarray(norm[key]).tolist()} but {self.model_file} was '
                                    f'exported with {self.norm_cfg[key]}; re-export with this config')
        if bool(norm.get('to_rgb', False)) != bool(self.norm_cfg['to_rgb']):
            raise DetforgeError(f'the test pipeline has to_rgb={norm.get("to_rgb")} but '
                                f'{self.model_file} was exported with to_rgb={self.norm_cfg["to_rgb"]}')

    def _run(self, img: np.ndarray, img_shape: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One graph call (padding the input to a static shape / batch if needed)."""
        B, _, H, W = img.shape
        if self.input_shape is not None:
            h, w = self.input_shape
            if H > h or W > w:
                raise DetforgeError(f'a batch of padded size {H}x{W} does not fit the static input '
                                    f'{h}x{w} of {self.model_file}; export with --shape {H} {W} (or '
                                    'larger) or with --dynamic')
            if (H, W) != (h, w):
                canvas = np.zeros((B, 3, h, w), dtype=np.uint8)
                canvas[:, :, :H, :W] = img
                img = canvas
        n = B
        if self.batch_size is not None and B < self.batch_size:
            img = np.concatenate([img, np.zeros((self.batch_size - B,) + img.shape[1:], np.uint8)])
            img_shape = np.concatenate([img_shape, np.repeat(img_shape[:1], self.batch_size - B, 0)])
        dets, labels = self._infer(img, img_shape)
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
        raise DetforgeError(f'the {self.backend} backend has no test-time augmentation')

    def __repr__(self) -> str:
        return (f'{type(self).__name__}({self.model_file!r}, detector={self.meta.get("detector")}, '
                f'input_shape={self.input_shape or "dynamic"}, classes={self.CLASSES})')


