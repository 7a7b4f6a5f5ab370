"""The exact trtexec command line that builds a plan, for TensorRT 10.x and 11.x.

Flags checked against trtexec's own option parser (samples/common/sampleOptions.cpp) in TensorRT 10.3 and 11.1:
both take --minShapes/--optShapes/--maxShapes, --memPoolSize=workspace:<n>M, --builderOptimizationLevel,
--timingCacheFile, --useDLACore, --allowGPUFallback, --versionCompatible, --hardwareCompatibilityLevel and
--skipInference. 10.x builds strongly typed only with --stronglyTyped (and then drops --fp16/--int8 with a
warning); 11.x is always strongly typed, has no precision flags, and --stronglyTyped is a deprecated no-op, so it
is left out. Both run FP32 layers as TF32 unless given --noTF32, which every plan passes unless it asks for TF32
(export --tf32). trtexec writes a bare plan; segdeploy adds its header when it runs trtexec itself.
"""
from __future__ import annotations

import shlex

from segdeploy.export.tensorrt.plan import BuildPlan, ShapeRange

HARDWARE_LEVELS = {"none": None, "ampere_plus": "ampere+", "same_compute_capability": "sameComputeCapability"}


def shape_spec(ranges: tuple[ShapeRange, ...], which: str) -> str:
    """``name:1x3x512x512,other:...``; names with trtexec's separators are wrapped in single quotes, as its help
    says."""
    parts = []
    for r in ranges:
        name = f"'{r.name}'" if any(ch in r.name for ch in ":,'") else r.name
        parts.append(f"{name}:{'x'.join(str(d) for d in getattr(r, which))}")
    return ",".join(parts)


def trtexec_command(plan: BuildPlan, onnx_path: str, engine_path: str, tensorrt_major: int,
                    trtexec: str = "trtexec") -> list[str]:
    """argv that builds ``plan`` from ``onnx_path`` into the bare plan ``engine_path`` with TensorRT
    ``tensorrt_major`` (10 or 11)."""
    if tensorrt_major not in (10, 11):
        raise ValueError(f"trtexec command lines exist for TensorRT 10 and 11, not {tensorrt_major}")
    if len(plan.profiles) != 1:
        raise ValueError("trtexec builds one optimization profile per command line")
    argv = [trtexec, f"--onnx={onnx_path}", f"--saveEngine={engine_path}"]
    typing = plan.typing(f"{tensorrt_major}")
    if tensorrt_major == 10 and typing.strongly_typed:
        argv.append("--stronglyTyped")
    argv += [f"--{flag}" for flag in typing.precision_flags]
    if not plan.tf32:
        argv.append("--noTF32")
    (profile,) = plan.profiles
    dynamic = tuple(r for r in profile if not r.static)
    if dynamic:
        # static inputs take their shapes from the model; trtexec wants shapes only for the dynamic ones
        argv += [f"--{which}Shapes={shape_spec(dynamic, which)}" for which in ("min", "opt", "max")]
    if plan.workspace_mb is not None:
        argv.append(f"--memPoolSize=workspace:{plan.workspace_mb}M")
    if plan.opt_level is not None:
        argv.append(f"--builderOptimizationLevel={plan.opt_level}")
    if plan.timing_cache:
        argv.append(f"--timingCacheFile={plan.timing_cache}")
    if plan.dla_core is not None:
        argv.append(f"--useDLACore={plan.dla_core}")
        if plan.gpu_fallback:
            argv.append("--allowGPUFallback")
    if plan.version_compatible:
        argv.append("--versionCompatible")
    level = HARDWARE_LEVELS[plan.hardware_compat]
    if level:
        argv.append(f"--hardwareCompatibilityLevel={level}")
    argv.append("--skipInference")
    return argv


def command_line(argv: list[str]) -> str:
    return shlex.join(argv)
