"""Post-training static INT8 quantization of an exported detector (onnxruntime's quantizer).

The convolutions' weights become int8 per output channel and their inputs int8 per tensor,
with scales calibrated on real images (min/max of each activation over the calibration set).
The result is a QDQ ONNX file: onnxruntime runs it with int8 kernels, and OpenVINO reads the
same file and runs it in int8 too. Everything that is not a convolution (normalisation,
box decoding, NMS) stays float32, and so do the layers named in ``keep_float`` (the
detection head's last convolutions are the most sensitive: their outputs are the scores and
box offsets themselves).
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence

import numpy as np

from detforge.registry import DetforgeError

from .onnx_export import METADATA_KEY
from .ort_backend import read_onnx_metadata

__all__ = ['quantize_onnx', 'calibration_batches']


def calibration_batches(cfg, images: Sequence[str], input_shape: Sequence[int]
                        ) -> list[dict[str, np.ndarray]]:
    """The graph's inputs for each calibration image, made by the config's test pipeline.

    Args:
        cfg: the config whose test pipeline (resize, pad) the exported graph expects.
        images: image paths.
        input_shape: the static graph's ``(H, W)``; each image is padded to it with zeros.

    Returns:
        One dict per image: ``img`` uint8 ``(1, 3, H, W)`` and ``img_shape`` float32 ``(1, 2)``.
    """
    from detforge.apis.inference import _collate, build_test_pipeline
    pipeline = build_test_pipeline(cfg)
    H, W = input_shape
    feeds = []
    for path in images:
        batch = _collate([pipeline(dict(img_info=dict(filename=str(path)), img_prefix=None))])
        img, metas = batch['img'], batch['img_metas']
        if isinstance(img, (list, tuple)):  # MultiScaleFlipAug: the first (only) scale
            img, metas = img[0], metas[0]
        img = img.numpy().astype(np.uint8)
        h, w = img.shape[-2:]
        if h > H or w > W:
            raise DetforgeError(f'calibration image {path} is {h}x{w} after the test pipeline, '
                                f'larger than the graph input {H}x{W}')
        canvas = np.zeros((1, 3, H, W), np.uint8)
        canvas[:, :, :h, :w] = img
        shape = np.asarray([list(metas[0]['img_shape'][:2])], np.float32)
        feeds.append(dict(img=canvas, img_shape=shape))
    return feeds


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a list of feeds."""

    def __init__(self, feeds: Iterable[dict]):
        self._feeds = iter(list(feeds))

    def get_next(self):
        return next(self._feeds, None)


def quantize_onnx(onnx_file: str, out_file: str, feeds: Sequence[dict],
                  keep_float: Sequence[str] = ()) -> dict:
    """Quantize the convolutions of ``onnx_file`` to int8 (QDQ), calibrated on ``feeds``.

    Args:
        onnx_file: a static-shape float32 graph written by ``detforge export``.
        out_file: the int8 ``.onnx`` to write (it keeps the export metadata, with
            ``quantized: 'int8'`` added).
        feeds: calibration inputs, e.g. from :func:`calibration_batches`.
        keep_float: substrings of node names to leave in float32 (e.g. ``'retina_cls'``).

    Returns:
        The metadata written into ``out_file``.
    """
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process
    if not feeds:
        raise DetforgeError('INT8 calibration needs at least one image (--calib N, N >= 1)')
    meta = read_onnx_metadata(onnx_file)
    if meta.get('dynamic'):
        raise DetforgeError(f'{onnx_file} has dynamic axes; quantize a static export '
                            '(detforge export without --dynamic)')
    prepared = out_file + '.prep.onnx'
    try:
        quant_pre_process(str(onnx_file), prepared, skip_symbolic_shape=True)
        graph = onnx.load(prepared)
        exclude = [n.name for n in graph.graph.node
                   if any(key in n.name for key in keep_float)]
        quantize_static(prepared, str(out_file), _Reader(feeds),
                        quant_format=QuantFormat.QDQ, op_types_to_quantize=['Conv'],
                        per_channel=True, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                        calibrate_method=CalibrationMethod.MinMax)
    finally:
        if os.path.exists(prepared):
            os.remove(prepared)
    model = onnx.load(str(out_file))
    meta = dict(meta, quantized='int8', kept_float=sorted(exclude))
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    onnx.save(model, str(out_file))
    return meta
