"""ONNX export: every T variant static and dynamic, graph options, the manifest, determinism, and the error paths.

CI exports at 256x320 (the smallest size of the dynamic profile, to keep the default suite short); the slow sweep
(``make test-full``) exports every registered variant at 512x512 and validates dynamic graphs at two shapes.
Parametrisation reads segdeploy.models.list_models(), so families registered later are covered without edits.
"""
from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
import torch

from exports import CI_SIZE, export
from goldens import IMAGES
from segdeploy import models, preprocess
from segdeploy.artifact import manifest as mf
from segdeploy.artifact import manifest_schema, manifest_store
from segdeploy.artifact.onnx_file import graph_sha256
from segdeploy.artifact.reader import read_manifest
from segdeploy.cli import main
from segdeploy.errors import ArtifactError, CheckpointError
from segdeploy.export.onnx import export_onnx
from segdeploy.export.passes import STANDARD_DOMAINS
from segdeploy.export.passes.check_ops import check_standard_ops
from segdeploy.export.passes.simplify import simplify
from segdeploy.models.checkpoints import state_dict_sha256
from segdeploy.models.deploy import DeployGraph, LogitsToMask, NormalizeImage
from segdeploy.runtimes.onnxruntime import OnnxRuntimeRunner

T_VARIANTS = [name for name in models.list_models() if models.get_spec(name).variant == "T"]


@pytest.fixture(scope="module")
def segnext_static(tmp_path_factory):
    """segnext_t, static 256x320, default graph options (shared by the manifest and determinism tests)."""
    path = tmp_path_factory.mktemp("export") / "segnext_t.onnx"
    return export("segnext_t", path, height=CI_SIZE[0], width=CI_SIZE[1])


def assert_standard_graph(path: str) -> onnx.ModelProto:
    model = onnx.load(path)
    assert {node.domain for node in model.graph.node} <= set(STANDARD_DOMAINS)
    assert all(e.domain in STANDARD_DOMAINS for e in model.opset_import)
    assert max(e.version for e in model.opset_import) >= 17
    assert "RandomUniform" not in {n.op_type for n in model.graph.node}
    assert "RandomUniformLike" not in {n.op_type for n in model.graph.node}
    return model


@pytest.mark.parametrize("name", T_VARIANTS)
def test_t_variant_exports_static_and_dynamic(name, tmp_path):
    static = export(name, tmp_path / "static.onnx", height=CI_SIZE[0], width=CI_SIZE[1])
    assert static.manifest.validation["passed"] and static.manifest.validation["mask_agreement"] >= 0.999
    assert_standard_graph(static.path)
    assert static.manifest.export.nodes <= static.manifest.export.nodes_traced
    # what the manifest promises is what the graph gives (output stride from the spec: 8, or 4 for OffSeg)
    assert list(OnnxRuntimeRunner(static.path).outputs()[0].shape) == static.manifest.output.shape

    dynamic = export(name, tmp_path / "dynamic.onnx", height=CI_SIZE[0], width=CI_SIZE[1], dynamic=True)
    summary = dynamic.manifest.validation
    # verified at the traced shape and at another batch and aspect ratio
    assert summary["passed"] and summary["shapes"] == [[1, 3, 256, 320], [2, 3, 384, 640]]
    assert_standard_graph(dynamic.path)
    axes = {a.axis: (a.name, a.min, a.opt, a.max) for a in dynamic.manifest.input.dynamic_axes}
    assert axes == {0: ("batch", 1, 1, 4), 2: ("height", 256, 256, 1024), 3: ("width", 256, 320, 1024)}
    stride = models.get_spec(name).output_stride
    assert dynamic.manifest.output.shape[2:] == [f"height/{stride}", f"width/{stride}"]
    assert dynamic.manifest.output.axis(2).max == 1024 // stride
    runner = OnnxRuntimeRunner(dynamic.path, threads=2)
    assert runner.inputs()[0].shape == ("batch", 3, "height", "width") and runner.manifest == dynamic.manifest


@pytest.mark.slow
@pytest.mark.parametrize("name", models.list_models())
def test_every_variant_exports_at_512_static_and_dynamic(name, tmp_path):
    from segdeploy.evaluation.validate import validate_artifact

    static = export(name, tmp_path / "static.onnx")
    assert static.manifest.validation["passed"]
    assert_standard_graph(static.path)
    dynamic = export(name, tmp_path / "dynamic.onnx", dynamic=True)
    assert dynamic.manifest.validation["passed"]
    assert_standard_graph(dynamic.path)
    # the artifact path as a user runs it: manifest -> reference rebuilt -> one input at each default shape
    report = validate_artifact(dynamic.path, n=2)
    assert report.passed, report.failure_line()
    assert sorted({tuple(c["input_shape"]) for c in report.cases}) == [(1, 3, 512, 512), (2, 3, 384, 640)]


def test_mask_output_and_uint8_preprocessing_in_the_graph(tmp_path, capsys):
    path = tmp_path / "end2end.onnx"
    code = main(["export", "--model", "segnext_t", "--size", f"{CI_SIZE[0]}x{CI_SIZE[1]}", "--outputs", "mask",
                 "--preprocess", "--output", str(path), "--threads", "2"])
    out = capsys.readouterr().out
    assert code == 0 and "passed on 1 input " in out and "label agreement" in out
    manifest = read_manifest(path)
    assert manifest.validation["passed"] and manifest.output.dtype == "uint8" and manifest.output.kind == "mask"
    runner = OnnxRuntimeRunner(str(path), threads=2)
    assert runner.inputs()[0].dtype == "uint8" and runner.inputs()[0].shape == (1, *CI_SIZE, 3)
    assert runner.outputs()[0].dtype == "uint8" and runner.outputs()[0].shape == (1, *CI_SIZE)
    graph = onnx.load(str(path)).graph
    assert {"ArgMax", "Resize"} <= {n.op_type for n in graph.node}
    assert manifest.input.layout == "NHWC" and manifest.preprocessing.in_graph

    # end to end on a real image against the NumPy preprocessing + PyTorch model + NumPy post-processing
    image = preprocess.read_image(IMAGES / "grace_hopper.jpg")
    import cv2

    resized = cv2.resize(image, (CI_SIZE[1], CI_SIZE[0]), interpolation=cv2.INTER_LINEAR)
    mask = runner.infer({"image": resized[None]})["mask"][0]
    model = models.create("segnext_t", nmf_bases="fixed")
    models.load_recipe_weights(model)
    with torch.inference_mode():
        logits = model(torch.from_numpy(preprocess.prepare(image, model.spec, CI_SIZE))).numpy()
    expected = preprocess.logits_to_mask(logits, CI_SIZE)[0]
    assert (mask == expected).mean() >= 0.999


def test_graph_wrappers_use_op_forms_tensorrt_accepts(tmp_path):
    """TensorRT has no UINT8 Transpose and casts to uint8 only from float32/float16 (tensorrt-facts)."""
    result = export("segnext_t", tmp_path / "m.onnx", height=256, width=256, outputs="mask", preprocess=True,
                    verify=False)
    graph = onnx.load(result.path).graph
    types = {v.name: v.type.tensor_type.elem_type for v in onnx.shape_inference.infer_shapes(
        onnx.load(result.path)).graph.value_info}
    types.update({v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.output)})
    uint8 = onnx.TensorProto.UINT8
    for node in graph.node:
        if node.op_type == "Transpose":
            assert types.get(node.input[0]) != uint8, node.name
        if node.op_type == "Cast" and dict((a.name, a.i) for a in node.attribute)["to"] == uint8:
            assert types.get(node.input[0]) in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16), node.name


def test_graph_preprocessing_matches_numpy_preprocessing():
    spec = models.get_spec("segnext_t")
    image = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    expected = preprocess.prepare(image, spec, (64, 96))
    got = NormalizeImage(spec.mean, spec.std, spec.channel_order)(torch.from_numpy(image[None])).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_masks_are_uint8_up_to_255_classes_then_int64():
    logits = torch.randn(1, 300, 4, 4)
    assert LogitsToMask(255)(logits[:, :255], (8, 8)).dtype == torch.uint8
    assert preprocess.logits_to_mask(logits[:, :255].numpy(), (8, 8)).dtype == np.uint8
    wide = LogitsToMask(300)(logits, (8, 8))
    assert wide.dtype == torch.int64 and wide.shape == (1, 8, 8) and int(wide.max()) < 300
    assert preprocess.logits_to_mask(logits[:, :256].numpy(), (8, 8)).dtype == np.int32  # the same threshold


def test_manifest_is_complete_and_the_same_in_sidecar_and_graph(segnext_static):
    with open(segnext_static.sidecar_path, encoding="utf-8") as f:
        sidecar = json.load(f)
    model = onnx.load(segnext_static.path)
    embedded = manifest_store.embedded(model)
    manifest_schema.check_document(sidecar)  # schema-valid
    assert mf.Manifest.from_dict(sidecar) == embedded == segnext_static.manifest
    m = embedded
    assert m.model.name == "segnext_t" and m.num_classes == 150
    assert len(m.model.class_names) == len(m.model.palette) == 150
    assert (m.input.name, m.input.shape, m.input.dtype, m.input.layout, m.input.channel_order) == (
        "input", [1, 3, 256, 320], "float32", "NCHW", "RGB")
    pre = m.preprocessing
    assert pre.resize.scale == [2048, 512] and pre.resize.round_to == 32 and pre.size_multiple == 32
    assert pre.mean == [123.675, 116.28, 103.53] and pre.channel_order == "RGB"
    assert m.export.model_options["nmf_bases"] == "fixed" and m.export.opset == 20
    assert m.graph_sha256 == graph_sha256(model)
    reference = models.create("segnext_t", nmf_bases="fixed")
    models.load_recipe_weights(reference)
    assert m.weights.sha256 == state_dict_sha256(reference)
    assert m.weights.source == "recipe" and m.weights.seed == 0
    assert m.precision.mode == "fp32" and m.precision.flavour is None
    assert m.tool_versions["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert m.validation["passed"] and m.validation["max_abs_err"] < 1e-4
    passes = {p["name"]: p for p in m.export.passes}
    assert passes["simplify"]["nodes_before"] == m.export.nodes_traced
    # the layer scales after convolutions are folded into them once the graph is simplified
    assert passes["fold_scales"]["nodes_before"] == passes["simplify"]["nodes_after"]
    assert passes["fold_scales"]["nodes_after"] == m.export.nodes == len(model.graph.node) < m.export.nodes_traced


def test_same_inputs_give_a_byte_identical_file(segnext_static, tmp_path):
    again = export("segnext_t", tmp_path / "again.onnx", height=CI_SIZE[0], width=CI_SIZE[1])
    with open(segnext_static.path, "rb") as a, open(again.path, "rb") as b:
        assert a.read() == b.read()


def test_passes_work_alone_on_any_onnx_model(segnext_static):
    model = onnx.load(segnext_static.path)
    same, report = check_standard_ops(model)
    assert report.nodes_before == report.nodes_after == len(model.graph.node)
    simplified, report = simplify(model, tools=("onnxslim",))
    assert report.tool == "onnxslim" and report.nodes_after == len(simplified.graph.node)
    bad = onnx.ModelProto()
    bad.CopyFrom(model)
    bad.graph.node[0].domain = "com.microsoft"
    with pytest.raises(ArtifactError, match="non-standard ops"):
        check_standard_ops(bad)
    with pytest.raises(ArtifactError, match="could not simplify"):
        simplify(model, tools=("no_such_tool",))


def test_simplifier_falls_back_to_onnxsim(segnext_static, monkeypatch):
    pytest.importorskip("onnxsim", reason="onnxsim is the optional fallback simplifier")
    from segdeploy.export.passes import simplify as simplify_module

    def broken(model):
        raise RuntimeError("simulated onnxslim crash")

    monkeypatch.setitem(simplify_module._SIMPLIFIERS, "onnxslim", broken)
    result, report = simplify_module.simplify(onnx.load(segnext_static.path))
    assert report.tool == "onnxsim" and "simulated onnxslim crash" in report.notes[0]


# ----------------------------------------------------------------------------------------------------------------
# Errors: one line, exit 2, nothing written


def run_export(capsys, *args):
    code = main(["export", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_unknown_model_and_bad_sizes(capsys, tmp_path):
    out = str(tmp_path / "sub" / "x.onnx")
    code, _, err = run_export(capsys, "--model", "segnext_xxl", "--output", out)
    assert code == 2 and "unknown model 'segnext_xxl'" in err and err.count("\n") == 1
    code, _, err = run_export(capsys, "--model", "segnext_t", "--size", "500x512", "--output", out)
    assert code == 2 and "multiples of 32" in err
    code, _, err = run_export(capsys, "--model", "segnext_t", "--dynamic", "--batch", "8", "--output", out)
    assert code == 2 and "profile" in err
    code, _, err = run_export(capsys, "--model", "segnext_t", "--opset", "13", "--output", out)
    assert code == 2 and "--opset must be between 17" in err
    code, _, err = run_export(capsys, "--model", "segnext_t", "--opset", "99", "--output", out)
    assert code == 2 and "--opset must be between 17" in err and err.count("\n") == 1
    code, _, err = run_export(capsys, "--model", "segnext_t", "--size", "4096x8192", "--output", out)
    assert code == 2 and "too large" in err
    assert os.listdir(tmp_path) == []  # not even the parent folder


def test_trt_format_refuses_bad_engine_options_before_exporting(capsys, tmp_path):
    from segdeploy.export.tensorrt import planned_kind

    code, _, err = run_export(capsys, "--model", "segnext_t", "--fmt", "trt", "--output", str(tmp_path / "x.onnx"))
    # an engine where a TensorRT builder is present, else a bundle folder: a .onnx name is neither
    expected = "must end in .engine or .plan" if planned_kind() == "engine" else "give --output a folder name"
    assert code == 2 and expected in err
    code, _, err = run_export(capsys, "--model", "segnext_t", "--fmt", "trt", "--gpu-fallback")
    assert code == 2 and "DLA builds only" in err
    assert os.listdir(tmp_path) == []


def test_existing_file_is_not_overwritten_without_force(capsys, tmp_path):
    target = tmp_path / "taken.onnx"
    target.write_bytes(b"keep me")
    code, _, err = run_export(capsys, "--model", "segnext_t", "--output", str(target))
    assert code == 2 and "taken.onnx exists and is another export" in err and "pass --force" in err
    assert target.read_bytes() == b"keep me" and sorted(os.listdir(tmp_path)) == ["taken.onnx"]


def test_a_failing_step_leaves_no_partial_artifact(tmp_path, monkeypatch):
    from segdeploy.export import trace as trace_module

    def failing_simplify(model, tools):
        raise ArtifactError("simulated simplifier failure")

    monkeypatch.setattr(trace_module, "simplify_pass", failing_simplify)
    with pytest.raises(ArtifactError, match="simulated"):
        export_onnx("segnext_t", tmp_path / "a" / "a.onnx", height=256, width=256)
    assert os.listdir(tmp_path) == []


def test_a_failed_sidecar_write_removes_the_graph(tmp_path, monkeypatch):
    import segdeploy.files.staging

    real = segdeploy.files.staging.Pending.write

    def failing_write(self, data):
        if self.path.endswith(".json"):
            raise OSError(28, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(segdeploy.files.staging.Pending, "write", failing_write)
    with pytest.raises(ArtifactError, match="no space left"):
        export_onnx("segnext_t", tmp_path / "a.onnx", height=256, width=256, simplify=False)
    assert os.listdir(tmp_path) == []


def test_non_finite_weights_are_refused(tmp_path):
    model = models.create("segnext_t", nmf_bases="fixed")
    models.load_recipe_weights(model)
    state = model.state_dict()
    state["decode_head.conv_seg.weight"][0, 0] = float("nan")
    checkpoint = tmp_path / "nan.pth"
    torch.save(state, checkpoint)
    with pytest.raises(CheckpointError, match="decode_head.conv_seg.weight holds 1 non-finite"):
        export_onnx("segnext_t", tmp_path / "a.onnx", checkpoint=checkpoint, height=256, width=256)
    assert sorted(os.listdir(tmp_path)) == ["nan.pth"]


def test_deploy_graph_rejects_unknown_output_kinds():
    model = models.create("segnext_t", nmf_bases="fixed")
    with pytest.raises(Exception, match="--outputs must be one of"):
        DeployGraph(model, outputs="probabilities")
