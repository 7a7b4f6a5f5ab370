"""ONNX export: every T variant static and dynamic, graph options, metadata, determinism, and the error paths.

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

from goldens import IMAGES
from segdeploy import models, preprocess
from segdeploy.cli import main
from segdeploy.errors import ArtifactError
from segdeploy.export import metadata as meta
from segdeploy.export.graph import DeployGraph, LogitsToMask, NormalizeImage
from segdeploy.export.onnx import export_onnx
from segdeploy.export.simplify import STANDARD_DOMAINS, check_standard_ops, simplify
from segdeploy.runtimes.onnxruntime import OnnxRuntimeRunner

T_VARIANTS = [name for name in models.list_models() if models.get_spec(name).variant == "T"]
CI_SIZE = (256, 320)


@pytest.fixture(scope="module")
def segnext_static(tmp_path_factory):
    """segnext_t, static 256x320, default graph options (shared by the metadata and determinism tests)."""
    path = tmp_path_factory.mktemp("export") / "segnext_t.onnx"
    return export_onnx("segnext_t", path, height=CI_SIZE[0], width=CI_SIZE[1], threads=2)


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
    static = export_onnx(name, tmp_path / "static.onnx", height=CI_SIZE[0], width=CI_SIZE[1], threads=2)
    assert static.metadata["validation"]["passed"] and static.metadata["validation"]["mask_agreement"] >= 0.999
    assert_standard_graph(static.path)
    assert static.metadata["graph"]["nodes"] <= static.metadata["graph"]["nodes_traced"]
    # what the metadata promises is what the graph gives (output stride from the spec: 8, or 4 for OffSeg)
    assert list(OnnxRuntimeRunner(static.path).outputs()[0].shape) == static.metadata["output"]["shape"]

    dynamic = export_onnx(name, tmp_path / "dynamic.onnx", height=CI_SIZE[0], width=CI_SIZE[1], dynamic=True,
                          threads=2)
    summary = dynamic.metadata["validation"]
    # validated at the traced shape and at another batch and aspect ratio
    assert summary["passed"] and [list(s) for s in summary["shapes"]] == [[1, 3, 256, 320], [2, 3, 384, 640]]
    assert_standard_graph(dynamic.path)
    assert dynamic.metadata["dynamic_axes"]["input"] == {"0": "batch", "2": "height", "3": "width"}
    stride = models.get_spec(name).output_stride
    assert dynamic.metadata["output"]["shape"][2:] == [f"height/{stride}", f"width/{stride}"]
    runner = OnnxRuntimeRunner(dynamic.path, threads=2)
    assert runner.inputs()[0].shape == ("batch", 3, "height", "width")


@pytest.mark.slow
@pytest.mark.parametrize("name", models.list_models())
def test_every_variant_exports_at_512_static_and_dynamic(name, tmp_path):
    from segdeploy.validate import validate_artifact

    static = export_onnx(name, tmp_path / "static.onnx")
    assert static.metadata["validation"]["passed"]
    assert_standard_graph(static.path)
    dynamic = export_onnx(name, tmp_path / "dynamic.onnx", dynamic=True)
    assert dynamic.metadata["validation"]["passed"]
    assert_standard_graph(dynamic.path)
    # the artifact path as a user runs it: metadata -> reference rebuilt -> one input at each default shape
    report = validate_artifact(dynamic.path, n=2)
    assert report.passed, report.failure_line()
    assert sorted({tuple(c["input_shape"]) for c in report.cases}) == [(1, 3, 512, 512), (2, 3, 384, 640)]


def test_mask_output_and_uint8_preprocessing_in_the_graph(tmp_path, capsys):
    path = tmp_path / "end2end.onnx"
    code = main(["export", "--model", "segnext_t", "--height", str(CI_SIZE[0]), "--width", str(CI_SIZE[1]),
                 "--outputs", "mask", "--preprocess", "--output", str(path), "--threads", "2"])
    out = capsys.readouterr().out
    assert code == 0 and "passed on 1 inputs" in out and "label agreement" in out
    metadata = meta.read(path)
    assert metadata["validation"]["passed"] and metadata["output"]["dtype"] == "uint8"
    runner = OnnxRuntimeRunner(str(path), threads=2)
    assert runner.inputs()[0].dtype == "uint8" and runner.inputs()[0].shape == (1, *CI_SIZE, 3)
    assert runner.outputs()[0].dtype == "uint8" and runner.outputs()[0].shape == (1, *CI_SIZE)
    assert {"ArgMax", "Resize"} <= {n.op_type for n in onnx.load(str(path)).graph.node}
    assert metadata["input"]["layout"] == "NHWC" and metadata["preprocessing"]["in_graph"]

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


def test_graph_preprocessing_matches_numpy_preprocessing():
    spec = models.get_spec("segnext_t")
    image = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    expected = preprocess.prepare(image, spec, (64, 96))
    got = NormalizeImage(spec.mean, spec.std, spec.channel_order)(torch.from_numpy(image[None])).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_masks_are_uint8_up_to_255_classes_then_int64():
    logits = torch.randn(1, 300, 4, 4)
    assert LogitsToMask(255)(logits[:, :255], (8, 8)).dtype == torch.uint8
    wide = LogitsToMask(300)(logits, (8, 8))
    assert wide.dtype == torch.int64 and wide.shape == (1, 8, 8) and int(wide.max()) < 300


def test_metadata_is_complete_and_the_same_in_sidecar_and_graph(segnext_static):
    with open(segnext_static.sidecar_path) as f:
        sidecar = json.load(f)
    model = onnx.load(segnext_static.path)
    embedded = meta.from_props(model)
    assert sidecar == embedded == json.loads(json.dumps(segnext_static.metadata))
    for key in meta.REQUIRED_KEYS:
        assert key in sidecar, key
    assert sidecar["model"] == "segnext_t" and sidecar["num_classes"] == 150
    assert len(sidecar["class_names"]) == len(sidecar["palette"]) == 150
    assert sidecar["input"] == {"name": "input", "shape": [1, 3, 256, 320], "dtype": "float32", "layout": "NCHW",
                                "channel_order": "RGB"}
    pre = sidecar["preprocessing"]
    assert pre["resize_policy"] == preprocess.RESIZE_POLICY and pre["size_multiple"] == 32
    assert pre["mean"] == [123.675, 116.28, 103.53] and pre["channel_order"] == "RGB"
    assert sidecar["export_options"]["nmf_bases"] == "fixed" and sidecar["opset"] == 17
    assert sidecar["graph_sha256"] == meta.graph_sha256(model)
    reference = models.create("segnext_t", nmf_bases="fixed")
    models.load_recipe_weights(reference)
    assert sidecar["weights"]["sha256"] == meta.state_dict_sha256(reference)
    assert sidecar["weights"]["source"] == "recipe" and sidecar["weights"]["seed"] == 0
    assert sidecar["tool_versions"]["torch"] == torch.__version__
    assert sidecar["validation"]["passed"] and sidecar["validation"]["max_abs_err"] < 1e-4
    passes = {p["name"]: p for p in sidecar["graph"]["passes"]}
    assert passes["simplify"]["nodes_before"] == sidecar["graph"]["nodes_traced"]
    assert passes["simplify"]["nodes_after"] == sidecar["graph"]["nodes"] == len(model.graph.node)


def test_same_inputs_give_a_byte_identical_file(segnext_static, tmp_path):
    again = export_onnx("segnext_t", tmp_path / "again.onnx", height=CI_SIZE[0], width=CI_SIZE[1], threads=2)
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


def test_simplifier_falls_back_to_onnxslim(segnext_static, monkeypatch):
    from segdeploy.export import simplify as simplify_module

    def broken(model):
        raise RuntimeError("simulated onnxsim crash")

    monkeypatch.setitem(simplify_module._SIMPLIFIERS, "onnxsim", broken)
    result, report = simplify_module.simplify(onnx.load(segnext_static.path))
    assert report.tool == "onnxslim" and "simulated onnxsim crash" in report.notes[0]


# ----------------------------------------------------------------------------------------------------------------
# Errors: one line, exit 2, nothing written


def run_export(capsys, *args):
    code = main(["export", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_unknown_model_and_bad_sizes(capsys, tmp_path):
    code, _, err = run_export(capsys, "--model", "segnext_xxl", "--output", str(tmp_path / "x.onnx"))
    assert code == 2 and "unknown model 'segnext_xxl'" in err and err.count("\n") == 1
    code, _, err = run_export(capsys, "--model", "segnext_t", "--height", "500", "--output", str(tmp_path / "x.onnx"))
    assert code == 2 and "multiples of 32" in err
    code, _, err = run_export(capsys, "--model", "segnext_t", "--dynamic", "--batch", "8",
                              "--output", str(tmp_path / "x.onnx"))
    assert code == 2 and "profile" in err
    code, _, err = run_export(capsys, "--model", "segnext_t", "--opset", "13", "--output", str(tmp_path / "x.onnx"))
    assert code == 2 and "opset 13" in err
    assert os.listdir(tmp_path) == []


def test_trt_format_refuses_bad_engine_options_before_exporting(capsys, tmp_path):
    code, _, err = run_export(capsys, "--model", "segnext_t", "--fmt", "trt", "--output", str(tmp_path / "x.onnx"))
    assert code == 2 and "must end in .engine or .plan" in err
    code, _, err = run_export(capsys, "--model", "segnext_t", "--fmt", "trt", "--gpu-fallback")
    assert code == 2 and "DLA builds only" in err
    assert os.listdir(tmp_path) == []


def test_existing_file_is_not_overwritten_without_force(capsys, tmp_path):
    target = tmp_path / "taken.onnx"
    target.write_bytes(b"keep me")
    code, _, err = run_export(capsys, "--model", "segnext_t", "--output", str(target))
    assert code == 2 and "exists; pass --force" in err
    assert target.read_bytes() == b"keep me" and sorted(os.listdir(tmp_path)) == ["taken.onnx"]


def test_a_failing_step_leaves_no_partial_artifact(tmp_path, monkeypatch):
    from segdeploy.export import onnx as export_module

    def failing_simplify(model, tools):
        raise ArtifactError("simulated simplifier failure")

    monkeypatch.setattr(export_module, "simplify_pass", failing_simplify)
    with pytest.raises(ArtifactError, match="simulated"):
        export_onnx("segnext_t", tmp_path / "a.onnx", height=256, width=256, validate=False)
    assert os.listdir(tmp_path) == []


def test_a_failed_sidecar_write_removes_the_graph(tmp_path, monkeypatch):
    import segdeploy.io

    def failing_write(path, text, force=False):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(segdeploy.io, "write_text_atomic", failing_write)
    with pytest.raises(OSError, match="simulated"):
        export_onnx("segnext_t", tmp_path / "a.onnx", height=256, width=256, validate=False, simplify=False)
    assert os.listdir(tmp_path) == []


def test_deploy_graph_rejects_unknown_output_kinds():
    model = models.create("segnext_t", nmf_bases="fixed")
    with pytest.raises(Exception, match="--outputs must be one of"):
        DeployGraph(model, outputs="probabilities")
