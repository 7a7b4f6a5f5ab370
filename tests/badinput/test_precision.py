"""FP16/INT8 artifacts and their inputs: calibration folders that are missing, empty, a file, or hold a damaged
image; a held-out set that overlaps the calibration; INT8 graphs whose quantization scales were damaged (with the
manifest's hash re-stamped, as a buggy tool would leave them). One line and exit 2 for what cannot be used, exit 1
for what runs but computes garbage, and never an artifact left behind."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from hostile import PHOTO, Tree, assert_unchanged, run_cli, write_with_manifest

EXPORT = ("export", "--model", "segnext_t", "--size", "256")


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> Path:
    """Four copies of the photo, flipped and shifted so their digests differ."""
    import cv2

    folder = tmp_path_factory.mktemp("calib")
    image = cv2.imread(str(PHOTO))
    for i in range(4):
        cv2.imwrite(str(folder / f"c{i}.jpg"), np.roll(image[:, ::-1] if i % 2 else image, 17 * i, axis=1))
    return folder


def _int8_artifact(target: str, calib: Path, tmp_path_factory) -> Path:
    """A segnext_t INT8 artifact of ``target``'s flavour (recipe weights: not verified, only made)."""
    from segdeploy.export.onnx import export_onnx
    from segdeploy.export.precision import PrecisionOptions

    folder = tmp_path_factory.mktemp(f"int8_{target}")
    options = PrecisionOptions("int8", target, calib=str(calib), calib_count=4, cache_dir="")
    return Path(export_onnx("segnext_t", folder / "int8.onnx", height=256, width=256, precision=options,
                            threads=2).path)


@pytest.fixture(scope="module")
def int8_tensorrt(calib, tmp_path_factory) -> Path:
    return _int8_artifact("tensorrt", calib, tmp_path_factory)


def _calib_folder(kind: str, root: Path, calib: Path) -> Path:
    path = root / "calib"
    if kind == "missing":
        return path
    if kind == "a file":
        path.write_bytes(b"not a folder")
        return path
    path.mkdir()
    if kind == "empty":
        return path
    if kind == "no images":
        (path / "notes.txt").write_text("hello")
        return path
    if kind == "a damaged image":
        shutil.copy(calib / "c0.jpg", path / "a.jpg")
        data = (calib / "c1.jpg").read_bytes()
        (path / "b.jpg").write_bytes(data[:len(data) // 2])
        return path
    raise KeyError(kind)


@pytest.mark.parametrize("kind", ["missing", "a file", "empty", "no images", "a damaged image"])
def test_unusable_calibration_folders(kind, workdir, calib, capfd):
    folder = _calib_folder(kind, workdir, calib)
    before = Tree.of(workdir)
    # --no-validate: recipe weights, so that the damaged image is what calibration refuses (a verified INT8 export
    # without --checkpoint is refused up front)
    run_cli(capfd, *EXPORT, "--precision", "int8", "--calib", folder, "--output", workdir / "out" / "x.onnx",
            "--no-validate").refused("cannot decode image" if kind == "a damaged image" else None)
    assert_unchanged(before, workdir)


def test_held_out_set_overlapping_the_calibration(workdir, calib, capfd):
    before = Tree.of(workdir)
    run_cli(capfd, *EXPORT, "--precision", "int8", "--calib", calib, "--eval-data", calib,
            "--output", workdir / "x.onnx").refused("calibration")
    assert_unchanged(before, workdir)


def test_validate_data_overlapping_the_calibration(int8_tensorrt, calib, capfd):
    run_cli(capfd, "validate", int8_tensorrt, "--n", "1", "--data", calib).refused("calibration")


def _damaged_scales(source: Path, target: Path, value: float) -> Path:
    """The artifact with every activation Q/DQ scale set to ``value``, the manifest's graph hash re-stamped."""
    import onnx
    from onnx import numpy_helper

    from segdeploy.artifact.onnx_file import graph_sha256

    model = onnx.load(str(source))
    initializers = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.input[1] in initializers:
            tensor = initializers[node.input[1]]
            scale = numpy_helper.to_array(tensor)
            if scale.ndim == 0:
                tensor.CopyFrom(numpy_helper.from_array(np.full_like(scale, value), tensor.name))
    document = json.loads(source.with_suffix(".json").read_text())
    document["graph_sha256"] = graph_sha256(model)
    return write_with_manifest(source, target, document, model=model)


def test_zero_scales_are_refused_by_lint_trt(int8_tensorrt, workdir, capfd):
    path = _damaged_scales(int8_tensorrt, workdir / "zero.onnx", 0.0)
    outcome = run_cli(capfd, "lint-trt", path, "--trt-version", "10.3")
    assert outcome.code == 1 and "qdq-scale-positive" in outcome.out, outcome.describe()  # an error finding
    assert "Traceback" not in outcome.err


def test_nan_scales_fail_validation(int8_tensorrt, workdir, capfd):
    path = _damaged_scales(int8_tensorrt, workdir / "nan.onnx", float("nan"))
    outcome = run_cli(capfd, "validate", path, "--n", "1")
    assert outcome.code == 1 and "FAILED" in outcome.out and "non-finite" in outcome.out, outcome.describe()
    assert "Traceback" not in outcome.err
    run_cli(capfd, "predict", "--artifact", path, "--source", PHOTO, "--output", workdir / "m.png",
            "--backend", "onnxruntime").refused("non-finite")
    run_cli(capfd, "predict", "--artifact", path, "--source", PHOTO, "--output", workdir / "m.png").refused()
    assert not (workdir / "m.png").exists()


@pytest.fixture(scope="module")
def int8_openvino(calib, tmp_path_factory) -> Path:
    return _int8_artifact("openvino", calib, tmp_path_factory)


def test_nan_scales_of_the_openvino_flavour_are_refused_by_openvino(int8_openvino, workdir, capfd):
    """OpenVINO will not compile NaN scales into its int8 kernels: one line, exit 2, on the runtime it is made for."""
    pytest.importorskip("openvino", reason="OpenVINO is an optional extra (segdeploy[openvino])")
    path = _damaged_scales(int8_openvino, workdir / "nan.onnx", float("nan"))
    run_cli(capfd, "validate", path, "--n", "1", "--backend", "openvino").refused("OpenVINO cannot compile")
    run_cli(capfd, "predict", "--artifact", path, "--source", PHOTO, "--output", workdir / "m.png",
            "--backend", "openvino").refused("OpenVINO cannot compile")
    assert not (workdir / "m.png").exists()
