"""Export as the CLI does (verified against PyTorch), for tests."""
from __future__ import annotations

from segdeploy.evaluation.validate import verify_graph
from segdeploy.export.onnx import export_onnx

CI_SIZE = (256, 320)


def verifier(threads: int = 2):
    return lambda graph, proto, shapes, **options: verify_graph(graph, proto, shapes, threads=threads, **options)


def export(name: str, path, *, verify: bool = True, **options):
    return export_onnx(name, path, verify=verifier() if verify else None, **options)


# ---------------------------------------------------------------------------------------------------------------
# The trained test fixture in every precision (conftest.py's ``trained_exports``)

TRAINED_SIZE = 256
# each precision and INT8 flavour, and the runtime it is made for (the tensorrt flavour's own runtime needs a GPU;
# its graph runs on ONNX Runtime)
TRAINED_PRECISIONS = {"fp16": ("fp16", None, "onnxruntime"), "int8-cpu": ("int8", "cpu", "onnxruntime"),
                      "int8-openvino": ("int8", "openvino", "openvino"),
                      "int8-tensorrt": ("int8", "tensorrt", "onnxruntime")}


def held_out_accuracy(fixture, data=None, size: int = TRAINED_SIZE, limit: int | None = None):
    """The export's accuracy measurement: mIoU on the fixture's validation split (or agreement on ``data``)."""
    from segdeploy import models
    from segdeploy.evaluation.accuracy import GraphAccuracy

    spec = models.get_spec(fixture.model)
    return GraphAccuracy(data or fixture.dataset_dir, mean=spec.mean, std=spec.std, channel_order=spec.channel_order,
                         align_corners=spec.align_corners, size=(size, size), threads=2, limit=limit)


def export_precision(fixture, path, options, data=None, limit: int | None = None):
    """``fixture``'s checkpoint exported at TRAINED_SIZE with ``options``, its accuracy measured on held-out images
    and its graph verified against PyTorch, as ``segdeploy export --eval-data`` does."""
    return export_onnx(fixture.model, path, checkpoint=fixture.checkpoint, height=TRAINED_SIZE, width=TRAINED_SIZE,
                       precision=options, evaluator=held_out_accuracy(fixture, data, limit=limit), verify=verifier(),
                       threads=2)


class TrainedExports(dict):
    """The trained fixture in each of TRAINED_PRECISIONS, calibrated on 8 images of its training split, exported on
    first use and kept for the session."""

    def __init__(self, fixture, folder):
        super().__init__()
        self.fixture, self.folder = fixture, folder

    def __missing__(self, name: str):
        from segdeploy.export.precision import PrecisionOptions

        mode, target, _ = TRAINED_PRECISIONS[name]
        options = PrecisionOptions(mode, target, calib=self.fixture.dataset_dir, calib_count=8)
        self[name] = export_precision(self.fixture, self.folder / f"{name}.onnx", options)
        return self[name]
