"""The ONNX Runtime runner against the Runner contract, on small hand-built graphs (no model export needed)."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from segdeploy.errors import ArtifactError, InputError, SegdeployError
from segdeploy.runtimes.base import Runner, TensorInfo
from segdeploy.runtimes.onnxruntime import OnnxRuntimeRunner, resolve_providers


def scale_and_relu_model(dims=("batch", 3, "height", "width")) -> onnx.ModelProto:
    """y = relu(x) * 2 + Identity chain, so graph optimisation has something to fuse."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, list(dims))
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, list(dims))
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    nodes = [helper.make_node("Relu", ["input"], ["r"], name="relu"),
             helper.make_node("Identity", ["r"], ["i"], name="identity"),
             helper.make_node("Mul", ["i", "two"], ["logits"], name="scale")]
    graph = helper.make_graph(nodes, "tiny", [x], [y], initializer=[two])
    # IR version 8 (what torch.onnx writes): onnx 1.23 would default to one newer than onnxruntime reads
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.fixture
def tiny_path(tmp_path):
    path = tmp_path / "tiny.onnx"
    onnx.save(scale_and_relu_model(), str(path))
    return str(path)


def test_describes_named_tensors_and_runs(tiny_path):
    runner = OnnxRuntimeRunner(tiny_path, threads=1)
    assert isinstance(runner, Runner)
    assert runner.inputs() == [TensorInfo("input", ("batch", 3, "height", "width"), "float32")]
    assert runner.outputs()[0].name == "logits" and runner.outputs()[0].dtype == "float32"
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 7)).astype(np.float32)
    out = runner.infer({"input": x})
    np.testing.assert_array_equal(out["logits"], np.maximum(x, 0) * 2)
    assert runner.last_timing.host_ms > 0
    info = runner.describe()
    assert info["backend"] == "onnxruntime" and info["device"] == "cpu" and info["threads"] == 1
    assert info["version"] == ort.__version__


@pytest.mark.parametrize("level", ["disable", "basic", "extended", "all"])
def test_every_optimisation_level_gives_the_same_answer(tiny_path, level):
    x = np.linspace(-1, 1, 3 * 4 * 4, dtype=np.float32).reshape(1, 3, 4, 4)
    with OnnxRuntimeRunner(tiny_path, graph_optimization=level) as runner:
        np.testing.assert_array_equal(runner.infer({"input": x})["logits"], np.maximum(x, 0) * 2)


def test_in_memory_models_are_accepted():
    model = scale_and_relu_model()
    x = np.ones((1, 3, 2, 2), np.float32)
    for source in (model, model.SerializeToString()):
        assert OnnxRuntimeRunner(source).infer({"input": x})["logits"].sum() == 24


def test_bad_feeds_are_input_errors(tmp_path):
    path = tmp_path / "static.onnx"
    onnx.save(scale_and_relu_model((1, 3, 4, 4)), str(path))
    runner = OnnxRuntimeRunner(str(path))
    with pytest.raises(InputError, match=r"must have shape \(1, 3, 4, 4\), not \(1, 3, 4, 5\)"):
        runner.infer({"input": np.zeros((1, 3, 4, 5), np.float32)})
    with pytest.raises(InputError, match="must be float32, not float64"):
        runner.infer({"input": np.zeros((1, 3, 4, 4))})
    with pytest.raises(InputError, match="the model takes"):
        runner.infer({"image": np.zeros((1, 3, 4, 4), np.float32)})
    with pytest.raises(InputError, match="must have shape"):
        runner.infer({"input": np.zeros((3, 4, 4), np.float32)})


def test_missing_and_corrupt_files_are_artifact_errors(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        OnnxRuntimeRunner(str(tmp_path / "nope.onnx"))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07garbage that is not a protobuf")
    with pytest.raises(ArtifactError, match="ONNX Runtime cannot load") as info:
        OnnxRuntimeRunner(str(junk))
    assert "\n" not in str(info.value)


def test_unknown_options_and_missing_providers_are_refused(tiny_path):
    with pytest.raises(SegdeployError, match="graph_optimization must be one of"):
        OnnxRuntimeRunner(tiny_path, graph_optimization="max")
    assert resolve_providers(None) == ["CPUExecutionProvider"]
    assert resolve_providers("cpu") == ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(SegdeployError, match="CUDAExecutionProvider is not available"):
            OnnxRuntimeRunner(tiny_path, providers=["cuda"])
    else:  # a GPU build: the CPU provider is kept last for the ops CUDA does not take
        assert resolve_providers(["cuda"]) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
