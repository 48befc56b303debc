"""Run an exported detector with OpenVINO (``pip install openvino``, the ``openvino`` extra).

OpenVINO reads the ``.onnx`` file that ``detforge export`` writes directly, or the OpenVINO IR
(``.xml`` + ``.bin``) that ``detforge export --backend openvino`` converts it to once (loading
IR is faster than converting ONNX at every start). The IR keeps detforge's export metadata in
its runtime info under the same key as the ONNX file.
"""
from __future__ import annotations

import json
import os

import numpy as np

from detforge.registry import DetforgeError

from .exported_detector import ExportedDetector
from .onnx_export import METADATA_KEY
from .ort_backend import read_onnx_metadata

__all__ = ['OVDetector', 'convert_to_openvino']


def _import_openvino():
    try:
        import openvino
    except ImportError:
        raise DetforgeError('the openvino backend needs OpenVINO: pip install openvino '
                            "(or pip install -e '.[openvino]')") from None
    return openvino


def convert_to_openvino(onnx_file: str, out_file: str) -> str:
    """Convert an exported ``.onnx`` to OpenVINO IR ``out_file`` (``.xml``; the weights go to
    the ``.bin`` beside it), keeping the export metadata. Returns ``out_file``."""
    ov = _import_openvino()
    if not str(out_file).endswith('.xml'):
        raise DetforgeError(f'an OpenVINO IR file ends in .xml, got {out_file}')
    meta = read_onnx_metadata(onnx_file)
    model = ov.convert_model(str(onnx_file))
    model.set_rt_info(json.dumps(meta), [METADATA_KEY])
    ov.save_model(model, str(out_file), compress_to_fp16=False)
    return str(out_file)


class OVDetector(ExportedDetector):
    """An exported detector compiled by OpenVINO for the CPU.

    Args:
        model_file: ``.onnx`` from ``detforge export`` or ``.xml`` IR from
            ``detforge export --backend openvino``.
        class_names: overrides the class names of the metadata.
        num_threads: inference threads (0: OpenVINO's default, all cores).
        device: OpenVINO device name (``'CPU'``).
        precision: ``'f32'`` (default: the exported float32 arithmetic) or ``'bf16'``
            (OpenVINO runs convolutions and matrix products in bfloat16, about twice as fast
            where the CPU has AVX-512 BF16 or AMX; the detections move a little: measure the
            AP, e.g. with ``detforge benchmark --backends openvino openvino-bf16 --eval``).
            ``'bf16'`` on a CPU without native bfloat16 is an error, not a silent float32 run.
    """

    backend = 'openvino'
    PRECISIONS = ('f32', 'bf16')

    def __init__(self, model_file: str, class_names=None, num_threads: int = 0,
                 device: str = 'CPU', precision: str = 'f32'):
        super().__init__()
        ov = _import_openvino()
        if not os.path.isfile(model_file):
            raise DetforgeError(f'model file not found: {model_file}')
        if precision not in self.PRECISIONS:
            raise DetforgeError(f'OpenVINO precision must be one of {self.PRECISIONS}, got '
                                f'{precision!r}')
        core = ov.Core()
        if precision == 'bf16' and 'BF16' not in core.get_property(
                device, 'OPTIMIZATION_CAPABILITIES'):
            raise DetforgeError(f'precision bf16: this {device} has no native bfloat16 '
                                '(OpenVINO would run float32); use precision f32')
        try:
            model = core.read_model(str(model_file))
        except Exception as e:  # noqa: BLE001 - a corrupt or foreign file: say which
            raise DetforgeError(f'OpenVINO cannot read {model_file}: {e}') from e
        if str(model_file).endswith('.onnx'):
            meta = read_onnx_metadata(model_file)
        elif model.has_rt_info([METADATA_KEY]):
            meta = json.loads(model.get_rt_info([METADATA_KEY]).astype(str))
        else:
            raise DetforgeError(f'{model_file} was not written by `detforge export` (no '
                                f'{METADATA_KEY!r} runtime info)')
        config = {'INFERENCE_NUM_THREADS': int(num_threads)} if num_threads else {}
        # set explicitly: OpenVINO would otherwise pick bf16 by itself on CPUs with AMX
        config['INFERENCE_PRECISION_HINT'] = precision
        self.precision = precision
        self.compiled = core.compile_model(model, device, config)
        self.request = self.compiled.create_infer_request()
        self.model_file = str(model_file)
        self._read_meta(meta, class_names)

    def _infer(self, img: np.ndarray, img_shape: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self.request.infer({'img': img, 'img_shape': img_shape})
        return (np.asarray(out[self.compiled.output('dets')]),
                np.asarray(out[self.compiled.output('labels')]))
