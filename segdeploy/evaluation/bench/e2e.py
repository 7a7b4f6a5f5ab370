"""End-to-end latency, as a user of a deployed model feels it: an encoded photo in, a colour mask at the photo's size
out. Stages, each timed on the host around exactly what ``predict`` does:

* decode: the JPEG/PNG bytes to a uint8 BGR image (OpenCV), from memory, so disk speed is not measured;
* preprocess: the resize to the network size by the test resize policy, then (host pipeline) normalisation and the
  NCHW float layout, or (in-graph pipeline) only the batch dimension: the graph normalises uint8 NHWC itself;
* network: the runner's call;
* upsample/argmax: the logits resized bilinearly to the photo's size and the argmax over classes (host), or the
  graph's mask at the network size resized nearest to the photo's size (in-graph: ``--outputs mask --preprocess``);
* colour mask: the palette lookup that makes the mask a picture.

Two pipelines per (model, backend): ``host`` (the plain export: float NCHW in, logits out) and ``in-graph`` (uint8
NHWC images in, uint8 labels out). Both run dynamic exports from the shared export cache, as ``predict`` does for
photos of mixed sizes. Rows are interleaved: every round runs every (target, photo) pair once, so load that comes
and goes hits all alike; the first round warms up and is not counted.
"""
from __future__ import annotations

import datetime as _dt
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from segdeploy import backends
from segdeploy.datasets import synthetic
from segdeploy.errors import InputError, SegdeployError
from segdeploy.evaluation.bench.protocol import Progress, Protocol
from segdeploy.evaluation.segment import STAGE_TEXT, STAGES, Segmenter, open_segmenter, stage_split
from segdeploy.export.cache import DEFAULT_CACHE_DIR, cached_onnx
from segdeploy.export.trace import DEFAULT_OPSET
from segdeploy.hostinfo import machine_info
from segdeploy.media import resolve_source
from segdeploy.models import get_spec
from segdeploy.preprocess import read_image
from segdeploy.runtimes.registry import create_runner, get_backend, require_backend

SCHEMA = "segdeploy.bench.e2e/1"
PIPELINES = {"host": {"outputs": "logits", "preprocess": False}, "in-graph": {"outputs": "mask", "preprocess": True}}
# Photo sizes of the default set (height, width): VGA, HD, Full HD, a 12 MP phone camera.
CAMERA_SIZES = ((480, 640), (720, 1280), (1080, 1920), (3024, 4032))
DEFAULT_JPEG_QUALITY = 90


@dataclass
class Photo:
    name: str
    data: bytes  # the encoded file
    height: int
    width: int
    source: str


@dataclass
class E2ERequest:
    models: list[str] = field(default_factory=list)
    backends: list[str] = field(default_factory=lambda: [backends.ONNXRUNTIME])
    pipelines: list[str] = field(default_factory=lambda: list(PIPELINES))
    images: str | None = None
    checkpoint: str | None = None
    threads: int | None = None
    protocol: Protocol = field(default_factory=lambda: Protocol(warmup_s=0.0, min_s=3.0, min_iters=5))
    cache_dir: str = DEFAULT_CACHE_DIR
    opset: int = DEFAULT_OPSET
    force_export: bool = False


def default_photos() -> list[Photo]:
    """Photo-like scenes at camera sizes, made from the photographs the package ships (the synthetic dataset's
    textures, public domain and CC0), JPEG-encoded: a fixed set, so runs on different machines see the same bytes."""
    import cv2

    tiles = synthetic.texture_tiles(16)
    photos = []
    for index, (height, width) in enumerate(CAMERA_SIZES):
        rng = np.random.default_rng([0, index])
        rgb, _ = synthetic.make_scene(height, width, tiles, rng, synthetic.STYLES["clean"])
        ok, encoded = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, DEFAULT_JPEG_QUALITY])
        if not ok:
            raise SegdeployError("OpenCV could not encode a JPEG")
        photos.append(Photo(f"scene_{height}x{width}.jpg", encoded.tobytes(), height, width,
                            f"synthetic scene of the package's texture photographs, JPEG q{DEFAULT_JPEG_QUALITY}"))
    return photos


def load_photos(text: str) -> list[Photo]:
    """The images of a file, folder or glob, read into memory (each must decode)."""
    source = resolve_source(text)
    if source.kind == "video":
        raise InputError(f"--images takes images, not a video: {text}")
    photos = []
    for path in source.paths:
        image = read_image(path)  # one clear line for a file that does not decode
        with open(path, "rb") as f:
            data = f.read()
        photos.append(Photo(os.path.basename(path), data, image.shape[0], image.shape[1], path))
    return photos


def decode(photo: Photo) -> np.ndarray:
    import cv2

    return cv2.imdecode(np.frombuffer(photo.data, np.uint8), cv2.IMREAD_COLOR)


def open_target(request: E2ERequest, model: str, backend: str, pipeline: str, progress: Progress | None
                ) -> Segmenter:
    """The segmenter of one (model, backend, pipeline): a dynamic export from the cache for ONNX backends, the
    PyTorch model itself (host pipeline only) for the model backend."""
    record = get_backend(backend)
    if record.consumes == "model":
        return open_segmenter(model=model, checkpoint=request.checkpoint, backend=backend, threads=request.threads)
    if record.consumes != "onnx":
        raise InputError(f"bench --e2e runs ONNX backends and the model backend, not {backend} ({record.consumes})")
    say = (lambda step, *_: progress(f"{model} {pipeline}: {step}", 0.0)) if progress else None
    path = cached_onnx(model, checkpoint=request.checkpoint, height=512, width=512, dynamic=True,
                       opset=request.opset, cache_dir=request.cache_dir, rebuild=request.force_export, progress=say,
                       **PIPELINES[pipeline])
    runner = create_runner(backend, artifact=path, threads=request.threads)
    m = runner.manifest
    return Segmenter(runner, m.preprocessing, m.profile, m.model.class_names, m.model.palette, None,
                     f"{model} on {backend} ({pipeline})", model=model)


def segment_photo(segmenter: Segmenter, photo: Photo) -> tuple[dict, np.ndarray, tuple[int, int]]:
    """One end-to-end pass: (stage -> ms, the labels, the network size)."""
    start = time.perf_counter()
    image = decode(photo)
    decoded = time.perf_counter()
    result = segmenter(image)
    coloured = time.perf_counter()
    segmenter.colour(result.labels)
    done = time.perf_counter()
    stages = {"decode": (decoded - start) * 1e3, **result.stages_ms, "mask": (done - coloured) * 1e3}
    return stages, result.labels, result.network_size


def check(request: E2ERequest) -> None:
    if not request.models:
        raise InputError("bench --e2e needs --model NAME[,NAME...]")
    for model in request.models:
        get_spec(model)
    bad = [p for p in request.pipelines if p not in PIPELINES]
    if bad or not request.pipelines:
        raise InputError(f"--pipelines takes {' and/or '.join(PIPELINES)}, not {','.join(request.pipelines)!r}")
    for backend in request.backends:
        if get_backend(backend).consumes not in ("onnx", "model"):
            raise InputError(f"bench --e2e runs ONNX backends and the model backend, not {backend}")
        require_backend(backend)
    if request.images:
        resolve_source(request.images)  # a source that is not there: refused before the models load


def run_e2e(request: E2ERequest, progress: Progress | None = None) -> dict:
    """Time every (model, backend, pipeline, photo) end to end, interleaved; returns the report."""
    check(request)
    machine = machine_info()
    threads = request.threads or machine["cpu"]["usable_cores"]
    request = E2ERequest(**{**request.__dict__, "threads": threads})
    photos = load_photos(request.images) if request.images else default_photos()
    targets, rows = [], []
    try:
        for model in request.models:
            for backend in request.backends:
                for pipeline in request.pipelines:
                    if get_backend(backend).consumes == "model" and pipeline != "host":
                        continue  # the PyTorch model has no in-graph pre/post-processing
                    segmenter = open_target(request, model, backend, pipeline, progress)
                    targets.append((model, backend, pipeline, segmenter))
        for photo in photos:
            for _, _, _, segmenter in targets:
                segmenter.check_image(photo.height, photo.width, photo.name)
        samples = {(t, p): [] for t in range(len(targets)) for p in range(len(photos))}
        masks: dict = {}
        start, rounds = time.perf_counter(), 0
        while True:  # round 0 warms up (shapes compile, caches fill); the rest are timed
            for p, photo in enumerate(photos):
                for t, (model, backend, pipeline, segmenter) in enumerate(targets):
                    if progress:
                        progress(f"round {rounds}: {model} {backend} {pipeline} {photo.name}",
                                 min(1.0, rounds / max(1, request.protocol.min_iters)))
                    stages, labels, network = segment_photo(segmenter, photo)
                    if rounds == 0:
                        masks[(t, p)] = (labels, network)
                    else:
                        samples[(t, p)].append(stages)
            rounds += 1
            timed = rounds - 1
            if timed >= request.protocol.min_iters and time.perf_counter() - start >= request.protocol.min_s:
                break
        for t, (model, backend, pipeline, segmenter) in enumerate(targets):
            for p, photo in enumerate(photos):
                labels, network = masks[(t, p)]
                hosts = [u for u, other in enumerate(targets) if other[0] == model and other[2] == "host"]
                hosts.sort(key=lambda u: targets[u][1] != backend)  # the same backend's host pipeline first
                reference = masks[(hosts[0], p)][0] if hosts else None
                split = stage_split(samples[(t, p)])
                rows.append({"model": model, "backend": backend, "pipeline": pipeline, "photo": photo.name,
                             "image": [photo.height, photo.width], "network": list(network),
                             "rounds": len(samples[(t, p)]), **split,
                             "agreement_with_host": None if reference is None or pipeline == "host" else
                             float((labels == reference).mean() * 100),
                             "samples_ms": samples[(t, p)], "runner": segmenter.runner.describe()})
    finally:
        for *_, segmenter in targets:
            segmenter.close()
    return {"schema": SCHEMA, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "threads": threads, "protocol": asdict(request.protocol) | {"warm_up_rounds": 1},
            "photos": [{"name": p.name, "size": [p.height, p.width], "bytes": len(p.data), "source": p.source}
                       for p in photos], "stages": {s: STAGE_TEXT[s] for s in STAGES}, "machine": machine,
            "rows": rows}


COLUMNS = ["Model", "Backend", "Pipeline", "Image", "Network", "End to end p50 ms", *(STAGE_TEXT[s] for s in STAGES),
           "Agreement %"]


def table_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    out = []
    for r in report["rows"]:
        cells = [r["model"], r["backend"], r["pipeline"], "x".join(map(str, r["image"])),
                 "x".join(map(str, r["network"])), f"{r['total_p50_ms']:.1f}"]
        for stage in STAGES:
            v = r["stages"].get(stage)
            cells.append("-" if v is None else f"{v['p50_ms']:.1f} ({v['share']:.0%})")
        agreement = r.get("agreement_with_host")
        cells.append("-" if agreement is None else f"{agreement:.2f}")
        out.append(cells)
    return COLUMNS, out


def to_markdown(report: dict) -> str:
    columns, rows = table_rows(report)
    cpu = report["machine"]["cpu"]
    lines = [f"# segdeploy bench --e2e ({cpu['model']}, {report['threads']} threads)", "",
             f"Created {report['created']}; load {report['machine']['load_average']}; "
             f"{report['protocol']['min_iters']}+ interleaved rounds after one warm-up round; each stage's p50 (ms) "
             "and its share of the summed stage time. Agreement: label agreement of the in-graph pipeline's mask "
             "with the host pipeline's (the graph takes the argmax at the network size, the host at the image's; "
             "the same backend's host pipeline where it ran).",
             "", "Photos: " + "; ".join(f"{p['name']} ({p['size'][0]}x{p['size'][1]}, {p['bytes'] // 1024} KiB)"
                                        for p in report["photos"]), "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
