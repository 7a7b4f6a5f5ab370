"""Accuracy of the precision passes on a trained checkpoint (the session's ``trained_fixture``: a cgrseg_t trained
on 8 synthetic texture classes, with its dataset): FP16 keeps the masks, the INT8 flavours stay within a point of
FP32's mIoU on the held-out split (calibrated on the training split), validate --data judges them with their
tolerance, an overlap of calibration and evaluation images is refused, and --max-drop keeps the most sensitive
blocks in float until the budget holds, saying which and why."""
from __future__ import annotations

import os
import shutil

import pytest

from exports import verifier
from segdeploy.cli import main
from segdeploy.errors import InputError
from segdeploy.evaluation.accuracy import GraphAccuracy
from segdeploy.evaluation.validate import validate_artifact
from segdeploy.export.onnx import export_onnx
from segdeploy.export.precision import PrecisionOptions

SIZE = 256


def evaluator(fixture, data=None, size=SIZE, limit=None):
    from segdeploy import models

    spec = models.get_spec(fixture.model)
    return GraphAccuracy(data or fixture.dataset_dir, mean=spec.mean, std=spec.std, channel_order=spec.channel_order,
                         align_corners=spec.align_corners, size=(size, size), threads=2, limit=limit)


def export_precision(fixture, path, options, data=None, limit=None):
    return export_onnx(fixture.model, path, checkpoint=fixture.checkpoint, height=SIZE, width=SIZE,
                       precision=options, evaluator=evaluator(fixture, data, limit=limit), verify=verifier(),
                       threads=2)


class Int8Artifacts(dict):
    """The INT8 flavours of the trained fixture, exported once per module, on demand."""

    def __init__(self, fixture, folder):
        super().__init__()
        self.fixture, self.folder = fixture, folder

    def __missing__(self, target):
        options = PrecisionOptions("int8", target, calib=self.fixture.dataset_dir, calib_count=8)
        self[target] = export_precision(self.fixture, self.folder / f"{target}.onnx", options)
        return self[target]


@pytest.fixture(scope="module")
def int8_artifacts(trained_fixture, tmp_path_factory):
    return Int8Artifacts(trained_fixture, tmp_path_factory.mktemp("int8"))


@pytest.mark.parametrize("target", ["cpu", "openvino", pytest.param("tensorrt", marks=pytest.mark.slow)])
def test_int8_keeps_miou_within_a_point(int8_artifacts, target):
    m = int8_artifacts[target].manifest
    accuracy = m.precision.details["accuracy"]
    assert accuracy["metric"] == "mIoU" and accuracy["images"] == 12
    assert accuracy["fp32"] > 60  # a trained model, not near-tied recipe weights
    assert accuracy["drop"] <= 1.0 and accuracy["agreement"] > 95
    assert m.validation["passed"] and m.validation["precision"] == "int8"
    # calibrated on the training split, so the validation split is a fair held-out set
    assert m.precision.details["calibration"]["source"] == "ade20k training split"


def test_validate_judges_int8_on_the_held_out_set(int8_artifacts, trained_fixture):
    result = int8_artifacts["cpu"]
    report = validate_artifact(result.path, checkpoint=trained_fixture.checkpoint, n=1, threads=2,
                               data=trained_fixture.dataset_dir)
    held = report.dataset
    assert held["images"] == 12 and held["passed"] and report.passed
    # (the fixture's own mIoU was measured at the test policy's size, 512x512; this artifact takes 256x256)
    assert abs(held["miou_delta"]) <= 1.0 and held["miou_reference"] > 60
    assert report.tolerance.precision == "int8"


def test_validate_runs_the_openvino_flavour_on_openvino(int8_artifacts, trained_fixture):
    pytest.importorskip("openvino", reason="OpenVINO is an optional extra (segdeploy[openvino])")
    result = int8_artifacts["openvino"]
    assert result.manifest.precision.flavour == "openvino"
    report = validate_artifact(result.path, checkpoint=trained_fixture.checkpoint, n=1, threads=2,
                               data=trained_fixture.dataset_dir, backend="openvino")
    assert report.passed and report.dataset["passed"] and abs(report.dataset["miou_delta"]) <= 1.0


def test_validate_refuses_the_calibration_images(int8_artifacts, trained_fixture, tmp_path):
    training = os.path.join(trained_fixture.dataset_dir, "images", "training")
    shutil.copytree(training, tmp_path / "photos")
    with pytest.raises(InputError, match="were used for calibration"):
        validate_artifact(int8_artifacts["cpu"].path, checkpoint=trained_fixture.checkpoint, n=1,
                          data=tmp_path / "photos")


def test_export_refuses_an_overlap_of_calibration_and_evaluation(trained_fixture, tmp_path):
    images = os.path.join(trained_fixture.dataset_dir, "images", "validation")
    options = PrecisionOptions("int8", calib=images, calib_count=4)
    with pytest.raises(InputError, match="the accuracy is measured on were used for calibration"):
        export_precision(trained_fixture, tmp_path / "x.onnx", options)
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.slow
def test_fp16_keeps_the_masks_of_the_validation_split(trained_fixture, tmp_path):
    result = export_precision(trained_fixture, tmp_path / "fp16.onnx",
                              PrecisionOptions("fp16", calib=trained_fixture.dataset_dir, calib_count=8))
    accuracy = result.manifest.precision.details["accuracy"]
    assert accuracy["agreement"] >= 99.5 and abs(accuracy["drop"]) <= 0.2
    assert "calibration images" in result.manifest.precision.details["ranges"]["source"]


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
