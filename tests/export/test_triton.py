"""Triton model repositories: every config.pbtxt is parsed with Triton's own ModelConfig protobuf (shipped by
tritonclient) and checked against the manifest and Triton's batching rule."""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from manifests import SHA, embed_hashed, sample_manifest
from segdeploy.artifact import EngineInfo
from segdeploy.artifact.engine_header import pack
from segdeploy.errors import ArtifactError, SegdeployError
from segdeploy.export.triton import max_batch_size, model_config, write_repository

model_config_pb2 = pytest.importorskip(
    "tritonclient.grpc.model_config_pb2",
    reason="Triton's ModelConfig protobuf ships with tritonclient (pip install 'segdeploy[dev]')")
from google.protobuf import text_format  # noqa: E402


def parse(text):
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def onnx_artifact(path, manifest):
    elem = {"float32": TensorProto.FLOAT, "uint8": TensorProto.UINT8}
    inp, out = manifest.input, manifest.output
    graph = helper.make_graph([helper.make_node("Identity", [inp.name], [out.name])], "g",
                              [helper.make_tensor_value_info(inp.name, elem[inp.dtype], inp.shape)],
                              [helper.make_tensor_value_info(out.name, elem[out.dtype], out.shape)])
    onnx.save(embed_hashed(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), manifest), path)
    return str(path)


def test_dynamic_batch_from_one_means_batching():
    manifest = sample_manifest(dynamic=True)
    config = parse(model_config(manifest, name="cgrseg_t").text())
    assert (config.name, config.platform, config.max_batch_size) == ("cgrseg_t", "onnxruntime_onnx", 4)
    assert [(t.name, list(t.dims)) for t in config.input] == [("input", [3, -1, -1])]
    assert [(t.name, list(t.dims)) for t in config.output] == [("logits", [4, -1, -1])]
    assert config.input[0].data_type == model_config_pb2.TYPE_FP32
    assert config.HasField("dynamic_batching") and config.dynamic_batching.max_queue_delay_microseconds == 100
    # Triton places the instances (its GPUs, else the CPU): an export made on a machine without a GPU says nothing
    # about where it will be served
    assert [(g.count, g.kind) for g in config.instance_group] == \
        [(1, model_config_pb2.ModelInstanceGroup.KIND_AUTO)]
    gpu = parse(model_config(manifest, name="cgrseg_t", instance_kind="gpu").text())
    assert [g.kind for g in gpu.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_GPU]


def test_fixed_batch_means_max_batch_size_zero_and_full_dims():
    config = parse(model_config(sample_manifest(), name="m", instance_kind="cpu", instances=2).text())
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert list(config.input[0].dims) == [1, 3, 512, 512] and list(config.output[0].dims) == [1, 4, 64, 64]
    assert [(g.count, g.kind) for g in config.instance_group] == [(2, model_config_pb2.ModelInstanceGroup.KIND_CPU)]


def test_uint8_image_in_mask_out():
    manifest = sample_manifest(dynamic=True, preprocess=True, outputs="mask")
    config = parse(model_config(manifest, name="m").text())
    assert config.input[0].data_type == model_config_pb2.TYPE_UINT8 and list(config.input[0].dims) == [-1, -1, 3]
    assert config.output[0].data_type == model_config_pb2.TYPE_UINT8 and list(config.output[0].dims) == [-1, -1]


def test_batch_that_cannot_take_one_is_not_batched():
    manifest = sample_manifest(dynamic=True)
    manifest.input.dynamic_axes[0].min = 2
    assert max_batch_size(manifest) == 0
    assert list(parse(model_config(manifest, name="m").text()).input[0].dims) == [-1, 3, -1, -1]


def test_refusals():
    with pytest.raises(SegdeployError, match="GPU only"):
        model_config(sample_manifest(), name="m", platform="tensorrt", instance_kind="cpu")
    assert "KIND_AUTO" in model_config(sample_manifest(), name="m", platform="tensorrt").text()
    with pytest.raises(SegdeployError, match="unknown Triton platform"):
        model_config(sample_manifest(), name="m", platform="tflite")
    with pytest.raises(SegdeployError, match="1-64"):
        model_config(sample_manifest(), name="m", instances=0)
    with pytest.raises(SegdeployError, match="1-64"):
        model_config(sample_manifest(), name="m", instances=100_000_000)


def test_onnxruntime_repository(tmp_path):
    artifact = onnx_artifact(tmp_path / "cgrseg_t.onnx", sample_manifest(dynamic=True))
    folder = write_repository(artifact, tmp_path / "repo")
    assert folder == str(tmp_path / "repo" / "cgrseg_t")
    assert sorted(os.listdir(folder)) == ["1", "config.pbtxt", "segdeploy_manifest.json"]
    assert os.listdir(os.path.join(folder, "1")) == ["model.onnx"]
    assert open(os.path.join(folder, "1", "model.onnx"), "rb").read() == open(artifact, "rb").read()
    parse(open(os.path.join(folder, "config.pbtxt")).read())
    # the same model folder again is kept as it is; another one (another instance kind) is refused without --force
    stamp = os.stat(os.path.join(folder, "config.pbtxt")).st_mtime_ns
    assert write_repository(artifact, tmp_path / "repo") == folder
    assert os.stat(os.path.join(folder, "config.pbtxt")).st_mtime_ns == stamp
    with pytest.raises(ArtifactError, match="exists; pass --force"):
        write_repository(artifact, tmp_path / "repo", instance_kind="cpu")
    write_repository(artifact, tmp_path / "repo", force=True, model_name="seg")
    write_repository(artifact, tmp_path / "repo", force=True)
    assert sorted(os.listdir(tmp_path / "repo")) == ["cgrseg_t", "seg"]  # nothing half-written left behind


def test_tensorrt_repository_serves_the_bare_plan(tmp_path):
    plan = b"ftrt" + np.arange(64, dtype=np.uint8).tobytes()
    info = EngineInfo("10.3.0", "NVIDIA Jetson AGX Orin", "8.7", SHA, "trtexec")
    engine = tmp_path / "m.engine"
    engine.write_bytes(pack(sample_manifest(dynamic=True).replace(format="engine", engine=info), plan))
    folder = write_repository(engine, tmp_path / "repo", platform="tensorrt")
    assert open(os.path.join(folder, "1", "model.plan"), "rb").read() == plan
    text = open(os.path.join(folder, "config.pbtxt")).read()
    assert parse(text).platform == "tensorrt_plan" and "TensorRT 10.3.0 plan" in text
    with pytest.raises(SegdeployError, match="serves an engine"):
        write_repository(onnx_artifact(tmp_path / "m.onnx", sample_manifest()), tmp_path / "r2", platform="tensorrt")
    bare = tmp_path / "bare.plan"
    bare.write_bytes(plan)
    with pytest.raises(ArtifactError, match="no segdeploy header"):
        write_repository(bare, tmp_path / "r3", platform="tensorrt")


def test_version_compatible_plan_tells_how_triton_must_be_started(tmp_path):
    """Triton's TensorRT backend loads a version-compatible plan only with version-compatible=true."""
    from segdeploy.export.triton import VERSION_COMPATIBLE_FLAG, serving_warnings

    info = EngineInfo("10.3.0", "NVIDIA L4", "8.9", SHA, "tensorrt-python", version_compatible=True)
    engine = tmp_path / "m.engine"
    engine.write_bytes(pack(sample_manifest(dynamic=True).replace(format="engine", engine=info), b"ftrt" + bytes(8)))
    folder = write_repository(engine, tmp_path / "repo", platform="tensorrt")
    text = open(os.path.join(folder, "config.pbtxt")).read()
    assert VERSION_COMPATIBLE_FLAG == "--backend-config=tensorrt,version-compatible=true"
    assert f"# this plan is version-compatible: start tritonserver with {VERSION_COMPATIBLE_FLAG}" in text
    assert parse(text).platform == "tensorrt_plan"
    assert serving_warnings("tensorrt", True) and not serving_warnings("tensorrt", False)
    assert not serving_warnings("onnxruntime", True)


def test_tensorrt_plan_built_on_each_release_is_served_bare(real_trt, tmp_path):
    """export --fmt triton --platform tensorrt: the engine built through the release's bindings, its bare plan in
    the repository, the release and the version-compatible note in the config."""
    from segdeploy.export.tensorrt import BuildOptions, export_engine
    from tensorrt_fakes import FAKE_PLAN, FakeHost, recording_tensorrt, write_onnx_artifact

    onnx_path = write_onnx_artifact(tmp_path / "cgrseg_t.onnx", manifest=sample_manifest(dynamic=True))
    host = FakeHost(trt=recording_tensorrt(real_trt))
    engine = export_engine(onnx_path, BuildOptions(version_compatible=True), host=host,
                           builders=("tensorrt-python", "trtexec")).path
    folder = write_repository(engine, tmp_path / "repo", platform="tensorrt")
    assert open(os.path.join(folder, "1", "model.plan"), "rb").read() == FAKE_PLAN
    text = open(os.path.join(folder, "config.pbtxt")).read()
    assert f"TensorRT {real_trt.__version__} plan" in text and "version-compatible=true" in text
    assert parse(text).max_batch_size == 4
