"""Run an exported ``.onnx`` detector with onnxruntime, as a drop-in for the PyTorch model.

:class:`ORTDetector` takes the batches the test and inference code build (``img`` uint8
``(B, 3, Hp, Wp)`` and ``img_metas``), feeds the graph made by
:func:`~detforge.deployment.onnx_export.export_onnx`, and returns what
:meth:`BaseDetector.simple_test` returns: per image, a list over classes of float32 ``(n, 5)``
arrays in original-image pixels. So ``single_gpu_test(ORTDetector(...), loader)`` and
``inference_detector(build_backend_model(cfg, 'model.onnx'), 'img.jpg')`` work unchanged.
What the backends share is in :mod:`.exported_detector`.
"""
from __future__ import annotations

import json
import os

import numpy as np

from detforge.registry import DetforgeError

from .exported_detector import ExportedDetector
from .onnx_export import METADATA_KEY

__all__ = ['ORTDetector', 'read_onnx_metadata']


class ORTDetector(ExportedDetector):
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

    backend = 'onnxruntime'

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
        self.onnx_file = self.model_file = str(onnx_file)
        self._read_meta(json.loads(raw), class_names)

    def _infer(self, img: np.ndarray, img_shape: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return tuple(self.session.run(['dets', 'labels'], {'img': img, 'img_shape': img_shape}))


def read_onnx_metadata(onnx_file: str) -> dict:
    """The export metadata (classes, normalisation, shapes) of a file written by
    :func:`export_onnx`, read without building a session."""
    import onnx
    model = onnx.load(str(onnx_file), load_external_data=False)
    for entry in model.metadata_props:
        if entry.key == METADATA_KEY:
            return json.loads(entry.value)
    raise DetforgeError(f'{onnx_file} was not written by `detforge export` (no {METADATA_KEY!r} '
                        'metadata); export it with detforge export')
