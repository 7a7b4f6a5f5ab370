"""Does an artifact compute what the PyTorch model computes? Comparators written once against the Runner contract.

Per output and over all cases: max abs error, max relative error (max abs error over max |reference|, the quantity
the tolerance bounds), mean abs error and cosine similarity; for segmentation, pixel label agreement and the mIoU of
the artifact's masks taken against the reference's masks as ground truth (dataset-level: intersections and unions
summed over every case before dividing). Logits outputs are turned into masks exactly as deployment does (bilinear
resize to the input size, argmax); mask outputs are compared as they are.

FP32 tolerance: max abs error <= 1e-4 * max(1, max |reference|) per case, and label agreement >= 99.9% (a few
pixels sit on near-ties between classes, so exact mask equality is not a fair test).

``locate``: where an output fails, the artifact's intermediate tensors are compared with those of a reference
ONNX graph exported afresh from the PyTorch reference with the artifact's own recorded settings (export is
deterministic, so tensor names line up). Both run in ONNX Runtime with graph optimisations disabled, so every
stored node runs as stored; the first node in topological order whose output leaves the tolerance is named.
Comparing against the artifact itself with optimisations off would not do: a corrupted weight is in both.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import onnx
import torch

from segdeploy import models, preprocess, recipe
from segdeploy.errors import ArtifactError, CheckpointError, InputError, SegdeployError
from segdeploy.export import metadata as meta
from segdeploy.runtimes.base import Runner, TensorInfo, Timing

REL_TOLERANCE = 1e-4  # FP32: max abs error <= REL_TOLERANCE * max(1, max |reference|)
MIN_LABEL_AGREEMENT = 0.999
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


# ----------------------------------------------------------------------------------------------------------------
# Comparators


def tolerance(reference: np.ndarray, rel: float = REL_TOLERANCE) -> float:
    return rel * max(1.0, float(np.abs(reference).max(initial=0.0)))


def numeric_stats(reference: np.ndarray, actual: np.ndarray) -> dict:
    if reference.shape != actual.shape:
        raise ArtifactError(f"output shapes differ: reference {reference.shape}, artifact {actual.shape}")
    ref = reference.astype(np.float64, copy=False).ravel()
    out = actual.astype(np.float64, copy=False).ravel()
    diff = np.abs(out - ref)
    ref_max = float(np.abs(ref).max(initial=0.0))
    norms = float(np.linalg.norm(ref) * np.linalg.norm(out))
    return {"max_abs_err": float(diff.max(initial=0.0)),
            "max_rel_err": float(diff.max(initial=0.0)) / ref_max if ref_max > 0 else float(diff.max(initial=0.0)),
            "mean_abs_err": float(diff.mean()) if diff.size else 0.0,
            "cosine": float(np.dot(ref, out) / norms) if norms > 0 else float(np.array_equal(ref, out)),
            "max_abs_ref": ref_max}


def confusion(reference_labels: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(K+1, K+1) counts, rows = reference class, columns = artifact class; labels outside [0, K) count as K."""
    if reference_labels.shape != labels.shape:
        raise ArtifactError(f"mask shapes differ: reference {reference_labels.shape}, artifact {labels.shape}")
    k = num_classes + 1
    ref, out = (np.clip(m.astype(np.int64).ravel(), -1, num_classes) for m in (reference_labels, labels))
    ref[ref < 0], out[out < 0] = num_classes, num_classes
    return np.bincount(ref * k + out, minlength=k * k).reshape(k, k)


def agreement(conf: np.ndarray) -> float:
    total = conf.sum()
    return float(np.trace(conf) / total) if total else 1.0


def mean_iou(conf: np.ndarray) -> float:
    """Mean over the classes present in either mask of intersection / union."""
    inter = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - inter
    present = union > 0
    return float((inter[present] / union[present]).mean()) if present.any() else 1.0


@dataclass
class OutputReport:
    """One output, accumulated over every case."""
    name: str
    kind: str  # "logits" or "mask"
    num_classes: int
    cases: int = 0
    failed_cases: int = 0
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    mean_abs_err: float | None = None
    cosine: float | None = None
    max_abs_ref: float | None = None
    confusion: np.ndarray | None = field(default=None, repr=False)
    errors: list[str] = field(default_factory=list)
    _abs_sum: float = field(default=0.0, repr=False)
    _count: int = field(default=0, repr=False)

    def fail(self, error: str) -> bool:
        """Count a case the artifact could not be compared on (it did not run, or gave another shape)."""
        self.errors.append(error)
        self.cases += 1
        self.failed_cases += 1
        return False

    def add(self, reference: np.ndarray, actual: np.ndarray, input_size, align_corners: bool) -> bool:
        if reference.shape != actual.shape:
            return self.fail(f"shape {tuple(actual.shape)} where the reference has {tuple(reference.shape)}")
        passed = True
        if self.kind == "logits":
            stats = numeric_stats(reference, actual)
            self.max_abs_err = max(self.max_abs_err or 0.0, stats["max_abs_err"])
            self.max_rel_err = max(self.max_rel_err or 0.0, stats["max_rel_err"])
            self.max_abs_ref = max(self.max_abs_ref or 0.0, stats["max_abs_ref"])
            self.cosine = stats["cosine"] if self.cosine is None else min(self.cosine, stats["cosine"])
            self._abs_sum += stats["mean_abs_err"] * reference.size
            self._count += reference.size
            self.mean_abs_err = self._abs_sum / self._count
            passed = stats["max_abs_err"] <= tolerance(reference)
            ref_labels = preprocess.logits_to_mask(reference, input_size, align_corners)
            labels = preprocess.logits_to_mask(actual, input_size, align_corners)
        else:
            ref_labels, labels = reference, actual
        conf = confusion(ref_labels, labels, self.num_classes)
        self.confusion = conf if self.confusion is None else self.confusion + conf
        passed = passed and agreement(conf) >= MIN_LABEL_AGREEMENT
        self.cases += 1
        self.failed_cases += not passed
        return passed

    @property
    def mask_agreement(self) -> float | None:
        return None if self.confusion is None else agreement(self.confusion)

    @property
    def miou_vs_reference(self) -> float | None:
        return None if self.confusion is None else mean_iou(self.confusion)

    @property
    def passed(self) -> bool:
        return self.cases > 0 and self.failed_cases == 0

    def as_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "cases": self.cases, "failed_cases": self.failed_cases,
                "passed": self.passed, "max_abs_err": self.max_abs_err, "max_rel_err": self.max_rel_err,
                "mean_abs_err": self.mean_abs_err, "cosine": self.cosine, "max_abs_ref": self.max_abs_ref,
                "mask_agreement": self.mask_agreement, "miou_vs_reference": self.miou_vs_reference,
                "errors": list(self.errors)}


@dataclass
class ValidationReport:
    outputs: dict[str, OutputReport]
    cases: list[dict]
    reference: dict
    candidate: dict
    locate: dict | None = None
    artifact: str | None = None
    model: str | None = None
    # integrity: does the graph still hash to what export recorded? (False = edited since export)
    graph_unchanged: bool | None = None

    @property
    def passed(self) -> bool:
        return bool(self.outputs) and all(o.passed for o in self.outputs.values())

    def _worst(self, key, pick):
        values = [getattr(o, key) for o in self.outputs.values() if getattr(o, key) is not None]
        return pick(values) if values else None

    def summary(self, digits: int = 3) -> dict:
        """The headline numbers, rounded (they go into artifacts, which must be byte-reproducible)."""
        def r(v):
            return None if v is None else float(f"{v:.{digits}g}")
        return {"passed": self.passed, "max_abs_err": r(self._worst("max_abs_err", max)),
                "max_rel_err": r(self._worst("max_rel_err", max)), "cosine": r(self._worst("cosine", min)),
                "mask_agreement": r(self._worst("mask_agreement", min)),
                "miou_vs_reference": r(self._worst("miou_vs_reference", min)),
                "shapes": sorted({tuple(c["input_shape"]) for c in self.cases}), "cases": len(self.cases),
                "tolerance": f"max abs <= {REL_TOLERANCE:g} * max(1, max|ref|); label agreement >= "
                             f"{MIN_LABEL_AGREEMENT:.1%}",
                "reference": self.reference.get("backend"), "runtime": self.candidate.get("backend")}

    def as_dict(self) -> dict:
        out = self.summary(digits=6)
        out.update({"artifact": self.artifact, "model": self.model, "graph_unchanged": self.graph_unchanged,
                    "outputs": {k: v.as_dict() for k, v in self.outputs.items()}, "case_results": self.cases,
                    "reference_runner": self.reference, "candidate_runner": self.candidate, "locate": self.locate})
        return out

    def failure_line(self) -> str:
        bad = [o for o in self.outputs.values() if not o.passed]
        parts = []
        for o in bad:
            text = f"{o.name}: {o.failed_cases}/{o.cases} cases out of tolerance"
            if o.max_abs_err is not None:
                text += f", max abs err {o.max_abs_err:.3g} (max |ref| {o.max_abs_ref:.3g})"
            if o.mask_agreement is not None:
                text += f", label agreement {o.mask_agreement:.4%}"
            if o.errors:
                text += f", {len(o.errors)} not comparable (first: {o.errors[0]})"
            parts.append(text)
        return "; ".join(parts) or "no outputs compared"


def compare_runners(reference: Runner, candidate: Runner, feeds: list[tuple[str, dict]], *, num_classes: int,
                    align_corners: bool = False) -> ValidationReport:
    """Run every feed through both runners and compare every output the two have in common."""
    common = [o for o in candidate.outputs() if o.name in {r.name for r in reference.outputs()}]
    if not common:
        raise ArtifactError(f"no output names in common: reference {[o.name for o in reference.outputs()]}, "
                            f"artifact {[o.name for o in candidate.outputs()]}")
    reports = {o.name: OutputReport(o.name, "logits" if o.dtype.startswith("float") else "mask", num_classes)
               for o in common}
    input_layout = {i.name: i for i in candidate.inputs()}
    cases = []
    for source, feed in feeds:
        expected = reference.infer(feed)
        case = {"source": source, "input_shape": list(next(iter(feed.values())).shape), "outputs": {}}
        try:
            actual = candidate.infer(feed)
        except SegdeployError as exc:  # the artifact does not run on an input the reference takes
            actual, case["error"] = None, str(exc)
        size = _spatial_size(feed, input_layout)
        for name, report in reports.items():
            if actual is None:
                ok = report.fail(f"{source} {case['input_shape']}: {case['error']}")
            else:
                ok = report.add(expected[name], actual[name], size, align_corners)
            case["outputs"][name] = ok
        case["passed"] = all(case["outputs"].values())
        cases.append(case)
    return ValidationReport(reports, cases, reference.describe(), candidate.describe())


def _spatial_size(feed: dict, infos: dict[str, TensorInfo]) -> tuple[int, int]:
    name, array = next(iter(feed.items()))
    if infos.get(name) is not None and infos[name].dtype == "uint8":  # NHWC images
        return int(array.shape[1]), int(array.shape[2])
    return int(array.shape[2]), int(array.shape[3])


# ----------------------------------------------------------------------------------------------------------------
# The PyTorch side


class DeployGraphRunner(Runner):
    """The eager DeployGraph (model + in-graph pre/post-processing) behind the Runner contract.

    Plain float-in/logits-out graphs use segdeploy.runtimes.torch.TorchRunner instead (see reference_runner); this
    one exists for the graph options (uint8 image input, mask output), which that runner does not take."""
    backend = "torch"

    def __init__(self, graph):
        super().__init__()
        self.graph = graph.eval()
        self._input = TensorInfo(graph.input_name, ("batch", "height", "width", 3) if graph.normalize is not None
                                 else ("batch", 3, "height", "width"),
                                 "uint8" if graph.normalize is not None else "float32")
        out_dtype = "float32" if graph.to_mask is None else str(graph.to_mask.dtype).removeprefix("torch.")
        self._output = TensorInfo(graph.output_name, ("batch", "?", "?", "?")[:3 if graph.to_mask else 4], out_dtype)

    def inputs(self):
        return [self._input]

    def outputs(self):
        return [self._output]

    @torch.inference_mode()
    def infer(self, feed):
        import time

        start = time.perf_counter()
        out = self.graph(torch.from_numpy(np.ascontiguousarray(feed[self._input.name]))).numpy()
        self.last_timing = Timing(host_ms=(time.perf_counter() - start) * 1e3)
        return {self._output.name: out}

    def describe(self):
        return {"backend": self.backend, "device": "cpu", "precision": "fp32", "graph_options": True,
                "versions": {"torch": torch.__version__}}


def reference_runner(graph) -> Runner:
    if graph.normalize is None and graph.to_mask is None:
        try:
            from segdeploy.runtimes.torch import TorchRunner
        except ImportError:  # the benchmarking runtimes are optional for validation
            return DeployGraphRunner(graph)
        return TorchRunner(graph.model)
    return DeployGraphRunner(graph)


def seeded_feed(info: TensorInfo, shape: tuple[int, int, int], seed: int) -> dict:
    """A deterministic input: normal(0, 1) 'normalised images' for float inputs, uniform uint8 for image inputs."""
    batch, height, width = shape
    if info.dtype == "uint8":
        rng = np.random.default_rng([seed, recipe.INPUT_STREAM])
        return {info.name: rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8)}
    return {info.name: recipe.seeded_input((batch, 3, height, width), seed)}


def image_feed(image_bgr: np.ndarray, info: TensorInfo, metadata: dict, shape: tuple[int, int, int]) -> dict:
    """A real image prepared as the artifact's metadata says (fixed-size artifacts: resized to their size)."""
    import types

    import cv2

    batch, height, width = shape
    if info.dtype == "uint8":
        resized = cv2.resize(image_bgr, (width, height), interpolation=cv2.INTER_LINEAR)
        x = resized[None]
    else:
        pre = metadata["preprocessing"]
        spec = types.SimpleNamespace(mean=pre["mean"], std=pre["std"], channel_order=pre["channel_order"],
                                     size_multiple=pre["size_multiple"])
        x = preprocess.prepare(image_bgr, spec, (height, width))
    return {info.name: np.ascontiguousarray(np.repeat(x, batch, axis=0))}


def image_shape(image_bgr: np.ndarray, metadata: dict) -> tuple[int, int, int]:
    """The input shape for a real image: the artifact's own for static artifacts, the resize policy (clamped to the
    dynamic profile) for dynamic ones."""
    profile = metadata["input_profile"]
    if not metadata.get("dynamic"):
        return tuple(profile["opt"])
    multiple = profile["multiple"]
    h, w = preprocess.fit_size(*image_bgr.shape[:2], multiple=multiple)
    lo, hi = profile["height"]
    return (1, int(np.clip(h, lo, hi)), int(np.clip(w, profile["width"][0], profile["width"][1])))


def list_images(folder: str | os.PathLike) -> list[str]:
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise InputError(f"--images must be a folder of images: {folder}")
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(IMAGE_SUFFIXES))
    if not files:
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files


# ----------------------------------------------------------------------------------------------------------------
# Entry points


def validate_graph(graph, model_proto: onnx.ModelProto, shapes, *, seed: int = 0, threads: int | None = None
                   ) -> ValidationReport:
    """Compare an in-memory ONNX graph with its eager DeployGraph on one seeded input per shape (used by export)."""
    from segdeploy.runtimes.onnxruntime import OnnxRuntimeRunner

    candidate = OnnxRuntimeRunner(model_proto, threads=threads)
    info = candidate.inputs()[0]
    feeds = [(f"seeded:{seed + i}", seeded_feed(info, shape, seed + i)) for i, shape in enumerate(shapes)]
    return compare_runners(reference_runner(graph), candidate, feeds, num_classes=graph.model.num_classes,
                           align_corners=graph.model.spec.align_corners)


def artifact_shapes(metadata: dict) -> list[tuple[int, int, int]]:
    from segdeploy.export.onnx import validation_shapes

    batch, height, width = metadata["input_profile"]["opt"]
    return validation_shapes(batch, height, width, bool(metadata.get("dynamic")))


def check_shape_in_profile(shape, metadata: dict) -> None:
    profile = metadata["input_profile"]
    batch, height, width = shape
    ok = (profile["batch"][0] <= batch <= profile["batch"][1] and profile["height"][0] <= height <=
          profile["height"][1] and profile["width"][0] <= width <= profile["width"][1]
          and height % profile["multiple"] == 0 and width % profile["multiple"] == 0)
    if not ok:
        raise InputError(f"shape {batch}x{height}x{width} is outside the artifact's input profile {profile}")


def build_reference(metadata: dict, model_name: str | None = None, checkpoint=None):
    """The eager DeployGraph matching an artifact: same model, options, graph options and weights."""
    from segdeploy.export.onnx import build_deploy_graph

    recorded = metadata.get("model")
    if model_name and recorded and model_name != recorded:
        raise ArtifactError(f"the artifact was exported from {recorded}, not {model_name}")
    name = model_name or recorded
    if not name:
        raise ArtifactError("the artifact carries no segdeploy metadata (no sidecar either); pass --model")
    models.get_spec(name)  # unknown model -> one line
    export_options = metadata.get("export_options", {})
    weights = metadata.get("weights", {})
    if checkpoint is None and weights.get("source") == "checkpoint":
        raise CheckpointError(f"the artifact was exported from the checkpoint {weights.get('file')}; pass it with "
                              "--checkpoint")
    graph, built = build_deploy_graph(name, checkpoint=checkpoint, dynamic=bool(metadata.get("dynamic")),
                                      outputs=export_options.get("outputs", "logits"),
                                      preprocess=bool(export_options.get("preprocess", False)),
                                      options=export_options.get("model_options"))
    if weights.get("sha256") and built["sha256"] != weights["sha256"]:
        source = f"checkpoint {os.fspath(checkpoint)}" if checkpoint is not None else "the recipe weights"
        raise CheckpointError(f"{source} (sha256 {built['sha256'][:12]}) is not what the artifact was exported "
                              f"from (sha256 {weights['sha256'][:12]})")
    return graph


def validate_artifact(artifact: str | os.PathLike, *, model: str | None = None, checkpoint=None, images=None,
                      n: int = 8, seed: int = 0, shapes=None, locate: bool = False, threads: int | None = None,
                      providers=None) -> ValidationReport:
    """Compare an ONNX artifact with its PyTorch reference on ``n`` seeded inputs (and the images in ``images``)."""
    from segdeploy.runtimes.onnxruntime import OnnxRuntimeRunner

    path = os.fspath(artifact)
    if n < 0:
        raise InputError(f"--n must be >= 0, not {n}")
    model_proto = meta.load_onnx(path)
    metadata = meta.read(path, model_proto)
    graph = build_reference(metadata, model, checkpoint)
    if not metadata:  # a foreign ONNX file: describe it from the model and the graph itself
        metadata = _metadata_from_graph(model_proto, graph)
    candidate = OnnxRuntimeRunner(path, providers=providers, threads=threads)
    info = candidate.inputs()[0]
    shapes = [tuple(s) for s in shapes] if shapes else artifact_shapes(metadata)
    for shape in shapes:
        check_shape_in_profile(shape, metadata)
    feeds = [(f"seeded:{seed + i}", seeded_feed(info, shapes[i % len(shapes)], seed + i)) for i in range(n)]
    for image_path in list_images(images) if images else []:
        image = preprocess.read_image(image_path)
        feeds.append((image_path, image_feed(image, info, metadata, image_shape(image, metadata))))
    if not feeds:
        raise InputError("nothing to validate: --n 0 and no --images")
    report = compare_runners(reference_runner(graph), candidate, feeds, num_classes=graph.model.num_classes,
                             align_corners=graph.model.spec.align_corners)
    report.artifact, report.model = path, graph.model.spec.name
    if metadata.get("graph_sha256"):
        report.graph_unchanged = meta.graph_sha256(model_proto) == metadata["graph_sha256"]
    if locate and not report.passed:
        failing = next(i for i, case in enumerate(report.cases) if not case["passed"])
        reference_proto = reference_onnx(graph, metadata)
        report.locate = locate_divergence(model_proto, reference_proto, feeds[failing][1], threads=threads)
        report.locate["case"] = feeds[failing][0]
    elif locate:
        report.locate = {"skipped": "every output is within tolerance; nothing to locate"}
    return report


def _metadata_from_graph(model_proto: onnx.ModelProto, graph) -> dict:
    dims = [d.dim_value or None for d in model_proto.graph.input[0].type.tensor_type.shape.dim]
    if graph.normalize is not None or len(dims) != 4 or None in dims:
        raise ArtifactError("the artifact carries no segdeploy metadata and its input is not a static NCHW tensor; "
                            "cannot tell how to feed it")
    batch, _, height, width = dims
    spec = graph.model.spec
    return {"dynamic": False, "input_profile": {"batch": [batch, batch], "height": [height, height],
                                                "width": [width, width], "multiple": 1,
                                                "opt": [batch, height, width]},
            "preprocessing": {"mean": spec.mean, "std": spec.std, "channel_order": spec.channel_order,
                              "size_multiple": spec.size_multiple}}


# ----------------------------------------------------------------------------------------------------------------
# Locating the first diverging node


def reference_onnx(graph, metadata: dict) -> onnx.ModelProto:
    """Re-export the reference with the settings the artifact records (its traced shape, opset, simplifier)."""
    from segdeploy.export.onnx import build_onnx

    batch, height, width = metadata["input_profile"]["opt"]
    tool = (metadata.get("graph") or {}).get("simplifier")
    simplify = bool(metadata.get("export_options", {}).get("simplify", True)) and tool is not None
    model, _ = build_onnx(graph, batch, height, width, dynamic=bool(metadata.get("dynamic")),
                          opset=int(metadata.get("opset", 17)), simplify=simplify,
                          simplifiers=(tool,) if tool else ("onnxsim", "onnxslim"))
    return model


def _with_outputs(model: onnx.ModelProto, names: list[str], types: dict[str, int]) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.graph.output[:]
    for name in names:
        copy.graph.output.append(onnx.helper.make_tensor_value_info(name, types[name], None))
    return copy


def _tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference is best effort; untyped tensors are just not compared
        inferred = model
    types = {}
    for value in (*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input):
        elem = value.type.tensor_type.elem_type
        if elem:
            types[value.name] = elem
    return types


def locate_divergence(candidate: onnx.ModelProto, reference: onnx.ModelProto, feed: dict, *,
                      threads: int | None = None, chunk: int = 96) -> dict:
    """Name the first node of ``candidate`` whose output differs from the same-named tensor of ``reference``."""
    from segdeploy.runtimes.onnxruntime import OnnxRuntimeRunner

    cand_types, ref_types = _tensor_types(candidate), _tensor_types(reference)
    producers = {}
    order = []
    for node in candidate.graph.node:
        for out in node.output:
            if out and out in cand_types and ref_types.get(out) == cand_types[out]:
                producers[out] = node
                order.append(out)
    total = sum(len([o for o in node.output if o]) for node in candidate.graph.node)
    if not order:
        return {"found": False, "compared": 0, "intermediates": total,
                "message": "no intermediate tensor names in common with the reference export; cannot locate"}
    compared = 0
    for start in range(0, len(order), chunk):
        names = order[start:start + chunk]
        got = OnnxRuntimeRunner(_with_outputs(candidate, names, cand_types), threads=threads,
                                graph_optimization="disable").infer(feed)
        want = OnnxRuntimeRunner(_with_outputs(reference, names, ref_types), threads=threads,
                                 graph_optimization="disable").infer(feed)
        for name in names:
            compared += 1
            a, b = got[name], want[name]
            if a.shape != b.shape:
                bad, err, tol = True, None, None
            elif np.issubdtype(b.dtype, np.floating):
                err = float(np.abs(a.astype(np.float64) - b).max(initial=0.0))
                tol = tolerance(b)
                bad = not err <= tol  # NaN counts as diverged
            else:
                err, tol = float(np.count_nonzero(a != b)), 0.0
                bad = err > 0
            if bad:
                node = producers[name]
                initializers = {i.name for i in candidate.graph.initializer}
                return {"found": True, "node": node.name, "op_type": node.op_type, "output": name,
                        "max_abs_err": err, "tolerance": tol, "shape": list(a.shape),
                        "inputs": list(node.input),
                        "weights": [i for i in node.input if i in initializers],
                        "compared": compared, "intermediates": total,
                        "message": f"first divergence at node {node.name!r} ({node.op_type}), output {name!r}"}
    return {"found": False, "compared": compared, "intermediates": total,
            "message": "every intermediate shared with the reference is within tolerance; the divergence is in "
                       "tensors the reference does not have"}

