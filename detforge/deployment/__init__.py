"""Deployment: export detectors to ONNX (post-processing inside the graph) and run the exported
file with onnxruntime as a drop-in detector for the test and inference code paths."""
from .onnx_export import ExportableDetector, export_onnx, check_exportable
from .ort_backend import ORTDetector, build_backend_model

__all__ = ['ExportableDetector', 'export_onnx', 'check_exportable', 'ORTDetector',
           'build_backend_model']
