"""The TensorRT build plan: everything a builder needs, decided from an artifact's manifest and the user's options
before any builder runs, so the Python API, trtexec and the build bundle all build the same engine.

The precision is the ONNX artifact's own (segdeploy's precision passes put float16 casts or Q/DQ nodes into the
graph), so a plan never turns precision flags on for a GPU build: TensorRT 11 builds every network strongly typed
and has no precision flags, and on 10.x a strongly typed network takes the graph's types as they are. The one
exception is DLA on TensorRT 10.x, whose builder (and trtexec, which sets kFP16 itself for DLA) works with the
weakly typed network plus the FP16/INT8 flags.

FP32 layers build as FP32: TensorRT runs them as TF32 by default on Ampere and newer (BuilderFlag.TF32 is set in a
new builder config), which moves an "FP32" engine ~1e-3 relative away from PyTorch; every builder clears it unless
``--tf32`` asks for it (Polygraphy does the same), and the engine header records the choice.

Impossible combinations are refused with one line here, at export time, not after a minutes-long build.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from segdeploy import flavours
from segdeploy.errors import ArtifactError, SegdeployError
from segdeploy.tensorrt_host import unsupported_release, version_tuple

HARDWARE_COMPAT = ("none", "ampere_plus", "same_compute_capability")
OPT_LEVELS = range(0, 6)
PRECISIONS = ("fp32", "fp16", "int8")
MAX_WORKSPACE_MB = 1 << 20  # 1 TiB: beyond any GPU's memory
MAX_DLA_CORE = 15  # Orin has 2; NvDLA's core index is a small integer
# Releases whose builder can target DLA: TensorRT 10.0-10.7 (JetPack 6 ships 10.3; 10.7 was the last 10.x with
# DLA) and 11.4.1+ on Jetson AGX Orin with JetPack 7.2.2 (DLA was absent from 11.0 to 11.3, 11.4.0 had it on
# Windows on ARM only). Each entry is (first, last) inclusive, by (major, minor, patch).
DLA_RELEASES = (((10, 0, 0), (10, 7, 99)), ((11, 4, 1), (11, 99, 99)))
# sameComputeCapability hardware compatibility first appears in TensorRT 10.9 (trtexec and the Python enum).
SAME_CC_SINCE = (10, 9)


@dataclass(frozen=True)
class ShapeRange:
    """One input of one optimization profile."""
    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    @property
    def static(self) -> bool:
        return self.min == self.max

    def contains(self, shape) -> bool:
        shape = tuple(shape)
        return len(shape) == len(self.min) and all(lo <= d <= hi for d, lo, hi in zip(shape, self.min, self.max))


@dataclass(frozen=True)
class BuildOptions:
    """What the user asked for (export --fmt trt flags)."""
    precision: str | None = None  # None: whatever the ONNX artifact carries
    workspace_mb: int | None = None  # None: TensorRT's default (the GPU's memory)
    opt_level: int | None = None  # None: TensorRT's default (3)
    timing_cache: str | None = None
    dla_core: int | None = None
    gpu_fallback: bool = False
    version_compatible: bool = False
    hardware_compat: str = "none"
    tf32: bool = False  # let TensorRT run FP32 layers as TF32 (Ampere+): faster, ~1e-3 relative off FP32


@dataclass(frozen=True)
class NetworkTyping:
    strongly_typed: bool
    precision_flags: tuple[str, ...] = ()  # weakly typed networks only: "fp16", "int8"


@dataclass(frozen=True)
class BuildPlan:
    model: str
    precision: str  # "fp32" | "fp16" | "int8" (the artifact's)
    profiles: tuple[tuple[ShapeRange, ...], ...]  # one tuple of input ranges per optimization profile
    workspace_mb: int | None = None
    opt_level: int | None = None
    timing_cache: str | None = None
    dla_core: int | None = None
    gpu_fallback: bool = False
    version_compatible: bool = False
    hardware_compat: str = "none"
    notes: tuple[str, ...] = field(default_factory=tuple)
    tf32: bool = False

    @property
    def static(self) -> bool:
        return all(r.static for profile in self.profiles for r in profile)

    @property
    def dla(self) -> bool:
        return self.dla_core is not None

    def typing(self, tensorrt_version: str) -> NetworkTyping:
        """How the network is created for this TensorRT: strongly typed everywhere, except DLA on 10.x."""
        major = (version_tuple(tensorrt_version) or (0,))[0]
        if major >= 11 or not self.dla:
            return NetworkTyping(True)
        return NetworkTyping(False, ("int8", "fp16") if self.precision == "int8" else ("fp16",))

    def check_version(self, tensorrt_version: str) -> None:
        """Refuse, with one line, what this TensorRT release cannot build."""
        problem = version_problem(self, tensorrt_version)
        if problem:
            raise SegdeployError(problem)

    def profile_dicts(self) -> list[dict]:
        """Profiles as the engine header stores them: {input: {"min", "opt", "max"}} per profile."""
        return [{r.name: {"min": list(r.min), "opt": list(r.opt), "max": list(r.max)} for r in profile}
                for profile in self.profiles]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["profiles"] = self.profile_dicts()
        data["notes"] = list(self.notes)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> BuildPlan:
        try:
            profiles = tuple(tuple(ShapeRange(name, tuple(r["min"]), tuple(r["opt"]), tuple(r["max"]))
                                   for name, r in profile.items()) for profile in data["profiles"])
            fields = {k: data[k] for k in ("model", "precision")}
            optional = {k: data[k] for k in ("workspace_mb", "opt_level", "timing_cache", "dla_core", "gpu_fallback",
                                             "version_compatible", "hardware_compat", "tf32") if k in data}
            return cls(**fields, **optional, profiles=profiles, notes=tuple(data.get("notes", ())))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ArtifactError(f"the build plan is incomplete or malformed ({type(exc).__name__}: {exc})") from None


def input_ranges(manifest) -> tuple[ShapeRange, ...]:
    """One optimization profile from the artifact's inputs: min/opt/max from their dynamic axes."""
    ranges = []
    for tensor in manifest.inputs:
        shapes = tensor.shapes()
        ranges.append(ShapeRange(tensor.name, tuple(shapes["min"]), tuple(shapes["opt"]), tuple(shapes["max"])))
    return tuple(ranges)


# What each setting is called where it comes from: export's flags, or a build plan's fields (build_plan.json).
FLAG_NAMES = {"precision": "--precision", "workspace_mb": "--workspace", "opt_level": "--opt-level",
              "timing_cache": "--timing-cache", "dla_core": "--dla-core", "gpu_fallback": "--gpu-fallback",
              "version_compatible": "--version-compatible", "hardware_compat": "--hardware-compat", "tf32": "--tf32"}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_settings(settings, names=None, source: str = "") -> None:
    """The one validation of a build's settings, whether they come from export's flags (BuildOptions) or from a
    build plan a bundle carries (BuildPlan): types, ranges and the combinations no builder takes, refused with one
    line before any builder runs. ``names`` maps a field to what the user calls it (FLAG_NAMES for flags)."""
    names = names or {}

    def fail(field_name: str, why: str):
        label = names.get(field_name, field_name)
        raise SegdeployError(f"{source}{label} {why}")

    precision = getattr(settings, "precision", None)
    if precision is not None and precision not in PRECISIONS:
        fail("precision", f"must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if settings.workspace_mb is not None and not (_is_int(settings.workspace_mb) and
                                                  1 <= settings.workspace_mb <= MAX_WORKSPACE_MB):
        fail("workspace_mb", f"must be a positive whole number of MiB (at most {MAX_WORKSPACE_MB}), not "
                             f"{settings.workspace_mb!r}")
    if settings.opt_level is not None and not (_is_int(settings.opt_level) and settings.opt_level in OPT_LEVELS):
        fail("opt_level", f"must be 0-5, not {settings.opt_level!r}")
    if settings.hardware_compat not in HARDWARE_COMPAT:
        fail("hardware_compat", f"is an unknown hardware compatibility {settings.hardware_compat!r}; one of "
                                f"{', '.join(HARDWARE_COMPAT)}")
    if settings.dla_core is not None and not (_is_int(settings.dla_core) and 0 <= settings.dla_core <= MAX_DLA_CORE):
        fail("dla_core", f"must be 0-{MAX_DLA_CORE}, not {settings.dla_core!r}")
    for flag in ("gpu_fallback", "version_compatible", "tf32"):
        if not isinstance(getattr(settings, flag), bool):
            fail(flag, f"must be true or false, not {getattr(settings, flag)!r}")
    if settings.timing_cache is not None and (not isinstance(settings.timing_cache, str) or
                                              not settings.timing_cache or "\x00" in settings.timing_cache):
        fail("timing_cache", f"must be a file name, not {settings.timing_cache!r}")
    if settings.dla_core is not None and settings.hardware_compat != "none":
        raise SegdeployError(f"{source}hardware-compatible engines run on the GPU only; "
                             f"{names.get('hardware_compat', 'hardware_compat')} and "
                             f"{names.get('dla_core', 'dla_core')} exclude each other")
    if settings.gpu_fallback and settings.dla_core is None:
        raise SegdeployError(f"{source}GPU fallback applies to DLA builds only: add "
                             f"{names.get('dla_core', 'dla_core')} N")


def check_options(options: BuildOptions) -> None:
    """Refuse, with one line, what the options alone rule out (before any export work runs)."""
    check_settings(options, FLAG_NAMES)


def check_plan(plan: BuildPlan, manifest=None, source: str = "the build plan") -> None:
    """Refuse, with one line, a build plan (one a bundle carries: nobody vouches for it) that no builder should
    run: the settings export's flags are checked for, well-formed profiles, and, given the ONNX artifact's
    ``manifest``, a plan for that model, precision and inputs whose every profile lies inside the sizes the
    artifact takes (a 100000x100000 profile on a static graph is refused here, not by TensorRT after minutes)."""
    where = f"{source}: "
    check_settings(plan, source=where)
    if not isinstance(plan.model, str) or not plan.model:
        raise SegdeployError(f"{where}model must name the model, not {plan.model!r}")
    if not plan.profiles or not all(isinstance(p, tuple) and p for p in plan.profiles):
        raise SegdeployError(f"{where}needs at least one optimization profile, each with its inputs")
    for index, profile in enumerate(plan.profiles):
        for r in profile:
            if not isinstance(r.name, str) or not r.name:
                raise SegdeployError(f"{where}profile {index} names an input {r.name!r}")
            shapes = (r.min, r.opt, r.max)
            if not all(isinstance(s, tuple) and s and all(_is_int(d) for d in s) for s in shapes) or \
                    len({len(s) for s in shapes}) != 1:
                raise SegdeployError(f"{where}profile {index} input {r.name!r}: min, opt and max must be shapes of "
                                     "the same rank (whole numbers)")
            if any(d < 1 for d in r.min) or not all(lo <= o <= hi for lo, o, hi in zip(*shapes)):
                raise SegdeployError(f"{where}profile {index} input {r.name!r}: 1 <= min <= opt <= max must hold "
                                     f"({list(r.min)}, {list(r.opt)}, {list(r.max)})")
    if not all(isinstance(note, str) for note in plan.notes):
        raise SegdeployError(f"{where}notes must be lines of text")
    if plan.dla_core is not None:
        if plan.precision not in ("fp16", "int8"):
            raise SegdeployError(f"{where}DLA runs FP16 and INT8 only, and the plan is {plan.precision}")
        if not plan.static:
            raise SegdeployError(f"{where}DLA takes static shapes only, and the plan's profiles are dynamic")
    if manifest is None:
        return
    if plan.model != manifest.model.name:
        raise SegdeployError(f"{where}it is for {plan.model!r}, and the ONNX artifact is {manifest.model.name!r}")
    if plan.precision != manifest.precision.mode:
        raise SegdeployError(f"{where}it says {plan.precision}, and the ONNX artifact is {manifest.precision.mode}: "
                             "the precision lives in the graph")
    takes = {r.name: r for r in input_ranges(manifest)}
    for index, profile in enumerate(plan.profiles):
        if sorted(r.name for r in profile) != sorted(takes):
            raise SegdeployError(f"{where}profile {index} gives inputs {[r.name for r in profile]}, the ONNX "
                                 f"artifact takes {sorted(takes)}")
        for r in profile:
            limit = takes[r.name]
            if len(r.min) != len(limit.min) or not all(
                    lo <= a and b <= hi for a, b, lo, hi in zip(r.min, r.max, limit.min, limit.max)):
                raise SegdeployError(f"{where}profile {index} input {r.name!r} spans {list(r.min)}..{list(r.max)}, "
                                     f"outside what the ONNX artifact takes ({list(limit.min)}..{list(limit.max)})")


def make_plan(manifest, options: BuildOptions | None = None) -> BuildPlan:
    """The build plan for an ONNX artifact described by ``manifest``, or one SegdeployError line saying why the
    requested engine cannot be built from it."""
    options = options or BuildOptions()
    precision = manifest.precision.mode
    if options.precision is not None and options.precision != precision:
        raise SegdeployError(f"the ONNX artifact is {precision}; a {options.precision} engine is built from the "
                             f"{options.precision} artifact (export --precision {options.precision})")
    flavour = flavours.get(manifest.precision.flavour) if precision == "int8" else None
    if flavour is not None and not flavour.builds_engine:
        raise SegdeployError(f"this int8 artifact is the {flavour.name!r} flavour ({flavour.not_for_engines}); "
                             "export the int8 artifact for TensorRT")
    check_options(options)
    profile = input_ranges(manifest)
    notes = []
    if options.dla_core is not None:
        _check_dla(options, precision, profile)
        if options.gpu_fallback:
            notes.append("layers DLA cannot run fall back to the GPU silently; inspect the engine to see which")
    for r in profile:
        if any(d <= 0 for d in r.min):
            raise SegdeployError(f"input {r.name!r}: the profile's smallest shape {list(r.min)} has a zero or "
                                 "negative dimension")
    plan = BuildPlan(model=manifest.model.name, precision=precision, profiles=(profile,),
                     workspace_mb=options.workspace_mb, opt_level=options.opt_level,
                     timing_cache=options.timing_cache, dla_core=options.dla_core, gpu_fallback=options.gpu_fallback,
                     version_compatible=options.version_compatible, hardware_compat=options.hardware_compat,
                     notes=tuple(notes), tf32=options.tf32)
    check_plan(plan, manifest)
    return plan


def _check_dla(options: BuildOptions, precision: str, profile) -> None:
    if precision not in ("fp16", "int8"):
        raise SegdeployError(f"DLA runs FP16 and INT8 only and this artifact is {precision}: export it with "
                             "--precision fp16 or int8")
    dynamic = [r.name for r in profile if not r.static]
    if dynamic:
        raise SegdeployError(f"DLA takes static shapes only and input(s) {', '.join(dynamic)} are dynamic: export "
                             "without --dynamic")


def version_problem(plan: BuildPlan, tensorrt_version: str) -> str | None:
    """Why TensorRT ``tensorrt_version`` cannot build ``plan``, or None."""
    version = version_tuple(tensorrt_version)
    if not version or version[0] < 10:
        return unsupported_release(tensorrt_version)
    full = (version + (0, 0, 0))[:3]
    if plan.dla and not any(first <= full <= last for first, last in DLA_RELEASES):
        return (f"TensorRT {tensorrt_version} cannot build for DLA: DLA needs TensorRT 10.0-10.7 (JetPack 6 ships "
                "10.3) or 11.4.1+ with JetPack 7.2.2")
    if plan.hardware_compat == "same_compute_capability" and full[:2] < SAME_CC_SINCE:
        return (f"same-compute-capability hardware compatibility needs TensorRT "
                f"{'.'.join(map(str, SAME_CC_SINCE))} or newer, not {tensorrt_version}; use ampere_plus")
    return None

