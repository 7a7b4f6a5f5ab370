"""The thin TensorRT Python API builder (10.x and 11.x): parse the ONNX artifact, create the network as the plan
says (strongly typed; weakly typed with precision flags only for DLA on 10.x), add the optimization profiles, set
the config, merge the timing cache, build the serialized plan.

The ``tensorrt`` module is passed in, so on machines without TensorRT every call this makes is checked against
NVIDIA's real bindings of 10.3, the newest 10.x and 11.4 (imported over link stubs; recorders stand in for the
objects that need a GPU: tests/tensorrt_fakes.py, tests/export/tensorrt/test_export_engine.py).

DLA builds set what trtexec sets for ``--useDLACore`` (samples/common/sampleEngines.cpp): DLA as the default device
and the core, PREFER_PRECISION_CONSTRAINTS, FP16 (and INT8 for an int8 graph) on 10.x's weakly typed network, GPU
fallback when asked, else DIRECT_IO (reformatting would run on the GPU). TensorRT 11 removed the precision flags
(its networks are strongly typed) and keeps DIRECT_IO, so there the precision flags are left out.
"""
from __future__ import annotations

import contextlib
import os

from segdeploy.errors import SegdeployError
from segdeploy.export.tensorrt.plan import BuildPlan
from segdeploy.files.atomic import write_bytes_atomic
from segdeploy.tensorrt_host import version_tuple

HARDWARE_LEVEL_NAMES = {"ampere_plus": "AMPERE_PLUS", "same_compute_capability": "SAME_COMPUTE_CAPABILITY"}


def import_tensorrt():
    try:
        import tensorrt
    except Exception as exc:  # ImportError, or an OSError from a missing libnvinfer behind the bindings
        raise SegdeployError(f"the TensorRT Python package does not load here ({type(exc).__name__}: {exc})") from None
    return tensorrt


def parser_errors(parser) -> list[str]:
    """TensorRT's parser errors as "node (Op): description" lines."""
    lines = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        name = _call(error, "node_name") or f"node {_call(error, 'node')}"
        op = _call(error, "node_operator") or "?"
        lines.append(f"{name} ({op}): {error.desc()}")
    return lines


def _call(obj, method):
    try:
        return getattr(obj, method)()
    except Exception:  # older bindings lack node_name/node_operator
        return None


@contextlib.contextmanager
def _locked(path: str):
    """An exclusive lock beside ``path`` so concurrent builds merge their timing caches one at a time."""
    import fcntl

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


def configure(trt, builder, network, plan: BuildPlan, version: str):
    """The builder config for ``plan`` (everything but the timing cache)."""
    config = builder.create_builder_config()
    if plan.workspace_mb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_mb << 20)
    if plan.opt_level is not None:
        config.builder_optimization_level = plan.opt_level
    if not plan.tf32:  # TensorRT turns TF32 on in every new config; FP32 layers stay FP32 unless asked
        config.clear_flag(trt.BuilderFlag.TF32)
    for flag in plan.typing(version).precision_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag.upper()))
    for ranges in plan.profiles:
        profile = builder.create_optimization_profile()
        for r in ranges:
            profile.set_shape(r.name, r.min, r.opt, r.max)
        config.add_optimization_profile(profile)
    if plan.dla:
        cores = builder.num_DLA_cores
        if plan.dla_core >= cores:
            raise SegdeployError(f"DLA core {plan.dla_core} does not exist here ({cores} DLA cores)")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = plan.dla_core
        weakly_typed = not plan.typing(version).strongly_typed
        if weakly_typed:
            config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
        if plan.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        else:
            config.set_flag(trt.BuilderFlag.DIRECT_IO)
    if plan.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if plan.hardware_compat != "none":
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel,
                                                      HARDWARE_LEVEL_NAMES[plan.hardware_compat])
    return config


def build_serialized(trt, onnx_path: str, plan: BuildPlan, *, logger=None) -> tuple[bytes, bool]:
    """(serialized plan, strongly typed) for ``plan`` built from ``onnx_path`` with the ``trt`` module given."""
    version = trt.__version__
    plan.check_version(version)
    logger = logger or trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")
    builder = trt.Builder(logger)
    typing = plan.typing(version)
    flags = 0
    # 11.x is always strongly typed and deprecates the flag; 10.x needs it
    if typing.strongly_typed and version_tuple(version)[0] == 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(os.fspath(onnx_path)):
        lines = parser_errors(parser) or ["no detail"]
        more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
        raise SegdeployError(f"TensorRT {version}'s ONNX parser refused {onnx_path}: {lines[0]}{more}")
    config = configure(trt, builder, network, plan, version)
    if plan.timing_cache:
        with _locked(plan.timing_cache):
            cache = config.create_timing_cache(_read(plan.timing_cache))
        if not config.set_timing_cache(cache, ignore_mismatch=False):
            raise SegdeployError(f"TensorRT {version} refused the timing cache {plan.timing_cache} (written by "
                                 "another TensorRT release or GPU?): delete it or pass another --timing-cache")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise SegdeployError(f"TensorRT {version} could not build the engine (the TensorRT log above says why)")
    if plan.timing_cache:
        merge_timing_cache(config, plan.timing_cache)
    return bytes(serialized), typing.strongly_typed


def merge_timing_cache(config, path: str) -> None:
    """Write the build's timing cache back, combined with whatever another build saved meanwhile."""
    with _locked(path):
        cache = config.get_timing_cache()
        saved = _read(path)
        if saved:
            cache.combine(config.create_timing_cache(saved), True)
        write_bytes_atomic(path, bytes(cache.serialize()), force=True)
