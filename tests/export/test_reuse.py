"""Exports are content-addressed: the same model, weights, size and options reuse the artifact already written
(checked against its manifest and graph hash) instead of asking for --force, so `--fmt trt` and `--fmt triton` after
an ONNX export build on it; another export at the same path is still refused without --force, and --force exports
again. --no-validate is recorded in the manifest, warned about at export and by every reader."""
from __future__ import annotations

import dataclasses
import json
import os

import onnx

from goldens import IMAGES
from hostile import answer_lines
from manifests import sample_manifest
from segdeploy import __version__
from segdeploy.cli import main
from segdeploy.export.identity import ExportIdentity, difference

SIZE = "256x256"
MODEL = "segnext_t"


def test_a_request_is_read_back_from_the_manifest_and_every_field_counts():
    manifest = sample_manifest()
    manifest.tool_versions["segdeploy"] = __version__
    found = ExportIdentity.of_manifest(manifest)
    assert (found.model, found.batch, found.height, found.width, found.dynamic, found.opset, found.precision) == \
        ("cgrseg_t", 1, 512, 512, False, 20, "fp32")
    assert difference(found, found) is None
    changes = {"model": "segnext_t", "weights_sha256": "1" * 64, "batch": 2, "height": 256, "width": 1024,
               "dynamic": True, "opset": 19, "simplify": False, "outputs": "mask", "preprocess": True,
               "precision": "fp16", "flavour": "cpu", "io_dtype": "float16", "calibration": ("a" * 64, "minmax", None),
               "accuracy": ("b" * 64, 1.0), "segdeploy": "0.1.0"}
    for name, value in changes.items():
        reason = difference(found, dataclasses.replace(found, **{name: value}))
        assert reason, name
    assert "other weights" in difference(found, dataclasses.replace(found, weights_sha256="1" * 64))
    assert difference(found, dataclasses.replace(found, segdeploy="9.9")) == \
        f"it was made by segdeploy {__version__} (this is 9.9)"
    # a verified artifact serves a request without verification; an unverified one does not serve one with it
    assert difference(found, dataclasses.replace(found, verified=False)) is None
    unverified = dataclasses.replace(found, verified=False)
    assert "without verification" in difference(unverified, found)
    # an accuracy measured without a budget did not change the graph; one with a budget did
    measured = dataclasses.replace(found, accuracy=("b" * 64, None))
    assert difference(measured, found) is None
    assert difference(dataclasses.replace(found, accuracy=("b" * 64, 1.0)), found)


def test_calibration_is_read_from_where_each_precision_records_it():
    fp16 = sample_manifest(precision="fp16")
    fp16.precision.details = {"ranges": {"source": "32 calibration images", "images_sha256": "c" * 64}}
    assert ExportIdentity.of_manifest(fp16).calibration == ("c" * 64, None, None)
    fp16.precision.details = {"ranges": {"source": "4 seeded inputs"}}
    assert ExportIdentity.of_manifest(fp16).calibration is None
    int8 = sample_manifest(precision="int8", flavour="cpu")
    int8.precision.details = {"calibration": {"images_sha256": "c" * 64, "method": "percentile",
                                              "percentile": 99.9, "count": 32},
                              "accuracy": {"images_sha256": "d" * 64, "budget": 1.0, "metric": "mIoU"}}
    found = ExportIdentity.of_manifest(int8)
    assert (found.calibration, found.accuracy, found.flavour) == (("c" * 64, "percentile", 99.9), ("d" * 64, 1.0),
                                                                   "cpu")


def export(capsys, tmp_path, *args):
    code = main(["export", "--model", MODEL, "--size", SIZE, "--threads", "2", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_export_once_then_reuse_build_and_package(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default artifacts/ folder
    onnx_path = tmp_path / "artifacts" / f"{MODEL}_{SIZE}.onnx"
    code, out, err = export(capsys, tmp_path)
    assert code == 0 and "reused" not in out, err
    stamp, data = onnx_path.stat().st_mtime_ns, onnx_path.read_bytes()

    # the same export again: reused, untouched, exit 0 (it was 'exists; pass --force' before)
    code, out, err = export(capsys, tmp_path)
    assert code == 0, err
    assert f"reused artifacts/{MODEL}_{SIZE}.onnx" in out
    assert onnx_path.stat().st_mtime_ns == stamp and onnx_path.read_bytes() == data

    # the natural next steps build on it: a TensorRT bundle (no TensorRT here), a Triton repository; twice each
    for fmt, made in (("trt", tmp_path / "artifacts" / f"{MODEL}_{SIZE}_trt_bundle"),
                      ("triton", tmp_path / "artifacts" / "triton" / MODEL)):
        code, out, err = export(capsys, tmp_path, "--fmt", fmt)
        assert code == 0 and "reused artifacts/" in out and made.is_dir(), err
        code, out, err = export(capsys, tmp_path, "--fmt", fmt)
        assert code == 0 and f"reused {made}" in out, err
    assert onnx_path.stat().st_mtime_ns == stamp
    config = (tmp_path / "artifacts" / "triton" / MODEL / "config.pbtxt").read_text()
    assert "kind: KIND_AUTO" in config  # not KIND_GPU on a machine that has none
    code, out, err = export(capsys, tmp_path, "--fmt", "triton", "--instance-kind", "cpu")
    assert code == 2 and "exists; pass --force" in err  # another config: refused, not replaced

    # --from-onnx builds on a given artifact without --model
    assert main(["export", "--fmt", "trt", "--from-onnx", str(onnx_path)]) == 0
    out, err = capsys.readouterr()
    assert f"building on {onnx_path}: {MODEL}" in out and "reused" in out
    assert main(["export", "--from-onnx", str(onnx_path)]) == 2
    assert "give --fmt trt or --fmt triton" in capsys.readouterr().err
    assert main(["export", "--fmt", "trt", "--model", "cgrseg_t", "--from-onnx", str(onnx_path)]) == 2
    assert "not allowed with argument" in capsys.readouterr().err  # the artifact names its model

    # another export at the same path is still refused without --force, saying how it differs
    code, out, err = export(capsys, tmp_path, "--opset", "19")
    assert code == 2 and "exists and is another export (its opset is 20); pass --force" in err
    assert len(answer_lines(err)) == 1 and onnx_path.stat().st_mtime_ns == stamp

    # an artifact edited since export is not reused
    model = onnx.load(onnx_path)
    model.graph.node[0].name = "edited"
    onnx.save(model, onnx_path)
    code, out, err = export(capsys, tmp_path)
    assert code == 2 and "does not hash to what its manifest records" in err

    # --force exports again
    code, out, err = export(capsys, tmp_path, "--force")
    assert code == 0 and "reused" not in out and onnx_path.read_bytes() == data, err


def test_no_validate_is_recorded_warned_and_not_taken_for_a_verified_export(tmp_path, capsys):
    path = tmp_path / "unverified.onnx"
    code, out, err = export(capsys, tmp_path, "--output", str(path), "--no-validate")
    assert code == 0, err
    assert f"segdeploy export: warning: {path} was not compared with PyTorch (--no-validate)" in err
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["validation"] == {"skipped": True, "reason": "exported with --no-validate"}
    assert "skipped (exported with --no-validate)" in out

    # every reader warns: info, validate, predict...
    assert main(["info", str(path)]) == 0
    err = capsys.readouterr().err
    assert err.count("was never compared with PyTorch (exported with --no-validate)") == 1
    assert err.startswith("segdeploy info: warning: ")

    # the same request without verification reuses it (and warns); a request to verify does not take it
    code, out, err = export(capsys, tmp_path, "--output", str(path), "--no-validate")
    assert code == 0 and "reused" in out and "never compared with PyTorch" in err
    code, out, err = export(capsys, tmp_path, "--output", str(path))
    assert code == 2 and "exported without verification (--no-validate) and this export verifies" in err
    assert len(answer_lines(err)) == 1  # refused, not used: no warning about using it


def test_int8_without_trained_weights_is_refused_before_calibration(tmp_path, capsys, monkeypatch):
    from segdeploy.export import precision

    def calibrating(*args, **kwargs):
        raise AssertionError("calibration started")

    monkeypatch.setattr(precision, "calibrate", calibrating)
    code, out, err = export(capsys, tmp_path, "--precision", "int8", "--calib", str(IMAGES), "--output",
                            str(tmp_path / "q.onnx"))
    assert code == 2 and "--precision int8 needs trained weights (--checkpoint)" in err
    assert "segdeploy fixtures --quick" in err and len(answer_lines(err)) == 1
    assert os.listdir(tmp_path) == []
    # the flags are checked first: a calibration folder that is not one is that error
    code, out, err = export(capsys, tmp_path, "--precision", "int8", "--calib", str(tmp_path / "none"))
    assert code == 2 and "--calib must be a folder" in err


def test_a_graph_out_of_tolerance_exits_1(tmp_path, capsys, monkeypatch):
    """The README: out of tolerance is exit 1, bad input 2, for export as for validate."""
    from segdeploy.evaluation import validate

    real = validate.verify_graph

    def strict(graph, proto, shapes, **options):
        report = real(graph, proto, shapes, **options)
        for output in report.outputs.values():
            output.failed_cases, output.failed_by = output.cases, {"max_abs": output.cases}
            output.worst_bound_ratio = 1.0
        return report

    monkeypatch.setattr(validate, "verify_graph", strict)
    code, out, err = export(capsys, tmp_path, "--output", str(tmp_path / "x.onnx"))
    assert code == 1, err
    line = answer_lines(err)[0]
    assert "does not match PyTorch within the fp32 tolerance" in line and "nothing was written" in line
    assert "max abs error / max(1, max|ref|), worst input 1, needs <= 0.0001 (failed on" in line
    assert not os.path.exists(tmp_path / "x.onnx")
