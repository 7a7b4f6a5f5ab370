"""PyTorch -> deployable artifacts. ``export_onnx`` is the entry point; each pass (simplify.py) is an ONNX -> ONNX
function with a report, graph.py holds the in-graph pre/post-processing and metadata.py the self-description."""
from segdeploy.export.onnx import ExportResult, export_onnx

__all__ = ["ExportResult", "export_onnx"]
