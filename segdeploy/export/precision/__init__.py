"""Precision as a graph pass: FP32 graph in, FP16 or INT8 graph out, with the manifest's account of what was done.

``apply_precision`` runs after simplification (export/onnx.py):

- ``fp16``: a reference run gives activation ranges (the calibration images with ``--calib``, else seeded inputs),
  then passes/fp16.py converts with float32 islands;
- ``int8``: calibration (calibrate.py: images, statistics, cache), then one flavour's pass: passes/qdq_tensorrt.py
  (``target tensorrt``: symmetric Q/DQ where TensorRT fuses it, float16 elsewhere), passes/qdq_cpu.py (``target
  cpu``: the uint8/int8 QDQ form ONNX Runtime fuses) or passes/qdq_openvino.py (``target openvino``: symmetric Q/DQ
  on the compute layers, float32 elsewhere); with ``max_drop``, sensitivity.py keeps the most sensitive blocks in
  float until the accuracy drop on the held-out set is within the budget.

Export never imports the evaluation layer: the accuracy of a candidate graph is measured by an ``evaluator`` the
command passes in (segdeploy.evaluation.accuracy), which also names its images so the calibration set can be checked
against them.
"""
from __future__ import annotations

import importlib
import time
import types
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from segdeploy import flavours, preprocess
from segdeploy.artifact import manifest as mf
from segdeploy.errors import InputError, ToleranceError
from segdeploy.export.module_paths import in_module
from segdeploy.export.passes import PassReport
from segdeploy.export.precision.calibrate import (
    DEFAULT_METHOD,
    DEFAULT_PERCENTILE,
    METHODS,
    RangeTable,
    calibrate,
    collect,
)
from segdeploy.export.precision.calibration_images import (
    DEFAULT_COUNT,
    CalibrationImages,
    check_disjoint,
    evenly_spaced,
    select_images,
)
from segdeploy.export.precision.sensitivity import SENSITIVITY_IMAGES, group_blocks, keep_until_within, rank_blocks
from segdeploy.files.destinations import user_cache_dir

MODES = mf.PRECISIONS
TARGETS = flavours.NAMES
REFERENCE_INPUTS = 4  # seeded inputs of the FP16 reference run when no calibration images are given


@dataclass
class PrecisionOptions:
    mode: str = "fp32"
    target: str | None = None  # int8: a flavour's name (segdeploy.flavours; flavours.DEFAULT when None)
    io_dtype: str = "float32"
    calib: str | None = None  # folder of images or dataset folder
    calib_count: int = DEFAULT_COUNT
    calib_method: str = DEFAULT_METHOD
    percentile: float = DEFAULT_PERCENTILE
    max_drop: float | None = None  # accuracy points (mIoU, or label agreement without labels)
    cache_dir: str | None = None  # calibration statistics; None: the user cache, "": no cache

    def checked(self) -> PrecisionOptions:
        if self.mode not in MODES:
            raise InputError(f"--precision must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.target is not None and self.mode != "int8":
            raise InputError("--target chooses the INT8 flavour; it goes with --precision int8")
        if self.target is not None and self.target not in TARGETS:
            raise InputError(f"--target must be one of {', '.join(TARGETS)}, not {self.target!r}")
        if self.io_dtype not in ("float32", "float16"):
            raise InputError(f"--io-dtype must be float32 or float16, not {self.io_dtype!r}")
        if self.io_dtype == "float16" and self.mode == "fp32":
            raise InputError("--io-dtype float16 needs --precision fp16 or int8")
        if self.calib_method not in METHODS:
            raise InputError(f"--calib-method must be one of {', '.join(METHODS)}, not {self.calib_method!r}")
        if not 50 < self.percentile < 100:
            raise InputError(f"--percentile must be between 50 and 100 (exclusive), not {self.percentile}")
        if self.calib_count < 1:
            raise InputError(f"--calib-count must be at least 1, not {self.calib_count}")
        if self.mode == "int8" and not self.calib:
            raise InputError("--precision int8 needs calibration images: --calib DIR (a folder of images or a "
                             "dataset folder, whose training split is used)")
        if self.mode == "fp32" and (self.calib or self.max_drop is not None):
            raise InputError("--calib and --max-drop go with --precision fp16 or int8")
        if self.max_drop is not None and not 0 <= self.max_drop <= 100:  # NaN fails both comparisons
            raise InputError(f"--max-drop must be 0-100 points, not {self.max_drop}")
        target = self.target or (flavours.DEFAULT if self.mode == "int8" else None)
        if self.mode == "int8" and self.io_dtype not in flavours.get(target).io_dtypes:
            raise InputError(f"the INT8 {target} flavour keeps float32 I/O (its float parts run in float32)")
        return PrecisionOptions(**{**self.__dict__, "target": target})


class Evaluator(Protocol):
    """Accuracy of a candidate graph on a held-out set, in points (mIoU %, or label agreement % with the FP32
    graph when the set has no labels)."""
    metric: str
    image_paths: list[str]

    def reference(self, model_proto) -> float: ...

    def __call__(self, model_proto) -> float: ...

    def describe(self) -> dict: ...


@dataclass
class GraphInput:
    """How to feed the graph being converted: its input's name, dtype and (batch, height, width), and how an image
    becomes that input (the export's own preprocessing)."""
    name: str
    dtype: str  # "float32" (normalised NCHW) or "uint8" (NHWC BGR, the graph normalises)
    shape: tuple[int, int, int]
    mean: tuple
    std: tuple
    channel_order: str

    def image(self, path: str) -> dict:
        spec = types.SimpleNamespace(mean=self.mean, std=self.std, channel_order=self.channel_order)
        batch, height, width = self.shape
        return {self.name: preprocess.network_input(preprocess.read_image(path), (height, width), spec,
                                                    uint8_input=self.dtype == "uint8", batch=batch)}

    def seeded(self, seed: int) -> dict:
        from segdeploy import recipe

        batch, height, width = self.shape
        if self.dtype == "uint8":
            rng = np.random.default_rng([seed, recipe.INPUT_STREAM])
            return {self.name: rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8)}
        return {self.name: recipe.seeded_input((batch, 3, height, width), seed).astype(np.float32)}


# Agreement is pooled over the real images, and per-image agreement of a model with close logits spreads widely
# (offseg_t's cpu flavour: 74-100 % over its 32 calibration images, 95.8 % pooled; 93.9 % on four of them), so eight
# calibration images, and with --eval-data up to 24 of its held-out images besides.
VERIFICATION_IMAGES = 8
VERIFICATION_HELD_OUT = 24


@dataclass
class PrecisionResult:
    model: object
    reports: list[PassReport] = field(default_factory=list)
    precision: mf.Precision = field(default_factory=mf.Precision)
    # real images to verify the converted graph on, beside the seeded inputs (a few of the calibration images: a
    # quantized graph is judged on what it was calibrated for, not on noise alone; and held-out images when given)
    verification_images: list[str] = field(default_factory=list)


Progress = Callable[..., None]


def prepare(options: PrecisionOptions, *, opset: int, evaluator: Evaluator | None = None
            ) -> CalibrationImages | None:
    """What can be refused before any tracing: the flavour's opset, the calibration folder, and calibration images
    that are also evaluation images. Returns the chosen calibration images."""
    options = options.checked()
    needed = flavours.get(options.target).min_opset if options.mode == "int8" else None
    if needed is not None and opset < needed:
        raise InputError(f"the INT8 {options.target} flavour needs opset {needed} or newer (float16 Q/DQ); "
                         f"export with --opset {needed} or 20, not {opset}")
    if options.max_drop is not None and evaluator is None:
        raise InputError("--max-drop is judged on a held-out set: add --eval-data DIR")
    images = select_images(options.calib, options.calib_count) if options.calib else None
    if images is not None and evaluator is not None:
        check_disjoint(images.digests, evaluator.image_paths, "the accuracy")
    return images


def apply_precision(model_proto, options: PrecisionOptions, graph_input: GraphInput, *, graph_sha256: str,
                    evaluator: Evaluator | None = None, threads: int | None = None,
                    progress: Progress | None = None, images: CalibrationImages | None = None,
                    float_modules=()) -> PrecisionResult:
    """Convert ``model_proto`` (FP32, simplified) to ``options``' precision; ``images``: from :func:`prepare`;
    ``float_modules``: the family's modules INT8 leaves in float (``ModelSpec.int8_float_modules``)."""
    options = options.checked()
    say = progress or (lambda *a, **k: None)
    if options.mode == "fp32":
        return PrecisionResult(model_proto)
    if images is None and options.calib:
        images = select_images(options.calib, options.calib_count)
        if evaluator is not None:
            check_disjoint(images.digests, evaluator.image_paths, "the accuracy")
    table, source = _statistics(model_proto, options, images, graph_input, graph_sha256, threads, say)
    details: dict = {"ranges": source}
    if options.mode == "fp16":
        from segdeploy.export.passes.fp16 import float16

        result, report = float16(model_proto, ranges=table.all_minmax(), io_dtype=options.io_dtype)
        details["float16"] = report.details
    else:
        fixed = family_float_nodes(model_proto, float_modules, options.target)
        build = _int8_builder(model_proto, table, options, fixed)
        result, report = build({})
        details["calibration"] = {"method": options.calib_method, **images.provenance(),
                                  **({"percentile": options.percentile} if options.calib_method == "percentile"
                                     else {})}
        details["quantization"] = report.details
        counts = Counter(fixed.values())
        modules = [{"module": m.module, "nodes": counts[m.module], "reason": m.reason}
                   for m in float_modules if m.applies_to(options.target)]
        if modules:
            details["float_modules"] = modules
    reports = [report]
    if evaluator is not None:
        say(f"measuring {evaluator.metric} of the FP32 and {options.mode} graphs on the held-out images")
        reference = evaluator.reference(model_proto)
        score = evaluator(result)
        accuracy = {"metric": evaluator.metric, **evaluator.describe(), "fp32": round(reference, 3),
                    options.mode: round(score, 3), "drop": round(reference - score, 3)}
        if getattr(evaluator, "last", {}).get("agreement") is not None:
            accuracy["agreement"] = round(evaluator.last["agreement"], 3)
        if options.max_drop is not None:
            accuracy["budget"] = options.max_drop
            if options.mode == "int8" and reference - score > options.max_drop:
                result, report, search = _mixed_precision(model_proto, build, report, reference, score, images,
                                                          graph_input, options, evaluator, threads, say)
                reports = [report]
                details["quantization"] = report.details
                details["mixed_precision"] = search
                accuracy[options.mode] = round(search["score"], 3)
                accuracy["drop"] = round(reference - search["score"], 3)
                accuracy["agreement"] = search.get("agreement")
            elif reference - score > options.max_drop:
                raise ToleranceError(f"the {options.mode} graph loses {reference - score:.2f} {evaluator.metric} "
                                     f"points (> --max-drop {options.max_drop:g}); nothing was written")
        details["accuracy"] = accuracy
    flavour = options.target if options.mode == "int8" else None
    verification = [] if images is None else evenly_spaced(images.paths, VERIFICATION_IMAGES)
    if evaluator is not None:
        verification += evenly_spaced(list(evaluator.image_paths), VERIFICATION_HELD_OUT)
    return PrecisionResult(result, reports, mf.Precision(options.mode, flavour, options.io_dtype, details),
                           verification)


def _statistics(model_proto, options: PrecisionOptions, images: CalibrationImages | None, graph_input: GraphInput,
                graph_sha256: str, threads, say) -> tuple[RangeTable, dict]:
    if images is None:  # FP16 without --calib: the ranges of a few seeded inputs
        say(f"reference run on {REFERENCE_INPUTS} seeded inputs for the float16 ranges")
        feeds = (graph_input.seeded(i) for i in range(REFERENCE_INPUTS))
        table = collect(model_proto, feeds, total=REFERENCE_INPUTS, threads=threads)
        return table, {"source": f"{REFERENCE_INPUTS} seeded inputs (no --calib: pass calibration images for the "
                                 "ranges of real images)"}
    cache_dir = options.cache_dir
    if cache_dir is None:
        cache_dir = user_cache_dir("calibration")
    started = time.monotonic()
    table, cached = calibrate(model_proto, images, graph_input.image, input_shape=graph_input.shape,
                              graph_sha256=graph_sha256, cache_dir=cache_dir or None, threads=threads,
                              progress=say, label=f"calibrating on {len(images.paths)} images")
    if not cached:
        say(f"calibrated in {time.monotonic() - started:.0f} s")
    return table, {"source": f"{len(images.paths)} calibration images ({images.split})",
                   "images_sha256": images.sha256}


def family_float_nodes(model_proto, float_modules, target: str) -> dict[str, str]:
    """node name -> its module, for the nodes of the family's float modules that apply to the INT8 flavour
    ``target``."""
    wanted = [m for m in float_modules if m.applies_to(target)]
    return {node.name: m.module for node in model_proto.graph.node for m in wanted if in_module(node.name, m.module)}


def _int8_builder(model_proto, table: RangeTable, options: PrecisionOptions, fixed: dict[str, str] | None = None):
    """The flavour's pass, as a function of the nodes to keep in float (the mixed-precision search varies them,
    on top of ``fixed``, the family's float modules' nodes from :func:`family_float_nodes`)."""
    flavour = flavours.get(options.target)
    module, name = flavour.pass_function.split(":")
    quantize = getattr(importlib.import_module(f"segdeploy.export.passes.{module}"), name)
    method, percentile = options.calib_method, options.percentile

    def ranges(tensor):
        return table.range(tensor, method, percentile, symmetric=flavour.symmetric)

    # a float16 flavour casts its float parts with the ranges of every tensor, and may take float16 I/O
    extra = {"fp16_ranges": table.all_minmax(), "io_dtype": options.io_dtype} \
        if flavour.float_kind == "float16" else {}
    fixed = {node: f"in {module}" for node, module in (fixed or {}).items()}

    def build(keep):
        result, report = quantize(model_proto, ranges, keep={**fixed, **keep}, **extra)
        # the manifest names the family's float modules once (details["float_modules"]), not node by node
        if fixed and "not_quantized" in report.details:
            report.details["not_quantized"] = [e for e in report.details["not_quantized"] if e["node"] not in fixed]
        return result, report

    return build


def _mixed_precision(model_proto, build, report, reference: float, score: float, images: CalibrationImages,
                     graph_input: GraphInput, options: PrecisionOptions, evaluator: Evaluator, threads, say):
    layers = list(report.details["quantized"]) + list(report.details.get("residual_adds", []))
    blocks = group_blocks(layers)
    feeds = [graph_input.image(p) for p in images.paths[:SENSITIVITY_IMAGES]]
    run = _runner(feeds, threads)
    expected = run(model_proto)
    ranking = rank_blocks(blocks, lambda keep: build(keep)[0], run, expected, progress=say)
    float_kind = flavours.get(options.target).float_kind
    built = {}

    def evaluate(kept):
        keep = {node: "mixed precision" for block in kept for node in block.nodes}
        built[len(kept)] = build(keep)
        return evaluator(built[len(kept)][0])

    found = keep_until_within(ranking, options.max_drop, reference, score, evaluate, evaluator.metric, progress=say)
    result, final_report = built.get(len(found.kept)) or build({})
    total = len(ranking)
    kept = [{**block.as_dict(), "rank": i + 1, "layers": block.nodes,
             "reason": f"rank {i + 1} of {total} by the output error it causes alone (noise/signal "
                       f"{block.nsr:.3g}, label agreement {block.agreement:.4%}); kept in {float_kind} so the "
                       f"{evaluator.metric} drop stays within {options.max_drop:g} points"}
            for i, block in enumerate(found.kept)]
    evaluator(result)  # the final graph's own numbers (the search may have ended on another candidate)
    search = {"budget": options.max_drop, "metric": evaluator.metric, "reference": round(reference, 3),
              "all_quantized": round(score, 3), "score": found.score, "kept_in": float_kind, "kept": kept,
              "agreement": round(getattr(evaluator, "last", {}).get("agreement", float("nan")), 3),
              "blocks": total, "evaluations": found.evaluations,
              "ranking": [b.as_dict() for b in ranking[:16]]}
    final_report.notes.append(f"mixed precision: {len(found.kept)} of {total} blocks kept in {float_kind} "
                              f"({evaluator.metric} {reference:.2f} -> {found.score:.2f}, budget "
                              f"{options.max_drop:g})")
    return result, final_report, search


def _runner(feeds: list[dict], threads):
    import onnxruntime as ort

    def run(model_proto) -> list[np.ndarray]:
        session_options = ort.SessionOptions()
        session_options.log_severity_level = 3
        if threads:
            session_options.intra_op_num_threads = threads
        session = ort.InferenceSession(model_proto.SerializeToString(), session_options,
                                       providers=["CPUExecutionProvider"])
        return [session.run(None, feed)[0] for feed in feeds]

    return run
