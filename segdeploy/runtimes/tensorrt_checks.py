"""What the TensorRT runner decides before and around TensorRT, as plain functions tested on the CPU: the engine's
header checked before deserialization (``preflight``), the I/O dtype table, the refusals of I/O numpy cannot hold,
the runtime's settings (DLA core, host code for version-compatible engines), the optimization profile that takes
the input shapes, and TensorRT's import with what to do when it is missing or too old.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from segdeploy.artifact.engine_header import compatibility_problem, read_header
from segdeploy.artifact.reader import caveats
from segdeploy.errors import ArtifactError, InputError, SegdeployError

BARE_PLAN_WARNING = ("has no segdeploy header (a bare plan from trtexec or build_engine.sh?): its TensorRT version and "
                     "GPU cannot be checked before TensorRT deserializes it, and its host code is allowed (a "
                     "version-compatible plan needs it)")
# TensorRT DataType member name -> numpy dtype name; None: TensorRT has it, numpy does not.
TRT_DTYPES = {"FLOAT": "float32", "HALF": "float16", "INT8": "int8", "INT32": "int32", "INT64": "int64",
              "BOOL": "bool", "UINT8": "uint8", "BF16": None, "FP8": None, "INT4": None, "FP4": None, "E8M0": None}


def numpy_dtype(trt_dtype_name: str, tensor: str) -> str:
    """The numpy dtype of a TensorRT I/O tensor, or one ArtifactError line for a type numpy cannot hold."""
    name = str(trt_dtype_name).rsplit(".", 1)[-1]
    if name not in TRT_DTYPES:
        raise ArtifactError(f"I/O tensor {tensor!r} has TensorRT type {name}, which this runner does not know")
    dtype = TRT_DTYPES[name]
    if dtype is None:
        raise ArtifactError(f"I/O tensor {tensor!r} is {name}, which has no numpy type: build the engine from an "
                            "artifact with float32/float16 I/O (the precision passes keep I/O types)")
    return dtype


def io_problem(tensor: str, format_name: str, location_name: str, shape_tensor: bool = False) -> str | None:
    """Why an I/O tensor cannot go through this runner's linear device buffers, or None."""
    if shape_tensor:
        return f"I/O tensor {tensor!r} is a shape tensor (host memory); this runner feeds image tensors only"
    if str(location_name).rsplit(".", 1)[-1] != "DEVICE":
        return f"I/O tensor {tensor!r} lives in host memory; this runner passes device buffers only"
    if str(format_name).rsplit(".", 1)[-1] != "LINEAR":
        return (f"I/O tensor {tensor!r} has the vectorized format {str(format_name).rsplit('.', 1)[-1]}; build the "
                "engine with linear I/O (segdeploy's builders do)")
    return None


def preflight(path: str, tensorrt_version: str, compute_capability: str, platform: str | None = None):
    """(manifest or None, plan offset, warnings) for an engine file, refusing a foreign one with one line before
    TensorRT sees it."""
    manifest, offset = read_header(path)
    if manifest is None:
        return None, 0, [f"{path} {BARE_PLAN_WARNING}"]
    problem = compatibility_problem(manifest.engine, tensorrt_version, compute_capability, platform)
    if problem:
        raise ArtifactError(f"{path}: {problem}")
    return manifest, offset, [f"{path} {note}" for note in caveats(manifest)]


@dataclass(frozen=True)
class RuntimeSettings:
    dla_core: int | None = None
    engine_host_code_allowed: bool = False


def runtime_settings(engine_info, dla_cores: int) -> RuntimeSettings:
    """What the TensorRT runtime must be told before deserializing: the DLA core an engine was built for (checked
    against the cores present), and host code for version-compatible engines (their embedded lean runtime). A bare
    plan (``engine_info`` None) says neither, so host code is allowed in case it is version-compatible (the
    warning says so)."""
    if engine_info is None:
        return RuntimeSettings(engine_host_code_allowed=True)
    if engine_info.dla_core is not None and engine_info.dla_core >= dla_cores:
        raise ArtifactError(f"the engine was built for DLA core {engine_info.dla_core}; this machine has "
                            f"{dla_cores} DLA core{'s' * (dla_cores != 1)}")
    return RuntimeSettings(engine_info.dla_core, bool(engine_info.version_compatible))


def choose_profile(profiles: list[dict], shapes: dict[str, tuple]) -> int:
    """The optimization profile for ``shapes`` (input name -> shape). ``profiles`` holds, per profile, input name
    -> (min, opt, max). Among those that take the shapes, the one whose opt is nearest (log-ratio) wins, so
    kernels tuned near the size run; one InputError line names the ranges when none takes them."""
    best, best_distance = None, math.inf
    for index, profile in enumerate(profiles):
        if not all(_inside(shapes[n], profile[n]) for n in shapes if n in profile):
            continue
        distance = sum(abs(math.log(max(d, 1) / max(o, 1))) for n, s in shapes.items() if n in profile
                       for d, o in zip(s, profile[n][1]))
        if distance < best_distance:
            best, best_distance = index, distance
    if best is None:
        ranges = " | ".join(", ".join(f"{n} {list(r[0])}..{list(r[2])}" for n, r in profile.items())
                            for profile in profiles)
        given = ", ".join(f"{n} {list(s)}" for n, s in shapes.items())
        raise InputError(f"no optimization profile of this engine takes {given}; it takes {ranges}")
    return best


def _inside(shape, profile_range) -> bool:
    lo, _, hi = profile_range
    return len(shape) == len(lo) and all(a <= d <= b for d, a, b in zip(shape, lo, hi))


def data_dependent(shape) -> bool:
    """An output whose shape is still unknown after every input shape is set (e.g. NonZero's)."""
    return any(int(d) < 0 for d in shape)


def dimension_names(engine_shape, manifest_shape) -> tuple:
    """The runner contract's shape: ints where static, the manifest's names (else "?") where dynamic."""
    names = list(manifest_shape) if manifest_shape is not None and len(manifest_shape) == len(engine_shape) else None
    return tuple(int(d) if int(d) >= 0 else (names[i] if names and isinstance(names[i], str) else "?")
                 for i, d in enumerate(engine_shape))


def import_tensorrt():
    try:
        import tensorrt
    except Exception as exc:  # ImportError, or an OSError when libnvinfer is missing behind the bindings
        raise SegdeployError(f"TensorRT does not load here ({type(exc).__name__}: {exc}); install it (pip install "
                             "tensorrt, or JetPack's python3-libnvinfer) on a machine with an NVIDIA GPU") from None
    return tensorrt
