"""The TensorRT runner's decisions, on the CPU: header check before TensorRT sees the engine, the dtype table,
I/O refusals, runtime settings, profile choice, the thread guard, install detection in the registry. The
end-to-end test needs TensorRT and a GPU and is skipped without them."""
from __future__ import annotations

import contextlib
import threading
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from manifests import SHA, sample_manifest
from segdeploy.artifact import EngineInfo
from segdeploy.artifact.engine_header import pack
from segdeploy.errors import ArtifactError, InputError, SegdeployError
from segdeploy.runtimes.tensorrt import (
    TRT_DTYPES,
    TensorRTRunner,
    ThreadGuard,
    choose_profile,
    data_dependent,
    dimension_names,
    io_problem,
    make_layer_profiler,
    numpy_dtype,
    preflight,
    runtime_settings,
)

PLAN = b"ftrt" + bytes(128)


def engine_file(tmp_path, name="m.engine", **facts):
    info = EngineInfo(**{"tensorrt_version": "10.3.0", "gpu_name": "NVIDIA Jetson AGX Orin",
                         "compute_capability": "8.7", "onnx_sha256": SHA, "builder": "trtexec", **facts})
    path = tmp_path / name
    path.write_bytes(pack(sample_manifest().replace(format="engine", engine=info), PLAN))
    return str(path)


def test_preflight_accepts_a_matching_engine_and_refuses_a_foreign_one(tmp_path):
    path = engine_file(tmp_path)
    manifest, offset, notes = preflight(path, "10.3.0.26", "8.7")
    assert manifest.engine.gpu_name == "NVIDIA Jetson AGX Orin" and notes == []
    assert open(path, "rb").read()[offset:] == PLAN
    with pytest.raises(ArtifactError, match="built by TensorRT 10.3.0, this is TensorRT 10.4.0") as err:
        preflight(path, "10.4.0", "8.7")
    assert "\n" not in str(err.value)
    with pytest.raises(ArtifactError, match="compute capability 8.7"):
        preflight(path, "10.3.0", "8.6")


def test_preflight_honours_compatibility_flags(tmp_path):
    path = engine_file(tmp_path, version_compatible=True, hardware_compatibility="ampere_plus")
    assert preflight(path, "11.4.0", "9.0")[0] is not None  # a 10.x version-compatible engine runs on 11.x
    with pytest.raises(ArtifactError, match="not on 10.2.0"):
        preflight(path, "10.2.0", "8.7")
    with pytest.raises(ArtifactError, match="Ampere and newer"):
        preflight(path, "10.3.0", "7.5")


def test_headerless_plan_loads_with_a_warning(tmp_path):
    bare = tmp_path / "trtexec.plan"
    bare.write_bytes(PLAN)
    manifest, offset, notes = preflight(str(bare), "10.3.0", "8.7")
    assert manifest is None and offset == 0 and "no segdeploy header" in notes[0]


def test_dtype_table():
    assert numpy_dtype("DataType.FLOAT", "x") == "float32" and numpy_dtype("HALF", "x") == "float16"
    assert numpy_dtype("UINT8", "image") == "uint8" and numpy_dtype("INT64", "mask") == "int64"
    for name in ("BF16", "FP8", "INT4", "FP4"):
        with pytest.raises(ArtifactError, match="no numpy type"):
            numpy_dtype(name, "logits")
    with pytest.raises(ArtifactError, match="does not know"):
        numpy_dtype("FP6", "logits")
    assert all(v is None or np.dtype(v) for v in TRT_DTYPES.values())


def test_io_refusals():
    assert io_problem("input", "TensorFormat.LINEAR", "TensorLocation.DEVICE") is None
    assert "vectorized format CHW32" in io_problem("input", "TensorFormat.CHW32", "TensorLocation.DEVICE")
    assert "host memory" in io_problem("shape", "TensorFormat.LINEAR", "TensorLocation.HOST")
    assert "shape tensor" in io_problem("shape", "LINEAR", "DEVICE", shape_tensor=True)


def test_runtime_settings():
    info = EngineInfo("10.3.0", "Orin", "8.7", SHA, "trtexec", version_compatible=True, dla_core=1)
    assert runtime_settings(info, dla_cores=2) == runtime_settings(info, 2)
    settings = runtime_settings(info, 2)
    assert settings.dla_core == 1 and settings.engine_host_code_allowed
    with pytest.raises(ArtifactError, match="DLA core 1; this machine has 0 DLA cores"):
        runtime_settings(info, 0)
    assert runtime_settings(None, 0).dla_core is None


def test_profile_choice():
    profiles = [{"input": ((1, 3, 256, 256), (1, 3, 512, 512), (4, 3, 1024, 1024))},
                {"input": ((1, 3, 256, 256), (1, 3, 1024, 1024), (1, 3, 2048, 2048))}]
    assert choose_profile(profiles, {"input": (1, 3, 512, 512)}) == 0
    assert choose_profile(profiles, {"input": (1, 3, 1024, 1024)}) == 1  # both take it; 1's opt is nearer
    assert choose_profile(profiles, {"input": (1, 3, 2048, 2048)}) == 1
    assert choose_profile(profiles, {"input": (4, 3, 512, 512)}) == 0
    with pytest.raises(InputError, match=r"no optimization profile of this engine takes input \[8, 3, 512, 512\]"):
        choose_profile(profiles, {"input": (8, 3, 512, 512)})


def test_shapes_and_names():
    assert data_dependent((1, -1)) and not data_dependent((1, 4, 64, 64))
    assert dimension_names((-1, 3, -1, -1), ["batch", 3, "height", "width"]) == ("batch", 3, "height", "width")
    assert dimension_names((-1, 4), None) == ("?", 4)


def test_layer_profiler_averages_each_layer_over_the_runs():
    """TensorRT calls report_layer_time once per layer per run; the profile is each layer's mean, in first-seen order,
    with the ONNX node names its name holds (the profiler's folding onto modules reads those)."""
    profiler = make_layer_profiler(SimpleNamespace(IProfiler=type("IProfiler", (), {"__init__": lambda self: None})))
    for ms in (1.0, 3.0):
        profiler.report_layer_time("/model/a/Conv + /model/a/act/Relu", ms)
        profiler.report_layer_time("{ForeignNode[/model/b/MatMul.../model/b/Softmax]}", ms / 2)
    layers = profiler.layers(runs=2)
    assert [(layer.ms, layer.sources) for layer in layers] == [
        (2.0, ("/model/a/Conv", "/model/a/act/Relu")), (1.0, ("/model/b/MatMul", "/model/b/Softmax"))]


def test_thread_guard_refuses_a_second_thread():
    guard, errors, inside, release = ThreadGuard(), [], threading.Event(), threading.Event()

    def hold():
        with guard:
            inside.set()
            release.wait(5)

    t = threading.Thread(target=hold)
    t.start()
    inside.wait(5)
    try:
        with guard:
            pass
    except SegdeployError as exc:
        errors.append(str(exc))
    release.set()
    t.join()
    assert errors and "another thread" in errors[0]
    with guard:  # free again once the other thread left
        pass


class ReachedTensorRT(Exception):
    pass


def fake_stack(version, capability=(8, 7)):
    """A TensorRT module whose first call raises, and a torch whose CUDA reports one GPU of ``capability``."""
    class Logger:
        WARNING = 2

        def __init__(self, severity):
            raise ReachedTensorRT()
    trt = SimpleNamespace(__version__=version, Logger=Logger)
    cuda = SimpleNamespace(is_available=lambda: True, get_device_capability=lambda device: capability,
                           device=lambda device: contextlib.nullcontext())
    return trt, SimpleNamespace(__version__="2.x+cu", cuda=cuda, device=torch.device)


def test_runner_refuses_a_foreign_engine_before_tensorrt_sees_it(tmp_path):
    trt, fake_torch = fake_stack("10.4.0")
    with pytest.raises(ArtifactError, match="rebuild it here"):
        TensorRTRunner(engine_file(tmp_path), trt=trt, torch_module=fake_torch)


def test_runner_goes_on_to_tensorrt_for_compatible_and_bare_engines(tmp_path):
    trt, fake_torch = fake_stack("10.3.0")
    with pytest.raises(ReachedTensorRT):
        TensorRTRunner(engine_file(tmp_path), trt=trt, torch_module=fake_torch)
    bare = tmp_path / "bare.plan"
    bare.write_bytes(PLAN)
    with warnings.catch_warnings(record=True) as caught, pytest.raises(ReachedTensorRT):
        warnings.simplefilter("always")
        TensorRTRunner(str(bare), trt=trt, torch_module=fake_torch)
    assert any("no segdeploy header" in str(w.message) for w in caught)
    with pytest.raises(ArtifactError, match="engine not found"):
        TensorRTRunner(str(tmp_path / "missing.engine"), trt=trt, torch_module=fake_torch)


def test_registry_sees_a_jetpack_install_without_pip_metadata(monkeypatch):
    from segdeploy import tensorrt_host
    from segdeploy.runtimes.registry import backend_status

    monkeypatch.setattr(tensorrt_host, "find_tensorrt",
                        lambda: tensorrt_host.TensorRTInstall("10.3.0", "system", "/usr/lib/python3/dist-packages"))
    status = backend_status("tensorrt")
    assert status.version == "10.3.0"
    if not torch.cuda.is_available():
        assert "10.3.0 (system) is installed" in status.reason
    monkeypatch.setattr(tensorrt_host, "find_tensorrt", lambda: tensorrt_host.TensorRTInstall(None, "absent"))
    assert "not installed" in backend_status("tensorrt").reason


def _tensorrt_missing() -> str | None:
    from segdeploy.runtimes.registry import backend_status

    status = backend_status("tensorrt")
    return None if status.available else status.reason


def conv_artifact(path):
    """A stride-8 convolution with the sample manifest's I/O: [1, 3, 512, 512] -> [1, 4, 64, 64] logits."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from segdeploy.artifact.manifest import embed

    weight = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32) * 0.05
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["logits"], kernel_shape=[8, 8], strides=[8, 8], name="conv")], "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 512, 512])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4, 64, 64])],
        initializer=[numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(embed(model, sample_manifest()), path)
    return str(path)


@pytest.mark.tensorrt
@pytest.mark.skipif(_tensorrt_missing() is not None, reason=f"needs TensorRT and a GPU: {_tensorrt_missing()}")
def test_engine_builds_and_runs_like_onnxruntime(tmp_path):
    import onnxruntime

    from segdeploy.export.tensorrt import export_engine

    onnx_path = conv_artifact(tmp_path / "conv.onnx")
    result = export_engine(onnx_path, None, builders=("tensorrt-python",))
    x = np.random.default_rng(1).standard_normal((1, 3, 512, 512)).astype(np.float32)
    expected = onnxruntime.InferenceSession(onnx_path).run(None, {"input": x})[0]
    for graphs in (False, True):
        with TensorRTRunner(result.path, cuda_graphs=graphs) as runner:
            assert [i.name for i in runner.inputs()] == ["input"] and runner.manifest is not None
            for _ in range(3):
                out = runner.infer({"input": x})["logits"]
            np.testing.assert_allclose(out, expected, rtol=1e-3, atol=1e-3)
            assert runner.last_timing.compute_ms > 0 and runner.peak_device_memory() > 0
            # the layer profiler: every layer timed in every run, names holding the ONNX nodes they compute
            profiled = runner.layer_profile({"input": x}, runs=3, warmup=1)
            assert profiled.layers and len(profiled.run_ms) == 3
            assert all(len(layer.samples) == 3 for layer in profiled.layers)
            assert any("conv" in layer.name for layer in profiled.layers)
            np.testing.assert_allclose(runner.infer({"input": x})["logits"], expected, rtol=1e-3, atol=1e-3)
