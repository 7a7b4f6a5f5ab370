"""The TensorRT runner on the CPU: its decisions (header check before TensorRT sees the engine, the dtype table,
I/O refusals, runtime settings, profile choice, the thread guard, install detection in the registry) and its whole
inference path against NVIDIA's real bindings of each pinned release, with recorders for the engine and host memory
standing for the GPU (tests/tensorrt_fakes.py). The end-to-end test needs TensorRT and a GPU and is skipped
without them."""
from __future__ import annotations

import threading
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import skips
from manifests import SHA, sample_manifest
from segdeploy.artifact import EngineInfo
from segdeploy.artifact.engine_header import pack
from segdeploy.errors import ArtifactError, InputError, SegdeployError
from segdeploy.runtimes.tensorrt import TensorRTRunner
from segdeploy.runtimes.tensorrt_checks import (
    TRT_DTYPES,
    choose_profile,
    data_dependent,
    dimension_names,
    io_problem,
    numpy_dtype,
    preflight,
    runtime_settings,
)
from segdeploy.runtimes.tensorrt_hooks import ThreadGuard, make_layer_profiler
from tensorrt_fakes import FAKE_PLAN, CpuTorch, EngineTensor, conv_engine, conv_reference, recording_tensorrt

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


def test_preflight_compares_the_build_number_where_both_have_one(tmp_path):
    path = engine_file(tmp_path, tensorrt_version="10.3.0.26")
    assert preflight(path, "10.3.0.26", "8.7")[0] is not None and preflight(path, "10.3.0", "8.7")[0] is not None
    with pytest.raises(ArtifactError, match="built by TensorRT 10.3.0.26, this is TensorRT 10.3.0.30"):
        preflight(path, "10.3.0.30", "8.7")


def test_preflight_keeps_jetson_and_discrete_gpu_engines_apart(tmp_path):
    x86 = engine_file(tmp_path, gpu_name="NVIDIA A100", compute_capability="8.0", hardware_compatibility="ampere_plus",
                      platform="x86_64")
    with pytest.raises(ArtifactError, match="Jetson and discrete-GPU engines do not run on each other"):
        preflight(x86, "10.3.0", "8.7", "jetson")
    assert preflight(x86, "10.3.0", "8.9", "x86_64")[0] is not None
    older = engine_file(tmp_path, name="older.engine", compute_capability="8.0", hardware_compatibility="ampere_plus")
    with pytest.raises(ArtifactError, match="which Jetsons do not run"):  # a header without the platform
        preflight(older, "10.3.0", "8.7", "jetson")


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


def recorded_engine(tmp_path, real_trt, *, name="m.engine", header=True, dynamic=False, **facts):
    """An engine file for the recorder's plan, built by this release on an Orin, with or without segdeploy's
    header."""
    info = EngineInfo(**{"tensorrt_version": real_trt.__version__, "gpu_name": "NVIDIA Jetson AGX Orin",
                         "compute_capability": "8.7", "onnx_sha256": SHA, "builder": "tensorrt-python",
                         "platform": "jetson", **facts})
    path = tmp_path / name
    manifest = sample_manifest(dynamic=dynamic).replace(format="engine", engine=info)
    path.write_bytes(pack(manifest, FAKE_PLAN) if header else FAKE_PLAN)
    return str(path)


def cpu_runner(real_trt, path, *, engine=None, device=None, platform="jetson", **options):
    device = device or CpuTorch()
    scenario = {"engine": engine or conv_engine(), "device": device, **options.pop("scenario", {})}
    trt = recording_tensorrt(real_trt, **scenario)
    return TensorRTRunner(path, trt=trt, torch_module=device, platform=platform, **options), trt, device


def test_runner_inference_path_on_the_real_bindings(tmp_path, real_trt):
    """Deserialize, context with user-managed memory, tensor addresses and shapes, execute_async_v3, copies back,
    teardown: the runner's own code, with NVIDIA's classes checking every call and host memory as the device."""
    runner, trt, device = cpu_runner(real_trt, recorded_engine(tmp_path, real_trt), warmup=1)
    assert [(i.name, i.shape, i.dtype) for i in runner.inputs()] == [("input", (1, 3, 512, 512), "float32")]
    assert [(o.name, o.shape, o.dtype) for o in runner.outputs()] == [("logits", (1, 4, 64, 64), "float32")]
    assert runner.engine_bytes == 1 << 20  # what TensorRT allocated at load (the recorder's weights)
    context = trt.last("IExecutionContext")
    assert trt.called("ICudaEngine", "create_execution_context") == [
        (real_trt.ExecutionContextAllocationStrategy.USER_MANAGED,)]
    assert context._state["device_memory"][1] == 4096
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = rng.standard_normal((1, 3, 512, 512)).astype(np.float32)
        out = runner.infer({"input": x})["logits"]
        np.testing.assert_allclose(out, conv_reference(x), rtol=1e-6, atol=1e-6)
    assert context._state["runs"] == 1 + 3  # one warm-up for the new shape, then one run per call
    assert runner.last_timing.compute_ms >= 0 and runner.last_timing.extra["profile"] == 0
    assert runner.peak_device_memory() >= (1 << 20) + 4096
    assert runner.describe()["engine"]["built_with"] == real_trt.__version__
    runner.close()
    assert runner.context is None and runner.engine is None
    with pytest.raises(SegdeployError, match="closed"):
        runner.infer({"input": x})


def test_runner_dynamic_shapes_profiles_and_cuda_graphs(tmp_path, real_trt):
    path = recorded_engine(tmp_path, real_trt, dynamic=True)
    runner, trt, _ = cpu_runner(real_trt, path, engine=conv_engine(dynamic=True), cuda_graphs=True, warmup=1)
    assert runner.inputs()[0].shape == ("batch", 3, "height", "width")
    rng = np.random.default_rng(1)
    for shape in [(1, 3, 256, 320), (2, 3, 512, 512), (1, 3, 256, 320)]:
        for _ in range(2):  # the second call at a shape replays the graph captured by the first
            x = rng.standard_normal(shape).astype(np.float32)
            np.testing.assert_allclose(runner.infer({"input": x})["logits"], conv_reference(x), rtol=1e-6,
                                       atol=1e-6)
            assert runner.last_timing.extra["cuda_graph"]
    assert ("input", (2, 3, 512, 512)) in trt.called("IExecutionContext", "set_input_shape")
    with pytest.raises(InputError, match="outside the artifact's profile"):
        runner.infer({"input": np.zeros((8, 3, 512, 512), np.float32)})
    runner.close()


def test_runner_hands_data_dependent_outputs_an_output_allocator(tmp_path, real_trt):
    engine = conv_engine()
    engine.tensors.append(EngineTensor("nonzero", "OUTPUT", "int64", (-1, 4), data_dependent=True))
    compute = engine.compute

    def with_nonzero(inputs):
        out = compute(inputs)
        out["nonzero"] = np.argwhere(out["logits"] > 0).astype(np.int64)
        return out
    engine.compute = with_nonzero
    runner, trt, _ = cpu_runner(real_trt, recorded_engine(tmp_path, real_trt), engine=engine)
    x = np.random.default_rng(2).standard_normal((1, 3, 512, 512)).astype(np.float32)
    result = runner.infer({"input": x})
    np.testing.assert_array_equal(result["nonzero"], np.argwhere(conv_reference(x) > 0))
    (name, allocator), = trt.called("IExecutionContext", "set_output_allocator")
    assert name == "nonzero" and isinstance(allocator, real_trt.IOutputAllocator)  # NVIDIA's base class


def test_runner_refusals_on_the_real_bindings(tmp_path, real_trt):
    engine = conv_engine()
    engine.tensors[1].trt_dtype = "BF16"
    with pytest.raises(ArtifactError, match="BF16, which has no numpy type"):
        cpu_runner(real_trt, recorded_engine(tmp_path, real_trt), engine=engine)
    engine = conv_engine()
    engine.tensors[0].format = "CHW32"
    with pytest.raises(ArtifactError, match="vectorized format CHW32"):
        cpu_runner(real_trt, recorded_engine(tmp_path, real_trt), engine=engine)
    with pytest.raises(ArtifactError, match="could not deserialize"):
        cpu_runner(real_trt, recorded_engine(tmp_path, real_trt), scenario={"deserialize_ok": False})


def test_runner_refuses_a_foreign_engine_before_tensorrt_sees_it(tmp_path, real_trt):
    path = recorded_engine(tmp_path, real_trt, tensorrt_version="10.2.0")
    with pytest.raises(ArtifactError, match="rebuild it here"):
        cpu_runner(real_trt, path)
    path = recorded_engine(tmp_path, real_trt, name="x86.engine", gpu_name="NVIDIA A100", compute_capability="8.0",
                           hardware_compatibility="ampere_plus", platform="x86_64")
    with pytest.raises(ArtifactError, match="Jetson and discrete-GPU engines do not run on each other"):
        cpu_runner(real_trt, path, platform="jetson")
    runner, _, _ = cpu_runner(real_trt, path, platform="x86_64", device=CpuTorch((8, 9), "NVIDIA L4"))
    runner.close()  # ampere_plus from an A100 runs on an L4
    with pytest.raises(ArtifactError, match="engine not found"):
        cpu_runner(real_trt, str(tmp_path / "missing.engine"))


def test_bare_version_compatible_plan_loads_with_a_warning(tmp_path, real_trt):
    """build_engine.sh writes a bare plan; a version-compatible one needs host code allowed to deserialize."""
    path = recorded_engine(tmp_path, real_trt, name="m.plan", header=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runner, trt, _ = cpu_runner(real_trt, path, scenario={"engine_needs_host_code": True})
    assert any("no segdeploy header" in str(w.message) and "host code is allowed" in str(w.message)
               for w in caught)
    assert trt.called("Runtime", "engine_host_code_allowed") == [(True,)]
    x = np.ones((1, 3, 512, 512), np.float32)
    np.testing.assert_allclose(runner.infer({"input": x})["logits"], conv_reference(x), rtol=1e-6)
    runner.close()


def test_version_compatible_engine_allows_host_code_and_a_plain_one_does_not(tmp_path, real_trt):
    runner, trt, _ = cpu_runner(real_trt, recorded_engine(tmp_path, real_trt, version_compatible=True),
                                scenario={"engine_needs_host_code": True})
    assert trt.called("Runtime", "engine_host_code_allowed") == [(True,)]
    runner.close()
    runner, trt, _ = cpu_runner(real_trt, recorded_engine(tmp_path, real_trt, name="plain.engine"))
    assert trt.called("Runtime", "engine_host_code_allowed") == []
    runner.close()


def test_dla_engine_sets_the_core_and_refuses_cuda_graphs(tmp_path, real_trt):
    path = recorded_engine(tmp_path, real_trt, dla_core=1)
    with pytest.raises(SegdeployError, match="a CUDA graph cannot capture DLA work"):
        cpu_runner(real_trt, path, cuda_graphs=True, scenario={"dla_cores": 2})
    runner, trt, _ = cpu_runner(real_trt, path, scenario={"dla_cores": 2})
    assert trt.called("Runtime", "DLA_core") == [(1,)]
    runner.close()
    with pytest.raises(ArtifactError, match="DLA core 1; this machine has 0 DLA cores"):
        cpu_runner(real_trt, path)


def test_runner_refuses_tensorrt_8_with_what_to_do(tmp_path):
    trt = SimpleNamespace(__version__="8.6.2")
    with pytest.raises(SegdeployError, match="JetPack 6.0 ships TensorRT 8.6; upgrade the Jetson to JetPack 6.1"):
        TensorRTRunner(engine_file(tmp_path), trt=trt, torch_module=CpuTorch())


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


def conv_artifact(path):
    """A stride-8 convolution with the sample manifest's I/O: [1, 3, 512, 512] -> [1, 4, 64, 64] logits."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from segdeploy.artifact.manifest_store import embed

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
@skips.skipif(skips.tensorrt_missing() is not None, skips.NO_TENSORRT, skips.tensorrt_missing() or "")
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


def test_bare_plan_is_described_by_the_manifest_beside_it(tmp_path):
    """build_engine.sh writes <model>.plan beside the bundle's <model>.json: the reader (and the C++ library) take
    that manifest for the plan."""
    from segdeploy.artifact import read_manifest

    plan = tmp_path / "cgrseg_t.plan"
    plan.write_bytes(PLAN)
    with pytest.raises(ArtifactError, match="no segdeploy header .* and no manifest"):
        read_manifest(plan)
    assert read_manifest(plan, required=False) is None
    (tmp_path / "cgrseg_t.json").write_text(sample_manifest().to_json())
    assert read_manifest(plan).model.name == "cgrseg_t"
