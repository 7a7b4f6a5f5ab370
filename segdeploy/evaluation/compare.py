"""Comparators: does a candidate runner compute what a reference runner computes? Written once against the Runner
contract (Polygraphy's comparator: running, post-processing and the compare function kept apart).

Per output and over all cases: max abs error, max relative error (max abs error over max |reference|), mean abs
error and cosine similarity; for segmentation, pixel label agreement and the mIoU of the candidate's masks taken
against the reference's masks as ground truth (dataset-level: intersections and unions summed over every case
before dividing). Logits are turned into masks exactly as deployment does (bilinear resize to the input size,
argmax); mask outputs are compared as they are. Non-finite values (NaN, inf) in either side fail the case: a NaN
compares false with everything, so it must be looked for, never left to a max().

Tolerances are data, one row per precision (``TOLERANCES``): FP32 must match to float rounding; FP16 and INT8 are
judged by what they are for, the masks (agreement, cosine of the logits) and, with labelled data, the mIoU drop.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from segdeploy import preprocess
from segdeploy.errors import SegdeployError
from segdeploy.evaluation.metrics import agreement, mean_iou
from segdeploy.evaluation.tolerances import TOLERANCES, Tolerance
from segdeploy.runtimes.base import Runner, TensorInfo, image_dims


def bound(reference: np.ndarray, rel: float) -> float:
    return rel * max(1.0, float(np.abs(reference).max(initial=0.0)))


def numeric_stats(reference: np.ndarray, actual: np.ndarray) -> dict:
    ref = reference.astype(np.float64, copy=False).ravel()
    out = actual.astype(np.float64, copy=False).ravel()
    finite = bool(np.isfinite(out).all() and np.isfinite(ref).all())
    if not finite:
        return {"finite": False, "nonfinite": int((~np.isfinite(out)).sum() + (~np.isfinite(ref)).sum()),
                "max_abs_err": float("nan"), "max_rel_err": float("nan"), "mean_abs_err": float("nan"),
                "cosine": float("nan"), "max_abs_ref": float("nan")}
    diff = np.abs(out - ref)
    ref_max = float(np.abs(ref).max(initial=0.0))
    norms = float(np.linalg.norm(ref) * np.linalg.norm(out))
    return {"finite": True, "nonfinite": 0, "max_abs_err": float(diff.max(initial=0.0)),
            "max_rel_err": float(diff.max(initial=0.0)) / ref_max if ref_max > 0 else float(diff.max(initial=0.0)),
            "mean_abs_err": float(diff.mean()) if diff.size else 0.0,
            "cosine": float(np.dot(ref, out) / norms) if norms > 0 else float(np.array_equal(ref, out)),
            "max_abs_ref": ref_max}


def confusion(reference_labels: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(K+1, K+1) counts, rows = reference class, columns = candidate class. Unlike a dataset's confusion matrix
    (metrics.confusion_matrix, which refuses labels outside the classes), a candidate's stray labels are data here:
    they land in the extra bin K and count as disagreements."""
    k = num_classes + 1
    ref, out = (np.clip(m.astype(np.int64).ravel(), -1, num_classes) for m in (reference_labels, labels))
    ref[ref < 0], out[out < 0] = num_classes, num_classes
    return np.bincount(ref * k + out, minlength=k * k).reshape(k, k)


@dataclass
class OutputReport:
    """One output, accumulated over every case."""
    name: str
    kind: str  # "logits" or "mask"
    num_classes: int
    tolerance: Tolerance
    cases: int = 0
    failed_cases: int = 0
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    mean_abs_err: float | None = None
    cosine: float | None = None
    max_abs_ref: float | None = None
    nonfinite: int = 0
    confusion: np.ndarray | None = field(default=None, repr=False)
    image_confusion: np.ndarray | None = field(default=None, repr=False)  # real images only (not seeded inputs)
    errors: list[str] = field(default_factory=list)
    # the figures each per-input criterion is judged by, at their worst, and on how many inputs each failed
    worst_bound_ratio: float | None = None  # max abs error / max(1, max|ref|)
    worst_agreement: float | None = None
    failed_by: dict[str, int] = field(default_factory=dict)
    _abs_sum: float = field(default=0.0, repr=False)
    _count: int = field(default=0, repr=False)
    _real_images: int = field(default=0, repr=False)

    def add_image(self, conf: np.ndarray) -> None:
        """Count a real image's confusion (what an all-inputs agreement is judged over when there are any)."""
        self.image_confusion = conf if self.image_confusion is None else self.image_confusion + conf
        self._real_images += 1

    def _judge(self, criterion: str, ok: bool) -> bool:
        if not ok:
            self.failed_by[criterion] = self.failed_by.get(criterion, 0) + 1
        return ok

    def fail(self, error: str) -> bool:
        """Count a case the candidate could not be compared on (it did not run, gave another shape, or NaN)."""
        self.errors.append(error)
        self.cases += 1
        self.failed_cases += 1
        return False

    def add(self, reference: np.ndarray, actual: np.ndarray, input_size, align_corners: bool,
            image: bool = False) -> bool:
        """Compare one case; ``image``: the input was a real image (not a seeded one)."""
        if reference.shape != actual.shape:
            return self.fail(f"shape {tuple(actual.shape)} where the reference has {tuple(reference.shape)}")
        tol = self.tolerance
        passed = True
        if self.kind == "logits":
            stats = numeric_stats(reference, actual)
            if not stats["finite"]:
                self.nonfinite += stats["nonfinite"]
                return self.fail(f"{stats['nonfinite']} non-finite values (NaN or inf) in the outputs")
            self.max_abs_err = max(self.max_abs_err or 0.0, stats["max_abs_err"])
            self.max_rel_err = max(self.max_rel_err or 0.0, stats["max_rel_err"])
            self.max_abs_ref = max(self.max_abs_ref or 0.0, stats["max_abs_ref"])
            self.cosine = stats["cosine"] if self.cosine is None else min(self.cosine, stats["cosine"])
            self._abs_sum += stats["mean_abs_err"] * reference.size
            self._count += reference.size
            self.mean_abs_err = self._abs_sum / self._count
            ratio = stats["max_abs_err"] / max(1.0, stats["max_abs_ref"])
            self.worst_bound_ratio = max(self.worst_bound_ratio or 0.0, ratio)
            if tol.max_rel is not None:
                passed = self._judge("max_abs", stats["max_abs_err"] <= bound(reference, tol.max_rel))
            if tol.min_cosine is not None:
                passed = self._judge("cosine", stats["cosine"] >= tol.min_cosine) and passed
            ref_labels = preprocess.logits_to_mask(reference, input_size, align_corners)
            labels = preprocess.logits_to_mask(actual, input_size, align_corners)
        else:
            ref_labels, labels = reference, actual
        conf = confusion(ref_labels, labels, self.num_classes)
        self.confusion = conf if self.confusion is None else self.confusion + conf
        if image:
            self.add_image(conf)
        case_agreement = agreement(conf)
        self.worst_agreement = case_agreement if self.worst_agreement is None else \
            min(self.worst_agreement, case_agreement)
        if tol.agreement_per_case:
            passed = self._judge("agreement", case_agreement >= tol.min_agreement) and passed
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
    def judged_agreement(self) -> float | None:
        """The agreement an all-inputs tolerance judges: over the real images when there were any."""
        conf = self.image_confusion if self.image_confusion is not None else self.confusion
        return None if conf is None else agreement(conf)

    @property
    def passed(self) -> bool:
        overall = self.tolerance.agreement_per_case or self.judged_agreement is None or \
            self.judged_agreement >= self.tolerance.min_agreement
        return self.cases > 0 and self.failed_cases == 0 and overall

    def checks(self) -> list[dict]:
        """The tolerance, criterion by criterion (see :func:`check`): each with the figure it is judged by (the
        worst input's, or the pooled agreement an all-inputs criterion judges) and on how many inputs it failed."""
        tol = self.tolerance
        rows = []
        if self.errors:
            rows.append(check(self.name, "inputs it ran on", self.cases - len(self.errors), "", ">=", self.cases,
                              failed=len(self.errors)))
        if self.kind == "logits" and tol.max_rel is not None and self.worst_bound_ratio is not None:
            rows.append(check(self.name, "max abs error / max(1, max|ref|), worst input", self.worst_bound_ratio, "",
                              "<=", tol.max_rel, failed=self.failed_by.get("max_abs", 0)))
        if self.kind == "logits" and tol.min_cosine is not None and self.cosine is not None:
            rows.append(check(self.name, "cosine of the logits, worst input", self.cosine, "", ">=", tol.min_cosine,
                              failed=self.failed_by.get("cosine", 0)))
        if tol.agreement_per_case and self.worst_agreement is not None:
            rows.append(check(self.name, "label agreement, worst input", self.worst_agreement, "%", ">=",
                              tol.min_agreement, failed=self.failed_by.get("agreement", 0)))
        elif not tol.agreement_per_case and self.judged_agreement is not None:
            where = f"over the {self._real_images} real images" if self.image_confusion is not None else \
                f"over all {self.cases - len(self.errors)} inputs (no real images)"
            rows.append(check(self.name, f"label agreement {where}", self.judged_agreement, "%", ">=",
                              tol.min_agreement))
        return rows

    def as_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "cases": self.cases, "failed_cases": self.failed_cases,
                "passed": self.passed, "max_abs_err": self.max_abs_err, "max_rel_err": self.max_rel_err,
                "mean_abs_err": self.mean_abs_err, "cosine": self.cosine, "max_abs_ref": self.max_abs_ref,
                "nonfinite": self.nonfinite, "mask_agreement": self.mask_agreement,
                "miou_vs_reference": self.miou_vs_reference, "errors": list(self.errors)}


@dataclass
class ValidationReport:
    outputs: dict[str, OutputReport]
    cases: list[dict]
    reference: dict
    candidate: dict
    tolerance: Tolerance
    locate: dict | None = None
    artifact: str | None = None
    model: str | None = None
    # integrity: does the graph still hash to what export recorded? (False = edited since export)
    graph_unchanged: bool | None = None
    notes: list[str] = field(default_factory=list)
    # validate --data: agreement and mIoU (with its delta) on a held-out set, judged by the same tolerance
    dataset: dict | None = None

    @property
    def passed(self) -> bool:
        held_out = self.dataset is None or self.dataset.get("passed", True)
        return bool(self.outputs) and all(o.passed for o in self.outputs.values()) and held_out

    def _worst(self, key, pick):
        values = [getattr(o, key) for o in self.outputs.values() if getattr(o, key) is not None]
        return pick(values) if values else None

    def summary(self, digits: int = 3) -> dict:
        """The headline numbers, rounded (they go into artifacts, which must be byte-reproducible)."""
        def r(v):
            return None if v is None else float(f"{v:.{digits}g}")
        return {"passed": self.passed, "precision": self.tolerance.precision,
                "max_abs_err": r(self._worst("max_abs_err", max)),
                "max_rel_err": r(self._worst("max_rel_err", max)), "cosine": r(self._worst("cosine", min)),
                "mask_agreement": r(self._worst("mask_agreement", min)),
                "miou_vs_reference": r(self._worst("miou_vs_reference", min)),
                "shapes": [list(s) for s in sorted({tuple(c["input_shape"]) for c in self.cases})],
                **({"held_out": self.dataset} if self.dataset is not None else {}),
                "cases": len(self.cases), "tolerance": self.tolerance.describe(),
                "checks": [{**c, "value": toward_failing(c["value"], c["op"])} for c in self.checks()],
                "reference": self.reference.get("backend"), "runtime": self.candidate.get("backend")}

    def as_dict(self) -> dict:
        out = self.summary(digits=6)
        out.update({"artifact": self.artifact, "model": self.model, "graph_unchanged": self.graph_unchanged,
                    "outputs": {k: v.as_dict() for k, v in self.outputs.items()}, "case_results": self.cases,
                    "reference_runner": self.reference, "candidate_runner": self.candidate, "locate": self.locate,
                    "notes": list(self.notes)})
        return out

    def checks(self) -> list[dict]:
        """Every criterion of the tolerance with the figure it is judged by (see OutputReport.checks), the
        held-out set's too."""
        rows = [row for o in self.outputs.values() for row in o.checks()]
        d, tol = self.dataset, self.tolerance
        if d is not None:
            rows.append(check("held-out set", f"label agreement over {d['images']} images", d["agreement"] / 100, "%",
                              ">=", tol.min_agreement))
            if "miou_delta" in d and tol.max_miou_drop is not None:
                rows.append(check("held-out set", f"mIoU drop ({d['miou_reference']:.2f} -> {d['miou']:.2f})",
                                  -d["miou_delta"], "points", "<=", tol.max_miou_drop))
        return rows

    def failure_line(self) -> str:
        """What failed, criterion by criterion, with the figure, the requirement and on how many inputs."""
        cases = {o.name: o.cases for o in self.outputs.values()}
        parts = []
        for c in self.checks():
            if c["passed"]:
                continue
            text = f"{c['output']}: {c['criterion']} {shown(c['value'], c['unit'], c['op'])}, needs {required(c)}"
            if c["failed"]:
                text += f" (failed on {c['failed']} of {cases.get(c['output'])} inputs)"
            parts.append(text)
        errors = [o for o in self.outputs.values() if o.errors]
        if errors:
            parts.append(f"first input it did not run on: {errors[0].errors[0]}")
        if not parts and not self.passed:
            parts.append("no outputs compared" if not self.outputs else "out of tolerance")
        return "; ".join(parts) or "no outputs compared"


def check(output: str, criterion: str, value: float, unit: str, op: str, limit: float, failed: int | None = None
          ) -> dict:
    """One criterion of a tolerance: ``value`` (the figure it is judged by) ``op`` (">=" or "<=") ``limit``;
    ``passed`` is exactly that comparison, so a table never marks a figure ok that misses its requirement.
    ``unit``: "%" (a fraction shown as percent), "points" or "" (a number); ``failed``: on how many inputs."""
    passed = value >= limit if op == ">=" else value <= limit
    return {"output": output, "criterion": criterion, "value": float(value), "unit": unit, "op": op,
            "limit": limit, "passed": bool(passed), "failed": failed}


def shown(value: float, unit: str, op: str | None = None) -> str:
    """A check's figure as printed; given its ``op``, rounded toward failing, so that a figure that misses its
    requirement is never printed as one that meets it (99.896% is '99.89%' under '>= 99.9%', not '99.90%')."""
    import math

    def directed(x: float, decimals: int) -> float:
        if op is None or not math.isfinite(x):
            return x
        scale = 10 ** decimals
        return (math.floor if op == ">=" else math.ceil)(round(x * scale, 6)) / scale

    if unit == "%":
        return f"{directed(value * 100, 2):.2f}%"
    if unit == "points":
        return f"{directed(value, 2):.2f} points"
    return f"{toward_failing(value, op) if op else value:.4g}"


def required(c: dict) -> str:
    limit = f"{c['limit']:.1%}" if c["unit"] == "%" else shown(c["limit"], c["unit"])
    return f"{c['op']} {limit}"


def toward_failing(value: float, op: str, digits: int = 4) -> float:
    """``value`` to ``digits`` significant digits, rounded toward failing (down for >=, up for <=), so that a
    figure recorded in a manifest meets a requirement of up to that many digits exactly when the figure did (and
    manifests stay byte-reproducible)."""
    import math

    if value == 0 or not math.isfinite(value):
        return value
    scale = 10 ** (digits - 1 - math.floor(math.log10(abs(value))))
    rounded = (math.floor if op == ">=" else math.ceil)(value * scale) / scale
    return float(f"{rounded:.{digits}g}")


def compare_runners(reference: Runner, candidate: Runner, feeds: list[tuple[str, dict]], *, num_classes: int,
                    align_corners: bool = False, tolerance: Tolerance | None = None,
                    progress=None) -> ValidationReport:
    """Run every feed through both runners and compare every output the two have in common."""
    tolerance = tolerance or TOLERANCES["fp32"]
    common = [o for o in candidate.outputs() if o.name in {r.name for r in reference.outputs()}]
    if not common:
        raise SegdeployError(f"no output names in common: reference {[o.name for o in reference.outputs()]}, "
                             f"candidate {[o.name for o in candidate.outputs()]}")
    reports = {o.name: OutputReport(o.name, "logits" if o.dtype.startswith("float") else "mask", num_classes,
                                    tolerance) for o in common}
    input_info = candidate.inputs()[0]
    cases = []
    for index, (source, feed) in enumerate(feeds):
        if progress:
            progress(f"comparing on {source}", index / max(1, len(feeds)))
        expected = reference.infer(feed)
        case = {"source": source, "input_shape": list(next(iter(feed.values())).shape), "outputs": {}}
        try:
            actual = candidate.infer(feed)
        except SegdeployError as exc:  # the candidate does not run on an input the reference takes
            actual, case["error"] = None, str(exc)
        size = spatial_size(feed, input_info)
        for name, report in reports.items():
            if actual is None:
                ok = report.fail(f"{source} {case['input_shape']}: {case['error']}")
            else:
                ok = report.add(expected[name], actual[name], size, align_corners,
                                image=not source.startswith("seeded:"))
            case["outputs"][name] = ok
        case["passed"] = all(case["outputs"].values())
        cases.append(case)
    return ValidationReport(reports, cases, reference.describe(), candidate.describe(), tolerance)


def spatial_size(feed: dict, info: TensorInfo) -> tuple[int, int]:
    _, height, width = image_dims(info, feed[info.name].shape)
    return height, width
