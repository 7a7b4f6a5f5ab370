"""export --precision: the FP16 and INT8 artifacts, their manifests (precision, flavour, islands, quantized layers,
calibration provenance), the default names, what TensorRT's side makes of them, and every refusal as one line before
the work starts."""
from __future__ import annotations

import os

import cv2
import numpy as np
import onnx
import pytest

from exports import export
from hostile import answer_lines
from segdeploy.artifact.reader import read_manifest
from segdeploy.cli import main
from segdeploy.errors import InputError
from segdeploy.export.onnx import default_output_path, export_onnx
from segdeploy.export.precision import PrecisionOptions
from segdeploy.export.tensorrt.lint import errors, lint_file
from segdeploy.export.tensorrt.plan import BuildOptions, make_plan

SIZE = 256


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory):
    """A few natural-looking images (smoothed noise, so activations are not white noise)."""
    folder = tmp_path_factory.mktemp("calib")
    for i in range(6):
        noise = np.random.default_rng(i).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        image = cv2.resize(cv2.GaussianBlur(noise, (9, 9), 3), (320, 256), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(folder / f"img_{i}.jpg"), image)
    return folder


def test_fp16_export_is_verified_and_describes_its_islands(tmp_path):
    from precision_graphs import types_of

    result = export("cgrseg_t", tmp_path / "fp16.onnx", height=SIZE, width=SIZE,
                    precision=PrecisionOptions("fp16"))
    m = result.manifest
    assert m.precision.mode == "fp16" and m.precision.flavour is None and m.precision.io_dtype == "float32"
    assert m.validation["passed"] and m.validation["precision"] == "fp16"
    assert m.validation["mask_agreement"] >= 0.995
    islands = m.precision.details["float16"]["islands"]
    assert any("Softmax" in isl["reason"] for isl in islands)
    assert "seeded inputs" in m.precision.details["ranges"]["source"]
    assert read_manifest(result.path) == m  # embedded, sidecar and returned manifests agree (schema-checked)
    model = onnx.load(result.path)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert sum(1 for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16) > 100
    assert "float16" in [p["name"] for p in m.export.passes]
    types = types_of(model)
    for node in model.graph.node:  # normalisations and Softmax compute in float32, every Conv in float16
        if node.op_type in ("Softmax", "LayerNormalization", "ReduceMean"):
            assert types[node.input[0]] == onnx.TensorProto.FLOAT, node.name
        if node.op_type == "Conv":
            assert types[node.input[1]] == onnx.TensorProto.FLOAT16, node.name


def test_int8_exports_record_flavour_and_calibration(tmp_path, calib_dir):
    options = PrecisionOptions("int8", "tensorrt", calib=str(calib_dir), calib_count=4, calib_method="percentile")
    result = export_onnx("cgrseg_t", tmp_path / "trt.onnx", height=SIZE, width=SIZE, precision=options,
                         threads=2)  # recipe weights: not verified (their near-tied logits flip under INT8)
    p = result.manifest.precision
    assert (p.mode, p.flavour) == ("int8", "tensorrt")
    calibration = p.details["calibration"]
    assert calibration["count"] == 4 and calibration["method"] == "percentile" and calibration["percentile"] == 99.99
    assert len(calibration["image_digests"]) == 4 and calibration["source"] == "images"
    assert len(p.details["quantization"]["quantized"]) > 100
    assert errors(lint_file(result.path, "10.3")) == [] and errors(lint_file(result.path, "11")) == []
    assert make_plan(result.manifest, BuildOptions(precision="int8")).precision == "int8"


@pytest.mark.slow
def test_one_calibration_serves_both_flavours(tmp_path, calib_dir):
    options = PrecisionOptions("int8", "tensorrt", calib=str(calib_dir), calib_count=4)
    trt = export_onnx("cgrseg_t", tmp_path / "trt.onnx", height=SIZE, width=SIZE, precision=options, threads=2)
    p = trt.manifest.precision
    cpu = export_onnx("cgrseg_t", tmp_path / "cpu.onnx", height=SIZE, width=SIZE, threads=2,
                      precision=PrecisionOptions("int8", calib=str(calib_dir), calib_count=4))
    assert cpu.manifest.precision.flavour == "cpu"  # the default flavour of an ONNX artifact
    # one calibration run serves both flavours: the same images, the same statistics (cached)
    assert cpu.manifest.precision.details["ranges"] == p.details["ranges"]
    with pytest.raises(Exception, match="cpu"):  # TensorRT refuses the asymmetric flavour
        make_plan(cpu.manifest, BuildOptions())


def test_openvino_flavour_is_float32_outside_its_qdq_and_not_for_tensorrt(tmp_path, calib_dir):
    from precision_graphs import types_of
    from segdeploy.export.passes.qdq_tensorrt import placement_problems

    options = PrecisionOptions("int8", "openvino", calib=str(calib_dir), calib_count=4)
    result = export_onnx("cgrseg_t", tmp_path / "ov.onnx", height=SIZE, width=SIZE, precision=options, opset=17,
                         threads=2)  # recipe weights: not verified; opset 17: float32 Q/DQ needs no opset 19
    p = result.manifest.precision
    assert (p.mode, p.flavour) == ("int8", "openvino")
    assert len(p.details["quantization"]["quantized"]) > 100 and p.details["quantization"]["residual_adds"]
    assert "qdq_openvino" in [step["name"] for step in result.manifest.export.passes]
    model = onnx.load(result.path)
    assert onnx.TensorProto.FLOAT16 not in types_of(model).values()
    assert placement_problems(model) == []  # symmetric, zero points 0, Q/DQ only where a layer takes it
    assert read_manifest(result.path) == result.manifest
    with pytest.raises(Exception, match="'openvino' flavour"):
        make_plan(result.manifest, BuildOptions())


def test_default_names_say_the_precision():
    assert default_output_path("cgrseg_t", 512, 512, precision="fp16").endswith("cgrseg_t_512x512_fp16.onnx")
    assert default_output_path("cgrseg_t", 512, 512, precision="int8_cpu").endswith("_512x512_int8_cpu.onnx")


@pytest.mark.parametrize("options, message", [
    (PrecisionOptions("int8"), "needs calibration images"),
    (PrecisionOptions("fp16", target="cpu"), "--target chooses the INT8 flavour"),
    (PrecisionOptions("fp32", calib="x"), "go with --precision fp16 or int8"),
    (PrecisionOptions("int8", calib="x", calib_method="mse"), "--calib-method"),
    (PrecisionOptions("int8", calib="x", max_drop=-1), "--max-drop must be 0-100 points"),
    (PrecisionOptions("int8", calib="x", max_drop=float("nan")), "--max-drop must be 0-100 points"),
    (PrecisionOptions("fp32", io_dtype="float16"), "--io-dtype float16 needs"),
])
def test_bad_precision_options_are_refused_before_tracing(options, message, tmp_path):
    with pytest.raises(InputError, match=message):
        export_onnx("cgrseg_t", tmp_path / "x.onnx", height=SIZE, width=SIZE, precision=options)
    assert not os.listdir(tmp_path)


def test_tensorrt_flavour_needs_opset_19(tmp_path, calib_dir):
    with pytest.raises(InputError, match="opset 19 or newer"):
        export_onnx("cgrseg_t", tmp_path / "x.onnx", height=SIZE, width=SIZE, opset=17, threads=2,
                    precision=PrecisionOptions("int8", "tensorrt", calib=str(calib_dir), calib_count=2))
    assert not os.listdir(tmp_path)


def test_cli_refusals_are_one_line(tmp_path, capsys, calib_dir):
    cases = [
        (["--precision", "int8"], "needs calibration images"),
        (["--precision", "int8", "--calib", str(tmp_path / "none")], "--calib must be a folder"),
        (["--precision", "int8", "--calib", str(calib_dir), "--max-drop", "1"], "add --eval-data DIR"),
        (["--fmt", "trt", "--precision", "int8", "--target", "cpu", "--calib", str(calib_dir), "--output",
          str(tmp_path / "x.engine")], "TensorRT builds the tensorrt INT8 flavour"),
        (["--fmt", "trt", "--precision", "int8", "--target", "openvino", "--calib", str(calib_dir), "--output",
          str(tmp_path / "x.engine")], "--target openvino is for OpenVINO"),
        (["--precision", "int8", "--target", "openvino", "--io-dtype", "float16", "--calib", str(calib_dir)],
         "openvino flavour keeps float32 I/O"),
        (["--precision", "fp16", "--target", "tensorrt"], "--target chooses the INT8 flavour"),
    ]
    for extra, message in cases:
        code = main(["export", "--model", "cgrseg_t", "--size", "256", "--output", str(tmp_path / "x.onnx"), *extra])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(answer_lines(err)) == 1, (extra, err)
    assert not (tmp_path / "x.onnx").exists()


def test_family_float_modules_stay_float_in_their_flavour_only(tmp_path, calib_dir):
    """offseg_t's FreqFusion stays float32 in the cpu flavour (its uint8 data movement ran slower than float on ONNX
    Runtime), and so do its head's written-out class softmax and LayerNorm (in every INT8 flavour): none of their layers
    is quantized, the manifest names each module once with why, and no other flavour takes FreqFusion's entry."""
    from segdeploy import models
    from segdeploy.export.module_paths import in_module
    from segdeploy.export.passes.qdq_cpu import quantized_layers
    from segdeploy.export.precision import family_float_nodes

    options = PrecisionOptions("int8", "cpu", calib=str(calib_dir), calib_count=2)
    result = export_onnx("offseg_t", tmp_path / "offseg.onnx", height=64, width=64, precision=options, threads=2)
    model = onnx.load(result.path)
    details = result.manifest.precision.details
    inside = [n.name for n in model.graph.node if in_module(n.name, "decode_head.freqfusions")]
    assert inside and not any(in_module(n, "decode_head.freqfusions") for n in quantized_layers(model))
    assert not any(n.op_type.startswith(("Quantize", "Dequantize")) for n in model.graph.node
                   if in_module(n.name, "decode_head.freqfusions"))
    assert any(in_module(n, "backbone") for n in quantized_layers(model))  # the rest is still INT8
    fusion, softmax, norm = details["float_modules"]
    assert fusion["module"] == "decode_head.freqfusions" and fusion["nodes"] > 100 and "slower" in fusion["reason"]
    # the offset-learning head's class softmax and LayerNorm, written out channels-first, stay float as well
    assert [softmax["module"], norm["module"]] == ["decode_head.offset_learning.class_softmax",
                                                   "decode_head.offset_learning.class_norm"]
    assert softmax["nodes"] >= 4 and norm["nodes"] >= 6 and "8 bits" in norm["reason"]
    assert not any(in_module(n.name, "decode_head.offset_learning.class_norm") for n in model.graph.node
                   if n.op_type.startswith(("Quantize", "Dequantize")))
    assert not any(in_module(e["node"], "decode_head.freqfusions") for e in details["quantization"]["not_quantized"])
    spec = models.get_spec("offseg_t")
    # the other INT8 flavours keep the head's written-out softmax and LayerNorm float, and quantize FreqFusion
    assert set(family_float_nodes(model, spec.int8_float_modules, "openvino").values()) == {
        "decode_head.offset_learning.class_softmax", "decode_head.offset_learning.class_norm"}
    assert family_float_nodes(model, models.get_spec("cgrseg_t").int8_float_modules, "cpu") == {}
