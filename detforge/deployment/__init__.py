"""Deployment: export detectors to ONNX (post-processing inside the graph), run the exported file
with onnxruntime or OpenVINO as a drop-in detector for the test and inference code paths, and
quantize it to INT8."""
from .backends import BACKENDS, build_backend_model
from .exported_detector import ExportedDetector
from .onnx_export import ExportableDetector, check_exportable, export_onnx
from .ort_backend import ORTDetector, read_onnx_metadata

__all__ = ['BACKENDS', 'ExportableDetector', 'ExportedDetector', 'ORTDetector',
           'build_backend_model', 'check_exportable', 'export_onnx', 'read_onnx_metadata']
