"""Accuracy of every precision on a trained checkpoint (the session's ``trained_fixture``: a cgrseg_t trained on 8
synthetic texture classes, with its dataset; ``trained_exports``: it in FP16 and each INT8 flavour, calibrated on the
training split, exported once per session): each stays within its tolerance on the held-out validation split and on
the runtime it is made for, validate --data judges them with their tolerance, an overlap of calibration and
evaluation images is refused, and --max-drop keeps the most sensitive blocks in float until the budget holds, saying
which and why."""
from __future__ import annotations

import os
import shutil

import pytest

from exports import TRAINED_PRECISIONS, export_precision
from segdeploy.cli import main
from segdeploy.errors import InputError
from segdeploy.evaluation.tolerances import tolerance_for
from segdeploy.evaluation.validate import validate_artifact
from segdeploy.export.precision import PrecisionOptions

FP16_MIOU_DROP = 0.2  # FP16's tolerance bounds agreement, not mIoU; float16 rounding moves it by hundredths


@pytest.mark.parametrize("name", list(TRAINED_PRECISIONS))
def test_each_precision_keeps_the_trained_accuracy(trained_exports, name):
    """Measured at export on the 12 held-out images on ONNX Runtime, against the FP32 graph."""
    mode, target, _ = TRAINED_PRECISIONS[name]
    m = trained_exports[name].manifest
    tolerance = tolerance_for(mode)
    accuracy = m.precision.details["accuracy"]
    assert accuracy["metric"] == "mIoU" and accuracy["images"] == 12
    assert accuracy["fp32"] > 60  # a trained model, not near-tied recipe weights
    assert accuracy["agreement"] >= 100 * tolerance.min_agreement, accuracy
    if mode == "int8":
        assert accuracy["drop"] <= tolerance.max_miou_drop, accuracy
        assert m.precision.flavour == target
        # calibrated on the training split, so the validation split is a fair held-out set
        assert m.precision.details["calibration"]["source"] == "ade20k training split"
    else:
        assert abs(accuracy["drop"]) <= FP16_MIOU_DROP, accuracy
        assert "calibration images" in m.precision.details["ranges"]["source"]
    assert m.validation["passed"] and m.validation["precision"] == mode
    # verified against PyTorch on one seeded input, the 8 calibration images and the 12 held-out ones
    assert m.validation["cases"] == 1 + 8 + 12
    if mode == "int8":
        criteria = [c["criterion"] for c in m.validation["checks"]]
        assert "label agreement over the 20 real images" in criteria, criteria


@pytest.mark.parametrize("name", ["int8-cpu", "int8-openvino"])
def test_validate_judges_int8_on_the_held_out_set_on_its_runtime(trained_exports, trained_fixture, name):
    """validate --data on the runtime the flavour is made for (the export measured the openvino flavour on ONNX
    Runtime, which does not fuse it; OpenVINO runs its int8 kernels)."""
    _, target, backend = TRAINED_PRECISIONS[name]
    result = trained_exports[name]
    report = validate_artifact(result.path, checkpoint=trained_fixture.checkpoint, n=1, threads=2,
                               data=trained_fixture.dataset_dir, backend=backend)
    held = report.dataset
    assert report.candidate["backend"] == backend and result.manifest.precision.flavour == target
    assert held["images"] == 12 and held["passed"] and report.passed, report.failure_line()
    # (the fixture's own mIoU was measured at the test policy's size, 512x512; this artifact takes 256x256)
    assert abs(held["miou_delta"]) <= tolerance_for("int8").max_miou_drop and held["miou_reference"] > 60
    assert report.tolerance.precision == "int8"


def test_validate_refuses_the_calibration_images(trained_exports, trained_fixture, tmp_path):
    training = os.path.join(trained_fixture.dataset_dir, "images", "training")
    shutil.copytree(training, tmp_path / "photos")
    with pytest.raises(InputError, match="were used for calibration"):
        validate_artifact(trained_exports["int8-cpu"].path, checkpoint=trained_fixture.checkpoint, n=1,
                          data=tmp_path / "photos")


def test_export_refuses_an_overlap_of_calibration_and_evaluation(trained_fixture, tmp_path):
    images = os.path.join(trained_fixture.dataset_dir, "images", "validation")
    options = PrecisionOptions("int8", calib=images, calib_count=4)
    with pytest.raises(InputError, match="the accuracy is measured on were used for calibration"):
        export_precision(trained_fixture, tmp_path / "x.onnx", options)
    assert not (tmp_path / "x.onnx").exists()


def test_int8_verification_without_a_held_out_set_says_how_to_widen_it(trained_fixture, tmp_path):
    """Without --eval-data an INT8 graph is judged on eight calibration images; when that fails, the line says how
    to judge it on more (the held-out images join them, as the test above counts)."""
    from segdeploy.errors import ToleranceError
    from segdeploy.export.onnx import export_onnx

    seen = {}

    class Failing:
        passed = False

        def failure_line(self):
            return "logits: label agreement over the 8 real images 91.00%, needs >= 95.0%"

        def summary(self):
            return {"passed": False}

    def verify(graph, proto, shapes, **options):
        seen.update(options)
        return Failing()

    options = PrecisionOptions("int8", "cpu", calib=trained_fixture.dataset_dir, calib_count=10)
    with pytest.raises(ToleranceError, match=r"8 calibration images are a small sample: add --eval-data DIR") \
            as failure:
        export_onnx(trained_fixture.model, tmp_path / "x.onnx", checkpoint=trained_fixture.checkpoint, height=128,
                    width=128, precision=options, verify=verify, threads=2)
    assert len(seen["images"]) == 8 and "\n" not in str(failure.value)
    assert not os.listdir(tmp_path)


def test_max_drop_keeps_the_most_sensitive_blocks(trained_fixture, tmp_path):
    """Against agreement with FP32 (a folder without labels), a budget of 0.05 points, tighter than plain INT8 (the
    TensorRT flavour flips about 0.15 % of this fixture's pixels): the search keeps blocks in float16 until it holds,
    and the manifest says which and why."""
    photos = tmp_path / "photos"
    shutil.copytree(os.path.join(trained_fixture.dataset_dir, "images", "validation"), photos)
    budget = 0.05
    options = PrecisionOptions("int8", "tensorrt", calib=trained_fixture.dataset_dir, calib_count=8, max_drop=budget)
    result = export_precision(trained_fixture, tmp_path / "mixed.onnx", options, data=photos, limit=6)
    details = result.manifest.precision.details
    accuracy, mixed = details["accuracy"], details["mixed_precision"]
    assert accuracy["metric"] == "agreement" and accuracy["images"] == 6 and accuracy["drop"] <= budget
    assert mixed["all_quantized"] < 100 - budget  # plain INT8 was over the budget ...
    assert 1 <= len(mixed["kept"]) < mixed["blocks"]  # ... and some, not all, blocks were kept
    first = mixed["kept"][0]
    assert first["rank"] == 1 and "kept in float16" in first["reason"] and first["layers"]
    kept_layers = {layer for block in mixed["kept"] for layer in block["layers"]}
    quantized = set(details["quantization"]["quantized"])
    assert not kept_layers & quantized  # what the manifest says was kept is really not quantized
    assert [e["kept_blocks"] for e in mixed["evaluations"]][0] == 0


@pytest.mark.slow
def test_cli_export_and_validate_with_data(trained_fixture, tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    code = main(["export", "--model", "cgrseg_t", "--checkpoint", trained_fixture.checkpoint, "--size", "256",
                 "--precision", "int8", "--calib", trained_fixture.dataset_dir, "--calib-count", "8",
                 "--eval-data", trained_fixture.dataset_dir, "--max-drop", "1", "--output", str(out),
                 "--threads", "2"])
    text = capsys.readouterr().out
    assert code == 0 and "int8 (cpu)" in text and "mIoU" in text and "budget 1" in text
    code = main(["validate", str(out), "--checkpoint", trained_fixture.checkpoint, "--n", "1", "--data",
                 trained_fixture.dataset_dir, "--limit", "4", "--threads", "2"])
    text = capsys.readouterr().out
    assert code == 0 and "held-out set" in text and "PASSED" in text
