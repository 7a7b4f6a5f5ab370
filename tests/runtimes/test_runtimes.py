"""The runner contract on every backend present here: named tensors, agreeing outputs, one-line errors."""
from __future__ import annotations

import importlib.util
import re

import numpy as np
import pytest
import torch

import skips
from manifests import sample_manifest
from segdeploy import hostinfo
from segdeploy.errors import ArtifactError, InputError, SegdeployError
from segdeploy.runtimes import registry
from segdeploy.runtimes.base import Runner, TensorInfo, random_feed, resolve_shape
from segdeploy.runtimes.manifest_check import tensor_infos
from segdeploy.runtimes.torch import TorchRunner, build_graph

MODEL, SIZE = "segnext_t", 64
HAS_OPENVINO = importlib.util.find_spec("openvino") is not None


@pytest.fixture(scope="module")
def torch_runner():
    return TorchRunner(MODEL)


@pytest.fixture(scope="module")
def feed():
    return {"input": np.random.default_rng(1).standard_normal((1, 3, SIZE, SIZE), dtype=np.float32)}


@pytest.fixture(scope="module")
def onnx_artifact(tmp_path_factory):
    from segdeploy.export.onnx import export_onnx

    path = tmp_path_factory.mktemp("artifacts") / f"{MODEL}_{SIZE}.onnx"
    return str(export_onnx(MODEL, path, height=SIZE, width=SIZE).path)


def test_torch_runner_names_its_tensors_and_matches_the_module(torch_runner, feed):
    assert [i.name for i in torch_runner.inputs()] == ["input"]
    assert [o.name for o in torch_runner.outputs()] == ["logits"]
    assert torch_runner.outputs()[0].shape == ("batch", 150, "height/8", "width/8")
    out = torch_runner.infer(feed)
    assert set(out) == {"logits"} and out["logits"].shape == (1, 150, SIZE // 8, SIZE // 8)
    with torch.inference_mode():
        expected = build_graph(MODEL)(torch.from_numpy(feed["input"])).numpy()
    np.testing.assert_array_equal(out["logits"], expected)
    timing = torch_runner.last_timing
    assert timing.host_ms > 0 and timing.compute_ms is None and timing.h2d_ms is None  # CPU: no device split
    assert torch_runner.peak_device_memory() is None
    described = torch_runner.describe()
    assert described["backend"] == "torch" and described["device"] == "cpu" and described["layout"] == "nchw"


def test_thread_count_is_restored_on_close():
    before = torch.get_num_threads()
    runner = TorchRunner(MODEL, threads=1)
    assert torch.get_num_threads() == 1 and runner.describe()["threads"] == 1
    runner.close()
    assert torch.get_num_threads() == before


def test_channels_last_gives_the_same_logits(torch_runner, feed):
    cl = TorchRunner(MODEL, layout="channels_last")
    out = cl.infer(feed)["logits"]
    assert out.flags.c_contiguous
    np.testing.assert_allclose(out, torch_runner.infer(feed)["logits"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bad_feed, message", [
    ({"image": np.zeros((1, 3, 64, 64), np.float32)}, "the feed has inputs ['image'], the model takes ['input']"),
    ({"input": np.zeros((1, 3, 64, 64), np.float64)}, "must be float32, not float64"),
    ({"input": np.zeros((3, 64, 64), np.float32)}, "must have shape (batch, 3, height, width)"),
    ({"input": np.zeros((1, 4, 64, 64), np.float32)}, "must have shape (batch, 3, height, width)"),
    ({"input": [[0.0]]}, "numpy array"),
])
def test_torch_runner_rejects_bad_feeds(torch_runner, bad_feed, message):
    with pytest.raises(InputError, match=re.escape(message)):
        torch_runner.infer(bad_feed)


def test_torch_runner_rejects_what_this_machine_cannot_do():
    with pytest.raises(SegdeployError, match="precision"):
        TorchRunner(MODEL, precision="int3")
    with pytest.raises(SegdeployError, match="layout"):
        TorchRunner(MODEL, layout="nhwc")
    if not torch.cuda.is_available():
        with pytest.raises(SegdeployError, match="CUDA"):
            TorchRunner(MODEL, device="cuda")
        with pytest.raises(SegdeployError, match="fp16 needs a CUDA device"):
            TorchRunner(MODEL, precision="fp16")
        with pytest.raises(SegdeployError, match="CUDA graphs"):
            TorchRunner(MODEL, cuda_graphs=True)


def test_shapes_resolve_dynamic_dims_and_keep_static_ones(torch_runner):
    assert resolve_shape(TensorInfo("x", ("batch", 3, "height", "width"), "float32"), 4, 32, 96) == (4, 3, 32, 96)
    assert resolve_shape(TensorInfo("x", (1, 3, 64, 64), "float32"), 4, 32, 96) == (1, 3, 64, 64)
    with pytest.raises(InputError, match="dynamic dimension 1"):
        resolve_shape(TensorInfo("x", (1, "c", 64, 64), "float32"), 1, 64, 64)
    # uint8 NHWC images (--preprocess --dynamic): the spatial dims are 1 and 2
    nhwc = TensorInfo("image", ("batch", "height", "width", 3), "uint8", "NHWC")
    assert resolve_shape(nhwc, 2, 32, 96) == (2, 32, 96, 3)
    assert resolve_shape(TensorInfo("image", ("?", "?", "?", 3), "uint8"), 1, 32, 64) == (1, 32, 64, 3)
    feed = random_feed(torch_runner, 2, 32, 64, seed=3)
    assert feed["input"].shape == (2, 3, 32, 64) and feed["input"].dtype == np.float32
    np.testing.assert_array_equal(feed["input"], random_feed(torch_runner, 2, 32, 64, seed=3)["input"])


def test_onnxruntime_runner_shares_the_contract(onnx_artifact, torch_runner, feed):
    runner = registry.create_runner("onnxruntime", artifact=onnx_artifact, threads=1, graph_optimization="all")
    assert [(i.name, i.shape, i.dtype) for i in runner.inputs()] == [("input", (1, 3, SIZE, SIZE), "float32")]
    assert [o.name for o in runner.outputs()] == ["logits"]
    out = runner.infer(feed)["logits"]
    np.testing.assert_allclose(out, torch_runner.infer(feed)["logits"], rtol=1e-3, atol=1e-3)
    assert runner.last_timing.host_ms > 0 and runner.last_timing.compute_ms is None
    with pytest.raises(InputError):
        runner.infer({"input": np.zeros((2, 3, SIZE, SIZE), np.float32)})
    runner.close()


@pytest.mark.skipif(not HAS_OPENVINO, reason="needs the optional openvino package (pip install 'segdeploy[openvino]')")
def test_openvino_runner_runs_the_onnx_artifact_in_fp32(onnx_artifact, torch_runner, feed):
    runner = registry.create_runner("openvino", artifact=onnx_artifact, threads=1)
    assert [i.name for i in runner.inputs()] == ["input"] and [o.name for o in runner.outputs()] == ["logits"]
    assert runner.config["INFERENCE_PRECISION_HINT"] == "f32"  # not the bf16 default of AVX512-BF16/AMX CPUs
    out = runner.infer(feed)["logits"]
    np.testing.assert_allclose(out, torch_runner.infer(feed)["logits"], rtol=1e-3, atol=1e-3)
    assert runner.describe()["precision"] == "fp32"
    with pytest.raises(InputError, match="must be float32"):
        runner.infer({"input": np.zeros((1, 3, SIZE, SIZE), np.float64)})
    with pytest.raises(InputError, match="the model takes"):
        runner.infer({"x": feed["input"]})


@pytest.mark.skipif(not HAS_OPENVINO, reason="needs the optional openvino package (pip install 'segdeploy[openvino]')")
def test_openvino_compiles_dynamic_graphs_per_shape(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    # y = 2 * x with every dim dynamic: OpenVINO is given static shapes, one compiled model per feed shape
    graph = helper.make_graph(
        [helper.make_node("Mul", ["input", "two"], ["logits"])], "double",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])])
    path = tmp_path / "double.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    from segdeploy.runtimes.openvino import OpenVinoRunner

    runner = OpenVinoRunner(path, threads=1)
    assert runner.inputs()[0].shape == ("?", 3, "?", "?")
    for shape in ((1, 3, 4, 4), (2, 3, 8, 6), (1, 3, 4, 4)):
        x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        np.testing.assert_array_equal(runner.infer({"input": x})["logits"], 2 * x)
    assert len(runner._requests) == 2
    feed = random_feed(runner, 3, 8, 8)
    assert feed["input"].shape == (3, 3, 8, 8)


@pytest.mark.skipif(not HAS_OPENVINO, reason="needs the optional openvino package (pip install 'segdeploy[openvino]')")
def test_openvino_reports_unreadable_artifacts(tmp_path):
    from segdeploy.runtimes.openvino import OpenVinoRunner

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ArtifactError, match="OpenVINO cannot read"):
        OpenVinoRunner(junk)
    with pytest.raises(ArtifactError, match="model not found"):
        OpenVinoRunner(tmp_path / "none.onnx")


@skips.skipif(skips.tensorrt_missing() is None, skips.TENSORRT_PRESENT,
              "this checks the message given where it is not")
def test_tensorrt_unavailable_is_one_clear_error(tmp_path):
    status = registry.backend_status("tensorrt")
    assert not status.available and "TensorRT" in status.reason
    with pytest.raises(SegdeployError, match="backend tensorrt is not usable here"):
        registry.create_runner("tensorrt", artifact=str(tmp_path / "x.engine"))


@pytest.mark.tensorrt
@skips.skipif(skips.tensorrt_missing() is not None, skips.NO_TENSORRT, skips.tensorrt_missing() or "")
def test_tensorrt_runner_rejects_a_foreign_engine(tmp_path):
    from segdeploy.runtimes.tensorrt import TensorRTRunner

    bogus = tmp_path / "bogus.engine"
    bogus.write_bytes(b"\x00" * 64)
    with pytest.raises(ArtifactError, match="cannot deserialize"):
        TensorRTRunner(bogus)


def test_registry_knows_every_backend_and_why_not():
    statuses = {s.name: s for s in registry.all_backends()}
    assert set(statuses) == set(registry.BACKENDS)
    assert statuses["torch"].available and "cpu" in statuses["torch"].devices
    assert statuses["onnxruntime"].available and "CPUExecutionProvider" in statuses["onnxruntime"].devices
    assert statuses["openvino"].available == HAS_OPENVINO
    for status in statuses.values():
        assert status.available or status.reason, status  # every unusable backend says why
        assert status.consumes == registry.BACKENDS[status.name].consumes
    assert statuses["onnxruntime"].distribution in hostinfo.DISTRIBUTIONS["onnxruntime"]
    with pytest.raises(SegdeployError, match="unknown backend 'tflite'"):
        registry.backend_status("tflite")


def test_one_record_per_backend_says_what_it_consumes():
    records = registry.BACKENDS
    assert {r.consumes for r in records.values()} == {"model", "onnx", "engine"}
    assert registry.backends_for("onnx") == ["onnxruntime", "openvino"]
    assert registry.backends_for("engine") == ["tensorrt"]
    assert registry.cpu_backends() == ["openvino", "onnxruntime", "torch"]
    for record in records.values():
        assert record.precisions and record.devices and callable(record.probe) and callable(record.factory)


def test_fastest_cpu_backend_is_the_first_usable_in_the_preference(monkeypatch):
    real = registry.backend_status
    preference = registry.cpu_backends()
    usable = [name for name in preference if real(name).available]
    assert registry.fastest_cpu_backend() == usable[0]
    disabled = {usable[0]}

    def without_the_first(name):
        status = real(name)
        if name in disabled:
            status.available = False
        return status

    monkeypatch.setattr(registry, "backend_status", without_the_first)
    assert registry.fastest_cpu_backend() == (usable[1] if len(usable) > 1 else "torch")
    disabled.update(preference)
    assert registry.fastest_cpu_backend() == "torch"  # PyTorch is always there to fall back on


def test_create_runner_checks_what_each_backend_consumes(onnx_artifact):
    with pytest.raises(SegdeployError, match="registered model"):
        registry.create_runner("torch", artifact=onnx_artifact)
    with pytest.raises(SegdeployError, match="exported artifact"):
        registry.create_runner("onnxruntime", model=MODEL)
    with pytest.raises(SegdeployError, match="precision the artifact's graph carries"):
        registry.create_runner("onnxruntime", artifact=onnx_artifact, precision="fp16")
    with pytest.raises(SegdeployError, match="runs on the CPU here"):
        registry.create_runner("onnxruntime", artifact=onnx_artifact, device="cuda")


def test_machine_info_describes_the_cpu():
    info = hostinfo.machine_info()
    cpu = info["cpu"]
    assert cpu["model"] and cpu["logical_cores"] >= cpu["usable_cores"] >= 1
    assert set(cpu["isa"]) <= set(hostinfo.ISA_FLAGS)
    assert set(cpu["int8_dot_product"]) <= set(hostinfo.INT8_DOT_PRODUCT_FLAGS)
    assert info["versions"]["torch"] and info["versions"]["onnxruntime"]
    assert "INT8" in hostinfo.int8_speed_note(cpu)


class EchoRunner(Runner):
    backend = "echo"

    def __init__(self, manifest=None):
        super().__init__()
        self.manifest = manifest
        self.calls = 0

    def inputs(self):
        return [TensorInfo("input", ("batch", 3, "height", "width"), "float32", "NCHW")]

    def outputs(self):
        return [TensorInfo("logits", ("batch", 4, "h", "w"), "float32")]

    def _infer(self, feed):
        self.calls += 1
        return {"logits": feed["input"]}


def test_the_base_runner_checks_feeds_against_the_artifact_profile():
    runner = EchoRunner(sample_manifest(dynamic=True))
    runner.infer({"input": np.zeros((2, 3, 256, 320), np.float32)})
    for shape, message in (((8, 3, 256, 256), "batch 8 outside 1-4"), ((1, 3, 250, 256), "not a multiple of 32"),
                           ((1, 3, 2048, 256), "height 2048 outside 256-1024")):
        with pytest.raises(InputError, match=message):
            runner.infer({"input": np.zeros(shape, np.float32)})
    assert runner.calls == 1  # the backend never saw a bad feed


def test_a_manifest_that_does_not_fit_the_graph_is_refused():
    manifest = sample_manifest()
    found_in = [TensorInfo("input", (1, 3, 512, 512), "float32")]
    found_out = [TensorInfo("logits", (1, 4, 64, 64), "float32")]
    inputs, _ = tensor_infos(manifest, found_in, found_out, "m.onnx")
    assert inputs[0].layout == "NCHW"
    with pytest.raises(ArtifactError, match="describes inputs"):
        tensor_infos(manifest, [TensorInfo("image", (1, 3, 512, 512), "float32")], found_out, "m.onnx")
    with pytest.raises(ArtifactError, match="dimension 2 as 512, the graph as 256"):
        tensor_infos(manifest, [TensorInfo("input", (1, 3, 256, 512), "float32")], found_out, "m.onnx")
    with pytest.raises(ArtifactError, match="as float32 of rank 4, the graph has uint8"):
        tensor_infos(manifest, [TensorInfo("input", (1, 3, 512, 512), "uint8")], found_out, "m.onnx")
