"""Export of the float (pruned) model to ONNX, verified with onnxruntime."""

from .onnx_export import (
    DEFAULT_OPSET,
    INPUT_NAME,
    OUTPUT_NAME,
    ExportError,
    OnnxExport,
    export_onnx,
)

__all__ = ["DEFAULT_OPSET", "INPUT_NAME", "OUTPUT_NAME", "ExportError", "OnnxExport", "export_onnx"]
