"""Image in, label map out, on any backend: what predict and eval do with a runner. Written once against the runner
contract and the manifest, so a model on PyTorch, an ONNX artifact on ONNX Runtime or OpenVINO, and (later) an
engine all segment an image the same way: the network input size from the resize policy (a static artifact's own
size), preprocessing as the manifest says, and the mask at the image's size (logits resized bilinearly then argmax,
as mmseg does; an in-graph mask resized nearest)."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from segdeploy import flavours, models, preprocess
from segdeploy.artifact import manifest as mf
from segdeploy.artifact.formats import format_of
from segdeploy.artifact.reader import LoadedArtifact, open_artifact
from segdeploy.errors import InputError
from segdeploy.evaluation.feeds import image_feed, network_size
from segdeploy.export.cache import DEFAULT_CACHE_DIR, cached_onnx
from segdeploy.export.manifest_builder import DYNAMIC_SIZE
from segdeploy.hostinfo import memory_available_bytes
from segdeploy.models import footprint
from segdeploy.models.checkpoints import checkpoint_dataset_meta
from segdeploy.runtimes import fastest
from segdeploy.runtimes.registry import backends_for, create_runner, default_backend_for, get_backend

# Host memory a segmented image costs beyond the network, per image pixel: the image (3 bytes), its labels (1, or 4
# above 255 classes), the colour mask (3), the overlay (3), the encoded PNG (up to 3) and the label PNG's copy (2),
# with room to spare; plus the bands logits_to_mask works in. Checked before an image is decoded: 64 MP photos
# segment in about 3.5 GB (benchmarks/README.md), a 40000x40000 scan would not.
BYTES_PER_IMAGE_PIXEL = 24
POSTPROCESS_BYTES = 512 << 20


STAGES = ("decode", "preprocess", "network", "postprocess", "mask")
STAGE_TEXT = {"decode": "decode", "preprocess": "preprocess", "network": "network",
              "postprocess": "upsample/argmax", "mask": "colour mask"}


@dataclass
class Segmentation:
    labels: np.ndarray  # (H, W) class indices at the image's size
    network_size: tuple[int, int]
    latency_ms: float  # the runner's own time for the forward pass
    # wall milliseconds of the stages this call ran: preprocess (resize, normalise, layout), network (the runner's
    # call), postprocess (logits to labels at the image's size: bilinear upsample and argmax, or the in-graph mask's
    # nearest resize); the caller adds decode and mask
    stages_ms: dict = field(default_factory=dict)


class Segmenter:
    """A runner plus how to feed it: ``preprocessing`` (a manifest's), ``profile`` (None: any size the policy gives),
    ``align_corners`` and the names of the classes."""

    def __init__(self, runner, preprocessing: mf.Preprocessing, profile: mf.Profile | None, class_names, palette,
                 size: tuple[int, int] | None = None, description: str = "", model: str | None = None):
        self.runner, self.preprocessing, self.profile = runner, preprocessing, profile
        self.class_names, self.palette = list(class_names), [tuple(c) for c in palette]
        self.size, self.description, self.model = size, description, model
        self.backend_reason: str | None = None  # why this backend, when the caller did not name one
        self.input = runner.inputs()[0]
        self.output = runner.outputs()[0]
        self.batch = profile.batch.opt if profile is not None and profile.static else 1

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_graph(self) -> dict:
        """Which ends of the pipeline the graph itself does: normalisation (uint8 images in), the mask (labels out)."""
        return {"preprocess": self.input.dtype == "uint8", "postprocess": len(self.output.shape) == 3}

    def __call__(self, image_bgr: np.ndarray) -> Segmentation:
        start = time.perf_counter()
        size, feed = self.prepare(image_bgr)
        prepared = time.perf_counter()
        out = self.run(feed)
        ran = time.perf_counter()
        labels = self.finish(out, image_bgr.shape[:2])
        done = time.perf_counter()
        stages = {"preprocess": (prepared - start) * 1e3, "network": (ran - prepared) * 1e3,
                  "postprocess": (done - ran) * 1e3}
        return Segmentation(labels, tuple(size), self.runner.last_timing.host_ms, stages)

    def prepare(self, image_bgr: np.ndarray) -> tuple[tuple[int, int], dict]:
        """(network size, feed): the image resized by the policy and prepared as the manifest says."""
        size = self.size or network_size(image_bgr, self.preprocessing, self.profile)
        return size, image_feed(image_bgr, self.input, self.preprocessing, size, self.batch)

    def run(self, feed: dict) -> np.ndarray:
        out = self.runner.infer(feed)[self.output.name][:1]
        if np.issubdtype(out.dtype, np.floating) and not np.isfinite(out).all():
            raise InputError(f"{self.description}: the network output {int((~np.isfinite(out)).sum())} non-finite "
                             "values (NaN or inf) for this image, so there is no mask to give; a sound artifact "
                             "never does (check it with segdeploy validate)")
        return out

    def finish(self, out: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
        """The network's output -> (H, W) labels at the image's size."""
        import cv2

        height, width = image_size
        if out.ndim == 3:  # an in-graph mask at the network size
            return cv2.resize(out[0], (width, height), interpolation=cv2.INTER_NEAREST) if \
                out.shape[1:] != (height, width) else out[0]
        return preprocess.logits_to_mask(out, (height, width), self.preprocessing.align_corners)[0]

    def colour(self, labels: np.ndarray) -> np.ndarray:
        return preprocess.colorize(labels, self.palette)

    def memory_needed(self, height: int, width: int) -> int:
        """Estimated host memory to segment an image of this size and write its results."""
        network = self.size or network_size(np.empty((height, width, 0), np.uint8), self.preprocessing, self.profile)
        forward = footprint.forward_bytes(self.model, self.batch, *network) if self.model else None
        return (forward or 0) + POSTPROCESS_BYTES + BYTES_PER_IMAGE_PIXEL * height * width

    def check_image(self, height: int, width: int, source: str) -> None:
        """Refuse, before decoding it, an image that cannot be segmented in the memory available now, saying what
        the largest one is."""
        need = self.memory_needed(height, width)
        available = memory_available_bytes()
        if available is None or need <= available:
            return
        room = available - (need - BYTES_PER_IMAGE_PIXEL * height * width)
        largest = max(0, room // BYTES_PER_IMAGE_PIXEL)
        raise InputError(f"{source} is {height}x{width} ({height * width / 1e6:.0f} MP): segmenting it needs about "
                         f"{need / 2**30:.1f} GB of memory and this machine has {available / 2**30:.1f} GB available, "
                         f"enough for images up to about {largest / 1e6:.0f} MP here")

    def close(self) -> None:
        self.runner.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def stage_split(samples: list[dict]) -> dict:
    """Per stage (in pipeline order, the stages present): p50 ms and share of the summed stage time, over per-image
    samples of stage -> ms; plus the p50 of the per-image totals."""
    present = [s for s in STAGES if any(s in sample for sample in samples)]
    totals = [sum(sample.get(s, 0.0) for s in present) for sample in samples]
    sums = {s: sum(sample.get(s, 0.0) for sample in samples) for s in present}
    whole = sum(sums.values())
    return {"total_p50_ms": float(np.percentile(totals, 50)) if totals else None,
            "stages": {s: {"p50_ms": float(np.percentile([sample.get(s, 0.0) for sample in samples], 50)),
                           "share": sums[s] / whole if whole > 0 else 0.0} for s in present}}


def split_text(split: dict) -> str:
    """'end to end p50 84.1 ms: decode 2.1 ms (3%), preprocess ..., network ...' (each stage's p50 and share)."""
    parts = [f"{STAGE_TEXT[s]} {v['p50_ms']:.1f} ms ({v['share']:.0%})" for s, v in split["stages"].items()]
    return f"end to end p50 {split['total_p50_ms']:.1f} ms: " + ", ".join(parts)


def model_preprocessing(spec) -> mf.Preprocessing:
    return mf.Preprocessing(in_graph=False, mean=list(spec.mean), std=list(spec.std),
                            channel_order=spec.channel_order, size_multiple=spec.size_multiple,
                            align_corners=spec.align_corners,
                            resize=mf.Resize("fit", list(preprocess.TEST_SCALE), spec.size_multiple, "bilinear"),
                            description=preprocess.RESIZE_POLICY)


def open_segmenter(*, model: str | None = None, checkpoint=None, artifact: str | None = None,
                   backend: str | None = None, size: tuple[int, int] | None = None,
                   threads: int | None = None, cache_dir: str = DEFAULT_CACHE_DIR, simplify: bool = True,
                   verify=None, progress=None, model_hint: str | None = None) -> Segmenter:
    """A segmenter for a model (on the model backend, or exported on the fly and cached for an artifact backend)
    or for an artifact. An artifact backend runs a model as one dynamic export, made once, that takes every image
    at the size the resize policy gives it (clamped to the profile), whatever its shape; only a ``size`` outside the
    dynamic profile gets a static export of its own. A foreign ONNX file (no manifest) is prepared as
    ``model_hint``'s spec says."""
    if (model is None) == (artifact is None):
        raise InputError("give a model (--model) or an artifact, not both")
    if artifact is not None:
        return _artifact_segmenter(artifact, backend, size, threads, model_hint)
    spec = models.get_spec(model)
    reason = None
    if backend is None:
        choice = fastest.choose(model, "fp32", ("model", "onnx"), threads)
        backend, reason = choice.backend, choice.reason
    segmenter = _model_segmenter(model, spec, checkpoint, backend, size, threads, cache_dir, simplify, verify,
                                 progress)
    segmenter.backend_reason = reason
    return segmenter


def _model_segmenter(model, spec, checkpoint, backend, size, threads, cache_dir, simplify, verify,
                     progress) -> Segmenter:
    record = get_backend(backend)
    weights = "recipe weights" if checkpoint is None else os.path.basename(os.fspath(checkpoint))
    if record.consumes == "model":
        runner = create_runner(backend, model=model, checkpoint=checkpoint, threads=threads)
        k = runner.graph.num_classes
        names, palette = _class_names(spec, k, checkpoint)
        return Segmenter(runner, model_preprocessing(spec), None, names, palette, size,
                         f"{model} ({weights}) on {backend}", model=model)
    if record.consumes != "onnx":
        raise InputError(f"backend {backend} runs {record.consumes}s; export one first and pass it as the artifact")
    if size is not None and not all(DYNAMIC_SIZE[0] <= side <= DYNAMIC_SIZE[1] for side in size):
        path = cached_onnx(model, checkpoint=checkpoint, height=size[0], width=size[1], simplify=simplify,
                           cache_dir=cache_dir, verify=verify, progress=progress)
    else:
        path = cached_onnx(model, checkpoint=checkpoint, height=512, width=512, dynamic=True, simplify=simplify,
                           cache_dir=cache_dir, verify=verify, progress=progress)
    runner = create_runner(backend, artifact=path, threads=threads)
    m = runner.manifest
    return Segmenter(runner, m.preprocessing, m.profile, m.model.class_names, m.model.palette, size,
                     f"{model} ({weights}) on {backend}, {'static' if m.profile.static else 'dynamic'} ONNX export",
                     model=model)


def _class_names(spec, k: int, checkpoint) -> tuple[list, list]:
    """The class names and palette a checkpoint carries (mmseg's dataset_meta), else the spec's."""
    if checkpoint is not None:
        meta = checkpoint_dataset_meta(checkpoint)
        if meta and len(meta["classes"]) == k:
            return meta["classes"], meta["palette"] or list(spec.palette(k))
    return list(spec.class_names(k)), list(spec.palette(k))


def _artifact_segmenter(artifact: str, backend, size, threads, model_hint) -> Segmenter:
    kind = format_of(artifact).kind
    # an edited graph or a damaged plan is refused before loading; the manifest also names the precision
    loaded = open_artifact(artifact, required=False)
    found = loaded.manifest
    reason = None
    if backend is None:
        label = precision_label(found.precision) if found is not None else "fp32"
        choice = fastest.choose(found.model.name if found is not None else model_hint, label, (kind,), threads,
                                default=default_backend_for(kind))
        backend, reason = choice.backend, choice.reason
    if get_backend(backend).consumes != kind:
        raise InputError(f"backend {backend} does not run {kind} artifacts; use {', '.join(backends_for(kind))}")
    segmenter = _open_artifact(loaded, backend, size, threads, model_hint)
    segmenter.backend_reason = reason
    return segmenter


def precision_label(precision) -> str:
    """A manifest's precision as the bench and the backend cache name it: fp32, fp16, int8-cpu, int8-openvino..."""
    return flavours.label(precision.mode, precision.flavour)


def _open_artifact(loaded: LoadedArtifact, backend, size, threads, model_hint) -> Segmenter:
    artifact = loaded.path
    runner = create_runner(backend, artifact=loaded, threads=threads)
    label = f"{os.path.basename(artifact)} on {backend}"
    manifest = runner.manifest
    if manifest is not None:
        return Segmenter(runner, manifest.preprocessing, manifest.profile, manifest.model.class_names,
                         manifest.model.palette, size, label, model=manifest.model.name)
    if model_hint is None:
        runner.close()
        raise InputError(f"{artifact} carries no segdeploy manifest: pass --model to say how to prepare images for it")
    spec = models.get_spec(model_hint)
    info, out = runner.inputs()[0], runner.outputs()[0]
    if info.dtype != "float32" or len(info.shape) != 4 or len(out.shape) != 4 or not isinstance(out.shape[1], int):
        runner.close()
        raise InputError(f"{artifact} carries no manifest and is not a float NCHW image in, logits out graph; "
                         "cannot tell how to feed it")
    profile = None
    if all(isinstance(d, int) and d > 0 for d in info.shape):
        b, _, h, w = info.shape
        profile = mf.Profile(mf.Range(b, b, b), mf.Range(h, h, h), mf.Range(w, w, w), spec.size_multiple)
    k = out.shape[1]
    return Segmenter(runner, model_preprocessing(spec), profile, spec.class_names(k), spec.palette(k), size,
                     label + f" (prepared as {model_hint})", model=model_hint)
