"""What a benchmark run is asked to do, parsed and checked before anything runs."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from segdeploy import backends
from segdeploy.artifact.formats import format_of
from segdeploy.artifact.reader import LoadedArtifact, open_artifact
from segdeploy.errors import InputError
from segdeploy.evaluation.bench.protocol import Protocol
from segdeploy.evaluation.bench.streams import MAX_STREAMS
from segdeploy.export.cache import DEFAULT_CACHE_DIR
from segdeploy.export.trace import DEFAULT_OPSET
from segdeploy.runtimes.registry import get_backend, require_backend

MAX_BATCH = 4096  # the top of --max-batch; what fits in memory is checked apart


@dataclass
class BenchRequest:
    models: list[str] = field(default_factory=list)
    artifact: str | None = None
    backends: list[str] = field(default_factory=lambda: [backends.TORCH])
    height: int = 512
    width: int = 512
    batches: list = field(default_factory=lambda: [1])  # ints and/or "max"
    threads: int | None = None
    device: str = "cpu"
    precision: str = "fp32"
    layouts: list[str] = field(default_factory=lambda: ["nchw"])  # torch only
    compile: bool = False
    cuda_graphs: bool = False
    checkpoint: str | None = None
    export_dir: str = DEFAULT_CACHE_DIR
    opset: int = DEFAULT_OPSET
    simplify: bool = True
    force_export: bool = False
    max_batch_limit: int = 64
    measure_peak: bool = True
    protocol: Protocol = field(default_factory=Protocol)
    streams: list[int] = field(default_factory=lambda: [1])  # requests in flight at once (throughput mode > 1)


def parse_batches(text: str) -> list:
    """"1,2,4" -> [1, 2, 4]; "max" and "1,max" allowed."""
    out = []
    for part in str(text).split(","):
        part = part.strip().lower()
        if part == "max":
            out.append("max")
            continue
        try:
            value = int(part)
        except ValueError:
            raise InputError(f"--batch takes positive integers and/or 'max' (e.g. 1,2,4,8 or max), not {text!r}") \
                from None
        if value < 1:
            raise InputError(f"--batch values must be >= 1, got {value}")
        out.append(value)
    return list(dict.fromkeys(out))


def parse_streams(text: str) -> list[int]:
    """"1,2,4" -> [1, 2, 4]: requests in flight at once; 1 is the single synchronous stream."""
    out = []
    for part in str(text).split(","):
        try:
            value = int(part.strip())
        except ValueError:
            raise InputError(f"--streams takes positive integers (e.g. 1,2,4), not {text!r}") from None
        if not 1 <= value <= MAX_STREAMS:
            raise InputError(f"--streams values must be 1 to {MAX_STREAMS}, not {value}")
        out.append(value)
    return list(dict.fromkeys(out))


def check_device(device: str) -> None:
    import torch

    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise InputError(f"--device takes cpu, cuda or cuda:N, not {device!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: torch {torch.__version__} sees no CUDA GPU here")


def check_request(request: BenchRequest) -> LoadedArtifact | None:
    """Fail early, with one line, on anything the run would otherwise trip over halfway. Returns the artifact opened
    (read and checked once, for its runners), if the request names one."""
    from segdeploy.models import get_spec

    if not request.models and not request.artifact:
        raise InputError("give --model NAME[,NAME...] or --artifact FILE")
    if request.artifact and len(request.models) > 1:
        raise InputError("--artifact benchmarks one model; give at most one --model to name it")
    kind = "model"
    artifact_manifest = opened = None
    if request.artifact:
        if not os.path.isfile(request.artifact):
            raise InputError(f"artifact not found: {request.artifact}")
        kind = format_of(request.artifact).kind
        # a corrupt or lying artifact is one line now, not a failed row per backend later
        opened = open_artifact(request.artifact, required=False)
        manifest = artifact_manifest = opened.manifest
        if manifest is not None and request.models and request.models[0] != manifest.model.name:
            raise InputError(f"{request.artifact} was exported from {manifest.model.name}, not {request.models[0]}")
        if manifest is not None:
            from segdeploy.models.facts import check_manifest

            check_manifest(manifest, request.artifact)
            check_profile(request, manifest)
    for name in request.models:
        spec = get_spec(name)
        m = spec.size_multiple
        if request.height % m or request.width % m:
            raise InputError(f"{name} needs a size that is a multiple of {m}, not {request.height}x{request.width}")
    if request.height <= 0 or request.width <= 0:
        raise InputError("the size must be positive")
    if not request.backends:
        raise InputError("no backend given")
    check_device(request.device)
    for backend in request.backends:
        record = get_backend(backend)
        if request.artifact and record.consumes != kind:
            raise InputError(f"backend {backend} runs {record.consumes} artifacts, not {kind}"
                             + ("; use --model" if record.consumes == "model" else ""))
        if request.precision not in record.precisions:
            raise InputError(f"backend {backend} runs {' or '.join(record.precisions)}, not {request.precision}")
        if record.devices == "cpu" and request.device != "cpu":
            raise InputError(f"backend {backend} runs on the CPU here; --device {request.device} is for the model "
                             "backend")
        require_backend(backend)
    if request.precision == "fp16" and not request.device.startswith("cuda") and any(
            get_backend(b).consumes == "model" for b in request.backends):
        raise InputError("the model backend runs fp16 on CUDA only (PyTorch's CPU half kernels are reference code)")
    if request.threads is not None and request.threads < 1:
        raise InputError("--threads must be >= 1")
    if any(s > 1 for s in request.streams):
        served = [b for b in request.backends if not get_backend(b).streams]
        if served:
            raise InputError(f"--streams above 1 runs parallel streams of an ONNX artifact (onnxruntime sessions, "
                             f"OpenVINO's throughput mode); {', '.join(served)} runs one stream here")
    if not 1 <= request.max_batch_limit <= MAX_BATCH:
        raise InputError(f"--max-batch takes 1 to {MAX_BATCH}, not {request.max_batch_limit}")
    check_memory(request, artifact_manifest)
    return opened


def check_profile(request: BenchRequest, manifest) -> None:
    """The batches (and, for a dynamic artifact, the size) asked for must be ones the artifact takes: a fixed batch
    of 1 cannot be timed at 4, and that is the request's fault, not a failed measurement."""
    profile = manifest.profile
    for batch in request.batches:
        if batch == "max":
            if profile.batch.min == profile.batch.max:
                raise InputError(f"{request.artifact} has a fixed batch of {profile.batch.opt}; --batch max needs a "
                                 "dynamic batch (export --dynamic)")
        elif batch not in profile.batch:
            fixed = profile.batch.min == profile.batch.max
            raise InputError(f"{request.artifact} takes batch {profile.batch.min}"
                             + ("" if fixed else f"-{profile.batch.max}") + f", not {batch}"
                             + (f"; pass --batch {profile.batch.opt}" if fixed else ""))
    if not profile.static:
        problem = profile.check(profile.batch.min, request.height, request.width)
        if problem:
            raise InputError(f"--size {request.height}x{request.width} is outside {request.artifact}'s profile "
                             f"({problem}; it takes {profile.describe()})")


def check_memory(request: BenchRequest, manifest=None) -> None:
    """Refuse a batch or size whose forward pass cannot fit in the memory available now, with the estimate (a
    batch of 4096 would otherwise grow for minutes before failing)."""
    from segdeploy.models import footprint

    if request.device != "cpu":
        return
    if manifest is not None:
        models = [manifest.model.name]
        sizes = [(manifest.profile.height.opt, manifest.profile.width.opt)] if manifest.profile.static else \
            [(request.height, request.width)]
    else:
        models, sizes = request.models, [(request.height, request.width)]
    batches = [b for b in request.batches if b != "max"]
    for model in models:
        for height, width in sizes:
            for batch in batches:
                need = footprint.forward_bytes(model, batch, height, width)
                largest = footprint.largest_batch(model, height, width)
                footprint.check_fits(need, f"{model} at batch {batch}, {height}x{width}",
                                     f"the largest batch that fits now is about {largest}" if largest else
                                     "even batch 1 does not fit at this size: try a smaller --size")


def device_label(request: BenchRequest, machine: dict) -> str:
    if request.device.startswith("cuda"):
        return ", ".join(machine.get("gpus") or ["cuda"])
    cpu = machine["cpu"]
    return f"{cpu['model']} ({request.threads or cpu['usable_cores']} threads)"

