"""One comparison across formats and precisions (Ultralytics' benchmark table, for precision): for each precision
an artifact is exported (calibrated, cached), and each runs on every backend that takes it; a row gives the size,
the accuracy on a held-out set and its delta against FP32, label agreement with FP32, p50 latency and img/s, and the
speed-up over the best FP32 CPU path. The header says whether this CPU has int8 dot-product instructions; without
them INT8 is never recommended for speed.

Precisions: ``fp32``, ``fp16``, ``int8-cpu`` (the uint8 form ONNX Runtime fuses), ``int8-openvino`` (symmetric Q/DQ
on the compute layers, float32 elsewhere: OpenVINO's fastest), ``int8`` (the flavour made for each backend compared)
and ``int8-tensorrt`` (TensorRT's flavour, run on the CPU runtimes for its accuracy; its CPU speed is not its point).
Every row runs on every backend given, so each flavour is also seen where it is not meant to run.
Calibration images: ``calib``, else the training split of ``data`` when it is a dataset folder; accuracy is measured
on ``data``'s validation split (or its images, by agreement), and an overlap is refused.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import warnings
from dataclasses import asdict, dataclass, field

from segdeploy import __version__, backends, flavours
from segdeploy.artifact.formats import ONNX_SUFFIX
from segdeploy.artifact.onnx_file import file_sha256
from segdeploy.artifact.reader import ArtifactWarning, read_manifest
from segdeploy.errors import InputError, SegdeployError
from segdeploy.evaluation.accuracy import agreement_percent, held_out, miou, predict_masks
from segdeploy.evaluation.bench.protocol import Progress, Protocol, time_runner
from segdeploy.evaluation.tolerances import tolerance_for
from segdeploy.export.precision import PrecisionOptions
from segdeploy.export.precision.calibration_images import check_disjoint, select_images
from segdeploy.export.trace import GRAPH_REVISION
from segdeploy.files.atomic import write_bytes_atomic
from segdeploy.hostinfo import int8_speed_note, machine_info
from segdeploy.runtimes.base import random_feed
from segdeploy.runtimes.registry import create_runner, get_backend

SCHEMA = "segdeploy.bench.precision/1"
# the CPU flavours first, then the one for engines
_INT8 = sorted(flavours.FLAVOURS.values(), key=lambda f: f.builds_engine)
PRECISIONS = {"fp32": ("fp32", None), "fp16": ("fp16", None), "int8": ("int8", flavours.DEFAULT),
              **{f.label: ("int8", f.name) for f in _INT8}}
INT8_FOR_BACKEND = {backend: f.label for f in _INT8 for backend in f.fast_on}
SPEED_TARGET = 1.3  # CPU INT8 (cpu or openvino flavour) over the best FP32 CPU path, on CPUs with int8 dot products


@dataclass
class PrecisionBench:
    model: str
    precisions: list[str] = field(default_factory=lambda: ["fp32", "fp16", "int8"])
    backends: list[str] = field(default_factory=lambda: [backends.ONNXRUNTIME])
    height: int = 512
    width: int = 512
    checkpoint: str | None = None
    data: str | None = None
    calib: str | None = None
    calib_count: int = 32
    calib_method: str = "minmax"
    limit: int | None = None
    threads: int | None = None
    protocol: Protocol = field(default_factory=Protocol)
    cache_dir: str = os.path.join("artifacts", "cache")
    rebuild: bool = False


def parse_precisions(text: str, backends=(backends.ONNXRUNTIME,)) -> list[str]:
    """The comparison's rows; a bare ``int8`` is the INT8 flavour made for each backend compared (int8-cpu for ONNX
    Runtime, int8-openvino for OpenVINO)."""
    names = [p.strip().lower() for p in str(text).split(",") if p.strip()]
    bad = [p for p in names if p not in PRECISIONS]
    if bad or not names:
        raise InputError(f"--precision takes a comma-separated list of {', '.join(PRECISIONS)}, not {text!r}")
    canonical = []
    for name in names:
        if name == "int8":
            canonical += [INT8_FOR_BACKEND[b] for b in backends if b in INT8_FOR_BACKEND] or \
                [flavours.get(flavours.DEFAULT).label]
        else:
            canonical.append(name)
    return list(dict.fromkeys(canonical))


def flavour_notes(rows: list[dict]) -> list[str]:
    """One line per INT8 flavour timed on a runtime it was not made for (its speed there says little)."""
    made_for = {label: backend for backend, label in INT8_FOR_BACKEND.items()}
    seen = dict.fromkeys((r.get("precision"), r.get("backend")) for r in rows
                         if r.get("precision") in made_for and r.get("backend") != made_for[r.get("precision")])
    return [f"{label} is made for {made_for[label]}: {backend} runs it without the fusions it was laid out for, "
            f"so its speed there is not that flavour's" for label, backend in seen]


def calibration_folder(request: PrecisionBench) -> str | None:
    if request.calib:
        return request.calib
    if request.data and os.path.isdir(os.path.join(request.data, "images", "training")):
        return request.data  # a dataset folder: calibration reads its training split
    return None


def calibration_images(request: PrecisionBench):
    """The calibration images the request's INT8 exports are calibrated on (None without a calibration folder)."""
    calib = calibration_folder(request)
    return select_images(calib, request.calib_count) if calib else None


def check(request: PrecisionBench) -> None:
    from segdeploy.models import get_spec

    spec = get_spec(request.model)
    if request.height % spec.size_multiple or request.width % spec.size_multiple:
        raise InputError(f"{request.model} needs a size that is a multiple of {spec.size_multiple}")
    if any(PRECISIONS[p][0] == "int8" for p in request.precisions) and calibration_folder(request) is None:
        raise InputError("int8 needs calibration images: --calib DIR, or --data a dataset folder with a training "
                         "split")
    if "fp32" not in request.precisions:
        raise InputError("the comparison is against FP32: include fp32 in --precision")
    for backend in request.backends:
        record = get_backend(backend)
        if record.consumes not in ("onnx", "model"):
            raise InputError(f"backend {backend} runs {record.consumes} artifacts; the precision comparison runs "
                             "ONNX artifacts (onnxruntime, openvino) and the PyTorch model (torch, fp32)")


def artifact_key(request: PrecisionBench, label: str, calib_sha: str | None) -> str:
    payload = {"model": request.model, "size": [request.height, request.width], "precision": label,
               "checkpoint": file_sha256(request.checkpoint) if request.checkpoint else None,
               "calib": calib_sha, "count": request.calib_count, "method": request.calib_method,
               "segdeploy": __version__, "graph_revision": GRAPH_REVISION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def precision_artifact(request: PrecisionBench, label: str, images, progress: Progress | None) -> str:
    """The artifact of ``label`` from the cache, exported (not verified: the table's accuracy columns judge it)."""
    from segdeploy.export.onnx import export_onnx

    mode, target = PRECISIONS[label]
    calib = calibration_folder(request) if mode != "fp32" else None
    key = artifact_key(request, label, images.sha256 if images is not None and mode != "fp32" else None)
    path = os.path.join(request.cache_dir, "precision",
                        f"{request.model}_{request.height}x{request.width}_{label}_{key}{ONNX_SUFFIX}")
    if os.path.isfile(path) and not request.rebuild:
        return path
    options = PrecisionOptions(mode, target, calib=calib if mode != "fp32" else None,
                               calib_count=request.calib_count, calib_method=request.calib_method)
    say = (lambda text, fraction=None, *_: progress(f"{label}: {text}", fraction or 0.0)) if progress else None
    export_onnx(request.model, path, checkpoint=request.checkpoint, height=request.height, width=request.width,
                force=True, precision=options, threads=request.threads, progress=say)
    return path


def compare_precisions(request: PrecisionBench, progress: Progress | None = None) -> dict:
    check(request)
    machine = machine_info()
    threads = request.threads or machine["cpu"]["usable_cores"]
    request = PrecisionBench(**{**request.__dict__, "threads": threads})
    held = held_out(request.data, request.limit) if request.data else None
    images = calibration_images(request)
    if images is not None and held is not None:
        check_disjoint(images.digests, held.image_paths, "the comparison's accuracy")
    rows, reference_masks = [], None
    with warnings.catch_warnings():  # its own exports, unverified by design: it measures their accuracy itself
        warnings.simplefilter("ignore", ArtifactWarning)
        for label in request.precisions:
            mode, _ = PRECISIONS[label]
            try:
                artifact = precision_artifact(request, label, images, progress)
            except SegdeployError as exc:
                rows.append({"precision": label, "status": "failed", "error": f"export: {exc}"})
                continue
            manifest = read_manifest(artifact)
            for backend in request.backends:
                if get_backend(backend).consumes == "model" and mode != "fp32":
                    continue  # the PyTorch row is the FP32 model itself
                row, masks = measure_row(request, backend, label, artifact, manifest, held, reference_masks, progress)
                if reference_masks is None and masks is not None:
                    reference_masks = masks
                    row["agreement"] = 100.0
                rows.append(row)
    _relate(rows, held)
    cpu = machine["cpu"]
    report = {"schema": SCHEMA, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "model": request.model, "checkpoint": os.path.basename(request.checkpoint) if request.checkpoint
              else None, "size": [request.height, request.width], "threads": threads,
              "data": held.source if held else None, "metric": held.metric if held else None,
              "calibration": images.provenance() | {"method": request.calib_method} if images else None,
              "protocol": asdict(request.protocol), "machine": machine, "int8_note": int8_speed_note(cpu),
              "int8_dot_product": bool(cpu.get("int8_dot_product")), "rows": rows}
    report["recommendation"] = recommendation(report)
    return report


def measure_row(request: PrecisionBench, backend: str, label: str, artifact: str, manifest, held, reference_masks,
                progress: Progress | None) -> tuple[dict, list | None]:
    """One (precision, backend) row: accuracy on the held-out set (masks returned for the agreement of later rows),
    then the timing; a failure becomes the row's status."""
    from segdeploy.evaluation.feeds import manifest_image_feed

    runs_model = get_backend(backend).consumes == "model"
    row = {"format": "PyTorch" if runs_model else "ONNX", "backend": backend, "precision": label,
           "artifact": None if runs_model else artifact,
           "size_mb": _size_mb(request) if runs_model else os.path.getsize(artifact) / 2**20, "status": "ok"}
    what = f"{label} on {backend}"
    masks = None
    try:
        runner = create_runner(backend, model=request.model, checkpoint=request.checkpoint, threads=request.threads) \
            if runs_model else create_runner(backend, artifact=artifact, threads=request.threads)
        with runner:
            info = runner.inputs()[0]
            name = runner.outputs()[0].name
            if held is not None:
                def feed(image):  # the PyTorch model takes what the FP32 artifact takes
                    return manifest_image_feed(image, info, manifest)

                say = (lambda text, fraction: progress(f"{what}: accuracy {text}", fraction)) if progress else None
                masks = predict_masks(lambda f: runner.infer(f)[name], held, feed,
                                      manifest.preprocessing.align_corners, say, "")
                if reference_masks is not None:
                    row["agreement"] = agreement_percent(masks, reference_masks)
                if held.labelled:
                    row["miou"] = miou(held, masks, manifest.num_classes)
            say = (lambda text, fraction: progress(f"{what}: timing", fraction)) if progress else None
            timed = time_runner(runner, random_feed(runner, 1, request.height, request.width), request.protocol,
                                say, what)
            row["runner"] = runner.describe()
        row.update(p50_ms=timed["latency_ms"]["p50"], mean_ms=timed["latency_ms"]["mean"],
                   throughput_ips=timed["throughput_ips"], iterations=timed["iterations"])
    except SegdeployError as exc:
        row.update(status="failed", error=str(exc))
    except Exception as exc:  # a backend crash on one row must not lose the others
        row.update(status="failed", error=f"{type(exc).__name__}: {str(exc).strip()[:200]}")
    return row, masks


def _size_mb(request: PrecisionBench) -> float | None:
    if request.checkpoint and os.path.isfile(request.checkpoint):
        return os.path.getsize(request.checkpoint) / 2**20
    return None


def _relate(rows: list[dict], held) -> None:
    """Deltas against FP32 and speed-ups over the best FP32 CPU path (ONNX Runtime or OpenVINO)."""
    fp32 = [r for r in rows if r["precision"] == "fp32" and r["status"] == "ok"]
    onnx_fp32 = [r for r in fp32 if r["format"] == "ONNX"]
    best = max(onnx_fp32 or fp32, key=lambda r: r["throughput_ips"], default=None)
    reference_miou = next((r.get("miou") for r in fp32 if r.get("miou") is not None), None)
    for row in rows:
        if row["status"] != "ok":
            continue
        if reference_miou is not None and row.get("miou") is not None:
            row["miou_delta"] = row["miou"] - reference_miou
        if best is not None:
            row["speedup_vs_best_fp32"] = row["throughput_ips"] / best["throughput_ips"]
            row["best_fp32"] = f"{best['backend']} fp32"
        row["within_tolerance"] = within_tolerance(row)


def within_tolerance(row: dict) -> bool | None:
    """The precision's tolerance on the held-out set: label agreement with FP32, and the mIoU drop where labelled."""
    mode, flavour = PRECISIONS[row["precision"]]
    tolerance = tolerance_for(mode, flavour)
    if row.get("agreement") is None:
        return None
    ok = row["agreement"] >= 100 * tolerance.min_agreement
    if row.get("miou_delta") is not None and tolerance.max_miou_drop is not None:
        ok = ok and -row["miou_delta"] <= tolerance.max_miou_drop
    return ok


def recommendation(report: dict) -> str:
    rows = [r for r in report["rows"] if r["status"] == "ok"]
    if not report["int8_dot_product"]:
        return ("this CPU has no int8 dot-product instructions: INT8 is not recommended for speed here (use it for "
                "size); " + _best_line(rows, exclude_int8=True))
    # every flavour counts: the recommendation is the fastest accurate artifact here, whatever it was made for
    int8 = [r for r in rows if r["precision"].startswith("int8") and r.get("speedup_vs_best_fp32") is not None]
    if not int8:
        return _best_line(rows, exclude_int8=False)
    accurate = [r for r in int8 if r.get("within_tolerance") is not False]
    if not accurate:
        return "no INT8 row is within its accuracy tolerance; " + _best_line(rows, exclude_int8=True)
    fastest = max(accurate, key=lambda r: r["speedup_vs_best_fp32"])
    label = f"INT8 ({fastest['precision'].removeprefix('int8-')} flavour) on {fastest['backend']}"
    speedup = f"{fastest['speedup_vs_best_fp32']:.2f}x the best FP32 path ({fastest['best_fp32']})"
    if fastest["speedup_vs_best_fp32"] >= SPEED_TARGET:
        return f"{label}: {speedup}" + _accuracy_text(fastest)
    return f"{label}, the fastest INT8 within tolerance, is only {speedup} (target {SPEED_TARGET}x); " + \
        _best_line(rows, exclude_int8=False)


def _accuracy_text(row: dict) -> str:
    if row.get("miou_delta") is not None:
        return f", mIoU {row['miou_delta']:+.2f} points"
    if row.get("agreement") is not None:
        return f", {row['agreement']:.2f}% label agreement with FP32"
    return ""


def _best_line(rows: list[dict], exclude_int8: bool) -> str:
    pool = [r for r in rows if r.get("within_tolerance") is not False and
            not (exclude_int8 and r["precision"].startswith("int8"))]
    if not pool:
        return "no row is within its tolerance"
    best = max(pool, key=lambda r: r["throughput_ips"])
    return f"fastest within tolerance: {best['precision']} on {best['backend']} ({best['throughput_ips']:.2f} img/s)"


# ----------------------------------------------------------------------------------------------------------------
# Reports


COLUMNS = ["Format", "Backend", "Precision", "Size MB", "mIoU", "Δ vs FP32", "Agreement %", "p50 ms", "img/s",
           "vs best FP32", "Status"]


def table_rows(report: dict) -> tuple[list[str], list[list]]:
    def f(value, spec):
        return "-" if value is None else format(value, spec)

    out = []
    for r in report["rows"]:
        status = "ok" if r["status"] == "ok" and r.get("within_tolerance") is not False else \
            ("out of tolerance" if r["status"] == "ok" else f"failed: {r.get('error', '')[:60]}")
        out.append([r.get("format", "-"), r.get("backend", "-"), r["precision"], f(r.get("size_mb"), ".1f"),
                    f(r.get("miou"), ".2f"), f(r.get("miou_delta"), "+.2f"), f(r.get("agreement"), ".2f"),
                    f(r.get("p50_ms"), ".1f"), f(r.get("throughput_ips"), ".2f"),
                    f(r.get("speedup_vs_best_fp32"), ".2f") + ("x" if r.get("speedup_vs_best_fp32") else ""),
                    status])
    return COLUMNS, out


def header(report: dict) -> str:
    cpu = report["machine"]["cpu"]
    data = f"; accuracy on {report['data']}" if report.get("data") else "; no --data: accuracy not measured"
    return (f"{report['model']} at {report['size'][0]}x{report['size'][1]}, batch 1, {report['threads']} threads on "
            f"{cpu['model']}{data}. {report['int8_note'][0].upper()}{report['int8_note'][1:]}.")


def to_markdown(report: dict) -> str:
    columns, rows = table_rows(report)
    p = report["protocol"]
    lines = [f"# segdeploy precision comparison: {report['model']} ({report['created']})", "", header(report), "",
             f"Protocol: warm-up {p['warmup_s']} s, then at least {p['min_s']} s and {p['min_iters']} calls, one "
             "synchronous request at a time; latency is host wall time per call. 'vs best FP32' is img/s over the "
             "fastest FP32 ONNX row. int8-cpu is made for ONNX Runtime, int8-openvino for OpenVINO; int8-tensorrt is "
             "TensorRT's flavour run on the CPU for its accuracy.", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
    lines += ["", f"Recommendation: {report['recommendation']}", ""]
    return "\n".join(lines)


def plot(report: dict, path: str, force: bool = False) -> None:
    """img/s against accuracy (mIoU, else agreement) per row, labelled; one PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError("--plot needs matplotlib (pip install segdeploy[plot])") from None
    import io

    rows = [r for r in report["rows"] if r["status"] == "ok"]
    key = "miou" if any(r.get("miou") is not None for r in rows) else "agreement"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        if r.get(key) is None:
            continue
        marker = get_backend(r["backend"]).plot_marker
        ax.scatter(r["throughput_ips"], r[key], marker=marker, s=60)
        ax.annotate(f"{r['precision']} {r['backend']}", (r["throughput_ips"], r[key]), textcoords="offset points",
                    xytext=(5, 4), fontsize=8)
    ax.set_xlabel(f"img/s ({report['size'][0]}x{report['size'][1]}, batch 1, {report['threads']} threads)")
    ax.set_ylabel("mIoU (%)" if key == "miou" else "label agreement with FP32 (%)")
    ax.set_title(f"{report['model']}: precision vs speed on {report['machine']['cpu']['model']}", fontsize=10)
    ax.grid(alpha=0.3)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue(), force=force)
