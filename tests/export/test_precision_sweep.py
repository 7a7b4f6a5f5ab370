"""Every registered variant in every precision (slow): exported at 256x256 and checked against PyTorch; the
TensorRT flavour linted for TensorRT 10.3 and 11.

These are recipe weights, whose 150 logits sit near ties, so they judge numerics, not accuracy: FP16 passes its
full tolerance (label agreement >= 99.5 % and cosine per input); INT8 must be finite, and its logits must keep the
direction of FP32's (cosine >= RECIPE_INT8_COSINE on seeded inputs and calibration scenes). That floor is below the
INT8 tolerance's 0.98 because untrained weights are no fair judge of a quantizer: measured at 6 calibration images,
the T variants and SegNeXt S/B/L stay above 0.98 but the deeper LRFormer S/B/L reach 0.92-0.96 (errors compound
through layers whose activations no training has shaped); a broken quantization (wrong scales, a lost branch) lands
far below it. INT8 accuracy with its full tolerance is judged on the trained fixtures
(tests/export/precision/test_accuracy.py, benchmarks/precision_matrix.py)."""
from __future__ import annotations

import os

import onnx
import pytest

from exports import verifier
from segdeploy import models
from segdeploy.evaluation.tolerances import tolerance_for
from segdeploy.evaluation.validate import validate_artifact
from segdeploy.export.onnx import export_onnx
from segdeploy.export.passes.qdq_tensorrt import placement_problems
from segdeploy.export.precision import PrecisionOptions
from segdeploy.export.tensorrt.lint import errors, lint_file

pytestmark = pytest.mark.slow

SIZE = 256
FLAVOURS = [("fp16", None), ("int8", "cpu"), ("int8", "openvino"), ("int8", "tensorrt")]
RECIPE_INT8_COSINE = 0.9


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory):
    """Calibration scenes from the synthetic dataset generator."""
    from segdeploy.datasets.synthetic import SynthConfig, write_dataset

    folder = tmp_path_factory.mktemp("sweep_calib") / "synth"
    write_dataset(folder, SynthConfig(num_classes=8, train=6, val=1, height=256, width=256, seed=3))
    return str(folder)


@pytest.mark.parametrize("mode, target", FLAVOURS, ids=["fp16", "int8-cpu", "int8-openvino", "int8-tensorrt"])
@pytest.mark.parametrize("name", models.list_models())
def test_every_variant_exports_in_every_precision(name, mode, target, calib_dir, tmp_path):
    int8 = mode == "int8"
    options = PrecisionOptions(mode, target, calib=calib_dir if int8 else None, calib_count=6)
    result = export_onnx(name, tmp_path / f"{name}_{mode}.onnx", height=SIZE, width=SIZE, precision=options,
                         verify=None if int8 else verifier(), threads=2)
    m = result.manifest
    assert (m.precision.mode, m.precision.flavour) == (mode, (target or "cpu") if int8 else m.precision.flavour)
    if not int8:
        assert m.validation["passed"], m.validation
        return
    report = validate_artifact(result.path, n=2, images=os.path.join(calib_dir, "images", "training"), threads=2)
    assert tolerance_for("int8").min_cosine > RECIPE_INT8_COSINE
    for output in report.outputs.values():
        assert output.nonfinite == 0, output
        if output.kind == "logits":
            assert output.cosine >= RECIPE_INT8_COSINE, (name, target, output.cosine)
    if target == "tensorrt":
        assert errors(lint_file(result.path, "10.3")) == [] and errors(lint_file(result.path, "11")) == []
    if target == "openvino":
        assert placement_problems(onnx.load(result.path)) == []
