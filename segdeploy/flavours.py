"""The INT8 flavours: one record per way of quantizing a graph, read by everything that names one.

A flavour is an ONNX graph with explicit Q/DQ laid out for one runtime's fusions. Its record says which pass makes
it, where it runs fast, what it needs (opset, I/O dtype), how it is judged and how the manifest, the bench and the
command line call it. Adding a flavour is one record here and one pass module under ``export/passes/``.

This module imports nothing heavy: the command line's help and argument checks read it.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Flavour:
    name: str  # --target, the manifest's precision.flavour
    pass_function: str  # "module:function" under segdeploy.export.passes, called as f(model, ranges, keep=...)
    fast_on: tuple[str, ...]  # the backends whose fusions the layout is made for
    symmetric: bool  # zero points all 0 (TensorRT builds only these)
    float_kind: str  # what the graph's float parts are: "float32" or "float16"
    help: str  # --target's words for it
    min_opset: int | None = None  # float16 Q/DQ needs QuantizeLinear/DequantizeLinear of opset 19
    tolerance: str = "int8"  # the key of evaluation.compare's TOLERANCES it is judged by
    builds_engine: bool = False  # TensorRT builds it into an engine; the others are refused with ``not_for_engines``
    not_for_engines: str = ""  # why TensorRT cannot build it

    @property
    def label(self) -> str:
        """The bench's and the export cache's name of an artifact of this flavour: int8-cpu, int8-openvino..."""
        return f"int8-{self.name}"

    @property
    def io_dtypes(self) -> tuple[str, ...]:
        """The input/output dtypes it can be exported with (a float32 graph keeps float32 I/O)."""
        return ("float32", "float16") if self.float_kind == "float16" else ("float32",)


QDQ_FLOAT16_OPSET = 19  # float16 QuantizeLinear/DequantizeLinear

FLAVOURS = {f.name: f for f in (
    Flavour("tensorrt", "qdq_tensorrt:quantize_tensorrt", fast_on=("tensorrt",), symmetric=True,
            float_kind="float16", min_opset=QDQ_FLOAT16_OPSET, builds_engine=True,
            help="tensorrt (symmetric int8 where TensorRT fuses it, float16 elsewhere; the default with --fmt trt)"),
    Flavour("cpu", "qdq_cpu:quantize_cpu", fast_on=("onnxruntime",), symmetric=False, float_kind="float32",
            help="cpu (uint8 activations, int8 weights, the form ONNX Runtime fuses; the default otherwise)",
            not_for_engines="asymmetric uint8 activations, which TensorRT cannot build: TensorRT quantizes "
                            "symmetrically"),
    Flavour("openvino", "qdq_openvino:quantize_openvino", fast_on=("openvino",), symmetric=True,
            float_kind="float32",
            help="openvino (symmetric int8 on the compute layers, float32 elsewhere: the fastest INT8 on OpenVINO)",
            not_for_engines="float32 outside the quantized layers, for OpenVINO"),
)}
NAMES = tuple(FLAVOURS)  # in the manifest schema's order
DEFAULT = "cpu"  # ONNX artifacts run on ONNX Runtime by default
FOR_ENGINES = next(f.name for f in FLAVOURS.values() if f.builds_engine)  # what --fmt trt makes by default
BY_LABEL = {f.label: f for f in FLAVOURS.values()}


def get(name: str) -> Flavour:
    return FLAVOURS[name]


def for_backend(backend: str) -> Flavour | None:
    """The flavour made for ``backend`` (None: no flavour is laid out for it)."""
    return next((f for f in FLAVOURS.values() if backend in f.fast_on), None)


def of_label(label: str) -> Flavour | None:
    """The flavour a bench label (int8-cpu, ...) names; None for fp32, fp16 and a bare int8."""
    return BY_LABEL.get(label)


def label(mode: str, flavour: str | None) -> str:
    """A manifest's precision as the bench and the export cache name it: fp32, fp16, int8-cpu, int8-openvino..."""
    return mode + (f"-{flavour}" if flavour else "")


def cpu_labels() -> tuple[str, ...]:
    """The labels of the flavours made for CPU runtimes (the INT8 speed target is about these)."""
    return tuple(f.label for f in FLAVOURS.values() if not f.builds_engine)
