"""The recorders refuse what NVIDIA's real module of the release refuses: a test that passes against them passes
against the release, not against a hand-written idea of it."""
from __future__ import annotations

import pathlib

import pytest

from tensorrt_fakes import NotInRelease, recording_tensorrt, signatures


def builder_and_config(real_trt):
    trt = recording_tensorrt(real_trt)
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    return trt, builder, builder.create_builder_config()


def test_the_real_module_cannot_build_here(real_trt):
    with pytest.raises(TypeError, match="nullptr"):
        real_trt.Builder(real_trt.Logger(real_trt.Logger.WARNING))


def test_signatures_come_from_the_release(real_trt):
    (sig,) = signatures(real_trt.IBuilderConfig.set_timing_cache)
    assert [p.name for p in sig.params] == ["cache", "ignore_mismatch"] and sig.returns == "bool"
    assert len(signatures(real_trt.Runtime.deserialize_cuda_engine)) >= 1


def test_names_the_release_lacks_fail(real_trt):
    trt, builder, config = builder_and_config(real_trt)
    with pytest.raises(NotInRelease, match="has no attribute 'max_workspace_size'"):
        config.max_workspace_size = 1 << 30  # removed in TensorRT 10
    with pytest.raises(NotInRelease, match="build_engine"):
        builder.build_engine(None, config)  # removed in TensorRT 10
    if real_trt.__version__.startswith("11."):
        with pytest.raises(NotInRelease, match="platform_has_fast_fp16"):
            builder.platform_has_fast_fp16  # noqa: B018 (removed in 11)
        assert "FP16" not in real_trt.BuilderFlag.__members__
    else:
        assert builder.platform_has_fast_fp16 is False
    with pytest.raises(NotInRelease):
        trt.IInt8EntropyCalibrator3  # noqa: B018 (never existed)


def test_arguments_are_checked_against_the_signature(real_trt):
    trt, builder, config = builder_and_config(real_trt)
    cache = config.create_timing_cache(b"")
    with pytest.raises(NotInRelease, match="missing ignore_mismatch"):
        config.set_timing_cache(cache)
    with pytest.raises(NotInRelease, match="no keyword 'ignore'"):
        config.set_timing_cache(cache, ignore=False)
    with pytest.raises(NotInRelease, match="is not a BuilderFlag"):
        config.set_flag(real_trt.DeviceType.DLA)
    with pytest.raises(NotInRelease, match="is not a MemoryPoolType"):
        config.set_memory_pool_limit("WORKSPACE", 1 << 20)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, trt.Logger(trt.Logger.WARNING))
    with pytest.raises(NotInRelease, match="PosixPath is not a str"):
        parser.parse_from_file(pathlib.Path("m.onnx"))
    with pytest.raises(NotInRelease, match="takes 2 arguments"):
        trt.OnnxParser(network, trt.Logger(trt.Logger.WARNING), 3)


def test_property_writes_must_be_writable_and_typed(real_trt):
    trt, builder, config = builder_and_config(real_trt)
    with pytest.raises(NotInRelease, match="read-only"):
        builder.num_DLA_cores = 2
    with pytest.raises(NotInRelease, match="is not a DeviceType"):
        config.default_device_type = "DLA"
    with pytest.raises(NotInRelease, match="not a property"):
        config.set_flag = None
    config.DLA_core = 1
    assert config.DLA_core == 1 and trt.called("IBuilderConfig", "DLA_core") == [(1,)]
