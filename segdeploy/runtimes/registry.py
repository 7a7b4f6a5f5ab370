"""The backends segdeploy can run: each one's facts (segdeploy.backends: what it consumes, which precisions it
runs, its capabilities) with a probe that says whether it is usable here and why not, and the factory of its runner.

Bench, predict, eval, validate, doctor and the commands learn from here (``BACKENDS``) which backends exist, what
each consumes, which one is the default and whether it is usable. Nothing imports a backend's heavy package unless
asked for its status.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from segdeploy import backends, tensorrt_host
from segdeploy.artifact.reader import LoadedArtifact
from segdeploy.backends import ONNXRUNTIME, OPENVINO, TENSORRT, TORCH, Backend
from segdeploy.errors import InputError, SegdeployError
from segdeploy.hostinfo import installed_distributions, package_version
from segdeploy.runtimes.tensorrt import TensorRTRunner


@dataclass
class BackendStatus:
    name: str
    available: bool
    version: str | None = None
    devices: list[str] = field(default_factory=list)
    reason: str = ""  # why it is unavailable, or a caveat when it is available
    consumes: str = ""
    distribution: str | None = None  # the installed distribution that provides it (onnxruntime vs onnxruntime-gpu)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class BackendRecord(Backend):
    """A backend's facts with what runs it here: its probe and its runner's factory."""
    probe: Callable[[], BackendStatus] | None = field(default=None, repr=False)
    factory: Callable[..., object] | None = field(default=None, repr=False)


# ----------------------------------------------------------------------------------------------------------------
# Probes


def _torch_status() -> BackendStatus:
    import torch

    devices = ["cpu"]
    reason = ""
    if torch.cuda.is_available():
        devices += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    elif torch.version.cuda is None:
        reason = f"CPU-only build of torch {torch.__version__}: no CUDA, no fp16, no CUDA graphs"
    else:
        reason = f"torch built with CUDA {torch.version.cuda} but no GPU is visible"
    return BackendStatus(TORCH, True, torch.__version__, devices, reason, distribution=TORCH)


def _onnxruntime_status() -> BackendStatus:
    found = installed_distributions(ONNXRUNTIME)
    if not found:
        return BackendStatus(ONNXRUNTIME, False, reason="ONNX Runtime is not installed (pip install onnxruntime, "
                                                          "or onnxruntime-gpu on NVIDIA machines)")
    dist, version = next(iter(found.items()))
    caveat = ""
    if len(found) > 1:
        caveat = (f"several ONNX Runtime distributions are installed ({', '.join(found)}) and overwrite each "
                  "other's files: keep one (pip uninstall the others, then reinstall it)")
    try:
        import onnxruntime
    except ImportError as exc:
        return BackendStatus(ONNXRUNTIME, False, version, reason=f"import onnxruntime failed: {exc}",
                             distribution=dist)
    return BackendStatus(ONNXRUNTIME, True, onnxruntime.__version__, onnxruntime.get_available_providers(),
                         caveat, distribution=dist)


def _openvino_status() -> BackendStatus:
    version = package_version(OPENVINO)
    if version is None:
        return BackendStatus(OPENVINO, False,
                             reason="OpenVINO is not installed (optional: pip install 'segdeploy[openvino]')")
    try:
        import openvino
        devices = openvino.Core().available_devices
    except Exception as exc:  # a broken install must not take doctor down with it
        return BackendStatus(OPENVINO, False, version, reason=f"OpenVINO fails to start: {exc}",
                             distribution=OPENVINO)
    return BackendStatus(OPENVINO, True, version, list(devices), distribution=OPENVINO)


def _tensorrt_status() -> BackendStatus:
    # found without importing it: pip wheels by their metadata, JetPack's apt install (no pip metadata) by module

    install = tensorrt_host.find_tensorrt()
    if not install.installed:
        return BackendStatus(TENSORRT, False, reason="TensorRT is not installed (pip install tensorrt, or JetPack's "
                                                       "python3-libnvinfer; needs an NVIDIA GPU with a CUDA build of "
                                                       "torch for the buffers)")
    version = install.version
    import torch

    if not torch.cuda.is_available():
        return BackendStatus(TENSORRT, False, version, reason=f"TensorRT {version} ({install.source}) is installed "
                                                                f"but torch {torch.__version__} sees no CUDA GPU")
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:
        return BackendStatus(TENSORRT, False, version, reason=f"import tensorrt failed: {exc}")
    devices = [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    note = "" if install.source.startswith("pip") else f"installed without pip metadata ({install.location})"
    return BackendStatus(TENSORRT, True, version, devices, reason=note)


# ----------------------------------------------------------------------------------------------------------------
# Factories


def _torch_runner(*, model=None, artifact=None, device="cpu", precision=None, threads=None, **options):
    if model is None:
        raise InputError("the torch backend runs a registered model: pass --model, not an artifact")
    from segdeploy.runtimes.torch import TorchRunner

    return TorchRunner(model, device=device, precision=precision or "fp32", threads=threads, **options)


def _check_cpu(backend: str, device: str) -> None:
    if device.lower() != "cpu":
        raise InputError(f"{backend} runs on the CPU here, not on {device!r}")


def _onnxruntime_runner(*, model=None, artifact=None, device="cpu", precision=None, threads=None, **options):
    _check_cpu(ONNXRUNTIME, device)
    if precision not in (None, "fp32"):
        raise InputError("onnxruntime runs the precision the artifact's graph carries; export an fp16 or int8 "
                         "artifact instead of asking for one")
    from segdeploy.runtimes.onnxruntime import OnnxRuntimeRunner

    return OnnxRuntimeRunner(artifact, threads=threads, **options)


def _openvino_runner(*, model=None, artifact=None, device="cpu", precision=None, threads=None, **options):
    _check_cpu(OPENVINO, device)
    from segdeploy.runtimes.openvino import OpenVinoRunner

    return OpenVinoRunner(artifact, precision=precision or "fp32", threads=threads, **options)


def _tensorrt_runner(*, model=None, artifact=None, device="cuda:0", precision=None, threads=None, **options):
    if precision not in (None, "fp32", "as-built"):
        raise InputError("tensorrt runs the precision its engine was built with")

    index = int(device.split(":")[1]) if device.startswith("cuda:") else 0
    return TensorRTRunner(artifact, device=index, **options)


_PROBES = {TORCH: (_torch_status, _torch_runner), ONNXRUNTIME: (_onnxruntime_status, _onnxruntime_runner),
           OPENVINO: (_openvino_status, _openvino_runner), TENSORRT: (_tensorrt_status, _tensorrt_runner)}
BACKENDS: dict[str, BackendRecord] = {
    name: BackendRecord(**vars(facts), probe=_PROBES[name][0], factory=_PROBES[name][1])
    for name, facts in backends.BACKENDS.items()
}


def get_backend(name: str) -> BackendRecord:
    try:
        return BACKENDS[name]
    except KeyError:
        raise InputError(f"unknown backend {name!r}; backends: {', '.join(BACKENDS)}") from None


def backend_status(name: str) -> BackendStatus:
    record = get_backend(name)
    status = record.probe()
    status.consumes = record.consumes
    return status


def all_backends() -> list[BackendStatus]:
    return [backend_status(name) for name in BACKENDS]


def require_backend(name: str) -> BackendStatus:
    status = backend_status(name)
    if not status.available:
        raise SegdeployError(f"backend {name} is not usable here: {status.reason}")
    return status


def cpu_backends() -> list[str]:
    """The CPU backends, fastest first (from the committed CPU matrix, benchmarks/results/vm-2026-11-21.md: OpenVINO
    fastest on 10 of 14 models and within 3 % on the rest, both 1.2-2.5x ahead of eager PyTorch)."""
    ranked = [r for r in BACKENDS.values() if r.cpu_rank is not None]
    return [r.name for r in sorted(ranked, key=lambda r: r.cpu_rank)]


def fastest_cpu_backend(consumes: tuple[str, ...] = ("model", "onnx")) -> str:
    """The CPU backend to use by default: the fastest usable here that takes what the caller has."""
    for name in cpu_backends():
        if BACKENDS[name].consumes in consumes and backend_status(name).available:
            return name
    return TORCH


def backends_for(kind: str) -> list[str]:
    """The backends that consume an artifact ``kind`` ("onnx", "engine") or the "model"."""
    return [r.name for r in BACKENDS.values() if r.consumes == kind]


def default_backend_for(kind: str) -> str:
    """The backend an artifact of ``kind`` runs on when none is named: the fastest usable CPU one, else the first."""
    names = backends_for(kind)
    if not names:
        raise InputError(f"no backend runs {kind} artifacts")
    cpu = [n for n in cpu_backends() if n in names]
    for name in cpu:
        if backend_status(name).available:
            return name
    return names[0]


def create_runner(backend: str, *, model=None, artifact=None, device: str = "cpu", precision: str | None = None,
                  threads: int | None = None, **options):
    """A runner of ``backend``: ``model`` (a registered name, DeployGraph or nn.Module) for the model backend,
    ``artifact`` (a path, or an artifact.reader.LoadedArtifact) for the others. ``options`` are backend-specific
    (torch: layout, compile, cuda_graphs, checkpoint, outputs, preprocess; onnxruntime: graph_optimization,
    providers; openvino: hint)."""
    record = get_backend(backend)
    require_backend(backend)
    if isinstance(artifact, LoadedArtifact):  # opened once: an ONNX runner takes the manifest read already
        if artifact.kind == "onnx" and record.consumes == "onnx":
            options.setdefault("manifest", artifact.manifest)
        artifact = artifact.path
    if record.consumes != "model" and artifact is None:
        raise InputError(f"the {backend} backend runs an exported artifact; export it first")
    if threads is not None and threads < 1:
        raise InputError(f"threads must be >= 1, not {threads}")
    return record.factory(model=model, artifact=artifact, device=device, precision=precision, threads=threads,
                          **options)
