"""Build an exported detector for a backend name (``detforge test/infer/benchmark --backend``)."""
from __future__ import annotations

from detforge.registry import DetforgeError

__all__ = ['BACKENDS', 'build_backend_model']

#: ``pytorch`` is the model itself; the others run a file written by ``detforge export``
BACKENDS = ('pytorch', 'onnxruntime', 'openvino')


def build_backend_model(config, model_file: str, device: str = 'cpu',
                        cfg_options: dict | None = None, backend: str = 'onnxruntime',
                        num_threads: int = 0, precision: str = 'f32'):
    """An exported detector set up like :func:`init_detector`'s model: ``model.cfg`` (for
    :func:`inference_detector`'s test pipeline) and ``model.CLASSES`` (from the file's
    metadata, else the config's test data set).

    Args:
        config: config path or :class:`Config` (its test pipeline feeds the graph).
        model_file: the exported model (``.onnx``; ``.xml`` IR for openvino).
        device: only ``'cpu'``.
        backend: ``'onnxruntime'`` or ``'openvino'``.
        num_threads: intra-op threads (0: the backend's default).
        precision: openvino only: ``'f32'`` or ``'bf16'`` (see
            :class:`~detforge.deployment.openvino_backend.OVDetector`).
    """
    if backend not in BACKENDS[1:]:
        raise DetforgeError(f'unknown backend {backend!r}; expected one of {list(BACKENDS[1:])}')
    if not str(device).startswith('cpu'):
        raise DetforgeError(f'the {backend} backend runs on the CPU, got --device {device}')
    from detforge.apis.inference import _classes_from_config, _load_config
    cfg = _load_config(config, cfg_options)
    if backend == 'onnxruntime':
        if precision != 'f32':
            raise DetforgeError(f'precision {precision} is for the openvino backend; '
                                'onnxruntime runs the exported float32 graph')
        from .ort_backend import ORTDetector
        model = ORTDetector(model_file, num_threads=num_threads)
    else:
        from .openvino_backend import OVDetector
        model = OVDetector(model_file, num_threads=num_threads, precision=precision)
    if not model.CLASSES:
        classes = _classes_from_config(cfg)
        model.CLASSES = tuple(classes) if classes else None
    model.cfg = cfg
    return model.eval()
