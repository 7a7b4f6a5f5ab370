"""A profile as tables (terminal and Markdown) and as a plot: the modules' times, shares and achieved GFLOP/s
against the FP32 peak, and the time per operator."""
from __future__ import annotations

import io

from segdeploy.errors import SegdeployError
from segdeploy.evaluation.bench.reports import peak_text_of


def _f(value, spec="{:.2f}", missing="-") -> str:
    return missing if value is None else spec.format(value)


def ordered(modules: list[dict], sort: str = "graph", top: int | None = None) -> list[dict]:
    """The module rows in graph order or by time; ``top`` keeps the largest N (in the chosen order)."""
    rows = [r for r in modules if r["ms"] > 0 or r.get("flops")]
    if top is not None and len(rows) > top:
        keep = {id(r) for r in sorted(rows, key=lambda r: -r["ms"])[:top]}
        rows = [r for r in rows if id(r) in keep]
    return sorted(rows, key=lambda r: -r["ms"]) if sort == "time" else rows


def _top_ops(ops: dict, total: float, count: int = 3) -> str:
    return ", ".join(f"{op} {ms / total:.0%}" for op, ms in list(ops.items())[:count]) if total > 0 else ""


MODULE_COLUMNS = ["Module", "ms", "Share", "GFLOP", "GFLOP/s", "% peak", "Layers", "Largest operators"]


def module_table(report: dict, sort: str = "graph", top: int | None = None) -> tuple[list[str], list[list]]:
    rows = []
    for r in ordered(report["modules"], sort, top):
        rows.append([r["module"], _f(r["ms"]), _f(r["share"] * 100, "{:.1f}%"), _f(r.get("gflop"), "{:.3f}"),
                     _f(r.get("gflops"), "{:.0f}"), _f(r["peak_fraction"] * 100 if r.get("peak_fraction") else None,
                                                       "{:.0f}%"),
                     str(r["layers"]), _top_ops(r["ops"], r["ms"])])
    return MODULE_COLUMNS, rows


def operator_table(report: dict, top: int = 12) -> tuple[list[str], list[list]]:
    rows = [[r["op"], _f(r["ms"]), _f(r["share"] * 100, "{:.1f}%"), str(r["layers"])]
            for r in report["operators"][:top]]
    return ["Operator", "ms", "Share", "Layers"], rows


def title(report: dict) -> str:
    what = report["model"] or report["artifact"]
    hint = f", {report['inference_precision']} inference" if report.get("inference_precision") not in (None, "fp32") \
        else ""
    return (f"segdeploy profile: {what} {report['height']}x{report['width']} b{report['batch']}, "
            f"{report['precision']}{hint} on {report['backend']} ({report['threads']} threads), "
            f"modules at depth {report['depth']}")


def summary_lines(report: dict) -> list[str]:
    latency, profiled, coverage = report["latency_ms"], report["profiled"], report["coverage"]
    statistic = report.get("statistic", "mean")
    lines = [f"latency {latency['p50']:.2f} ms (p50 of {report['protocol']['min_iters']}+ unprofiled calls); "
             f"{profiled['layers']} profiled layers add up to {profiled['layer_ms']:.2f} ms per run (each layer's "
             f"{statistic} over {report['runs']} runs) = {_f((coverage['of_latency_p50'] or 0) * 100, '{:.1f}')}% of "
             f"the latency ({_f((coverage['of_profiled_runs'] or 0) * 100, '{:.1f}')}% of the profiled runs' own "
             f"{statistic} {profiled['run_ms_mean']:.2f} ms)"]
    placement = report["placement"]
    lines.append(f"layers placed by the nodes they compute: {placement['own']}, beside a neighbour (layout "
                 f"reorders and copies the backend added): {placement['neighbour']}, in the whole graph: "
                 f"{placement['unplaced']}")
    flops, peak = report.get("flops"), report.get("peak")
    if flops:
        text = f"{flops['total'] / 1e9:.3f} GFLOP per run in {flops['nodes']} conv/matmul nodes"
        if flops["unresolved"]:
            text += f" ({flops['unresolved']} with shapes ONNX shape inference could not resolve, not counted)"
        if peak and profiled["layer_ms"] > 0:
            achieved = flops["total"] / (profiled["layer_ms"] / 1e3) / 1e9
            text += (f"; {achieved:.0f} GFLOP/s achieved, {achieved / peak['gflops']:.0%} of the FP32 peak "
                     f"{peak_text_of(peak)}")
        lines.append(text)
    if report["precision"].startswith("int8") and peak:
        lines.append("INT8 layers are set against the FP32 peak too: their int8 dot products can exceed it")
    lines += profiled.get("notes") or []
    return lines


def to_markdown(report: dict, sort: str = "graph", top: int | None = None) -> str:
    def table(columns, rows):
        out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
        return out

    machine = report["machine"]
    cpu = machine["cpu"]
    lines = [f"# {title(report)}", "", f"{cpu['model']} ({cpu['usable_cores']} usable cores), load "
             f"{machine['load_average']}; created {report['created']}; artifact `{report['artifact']}`", ""]
    lines += [f"- {line}" for line in summary_lines(report)] + [""]
    lines += table(*module_table(report, sort, top)) + ["", "By operator:", ""] + table(*operator_table(report))
    return "\n".join(lines) + "\n"


def render_plot(report: dict, top: int = 20) -> bytes:
    """Horizontal bars of the largest modules' times, split by operator, with each module's share of the FP32
    peak at the bar's end."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SegdeployError("--plot needs matplotlib (pip install 'segdeploy[plot]')") from None
    rows = ordered(report["modules"], "time", top)[::-1]
    colours = [r["op"] for r in report["operators"][:7]]
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(rows) + 1.6))
    left = [0.0] * len(rows)
    labels = [r["module"] for r in rows]
    for op in colours + ["other"]:
        widths = [(r["ops"].get(op, 0.0) if op != "other" else sum(ms for o, ms in r["ops"].items()
                                                                      if o not in colours)) for r in rows]
        ax.barh(labels, widths, left=left, label=op, height=0.7)
        left = [a + b for a, b in zip(left, widths)]
    for y, r in enumerate(rows):
        note = f"{r['share']:.0%}" + (f", {r['peak_fraction']:.0%} of peak" if r.get("peak_fraction") else "")
        ax.annotate(note, (r["ms"], y), xytext=(3, -3), textcoords="offset points", fontsize=7)
    ax.set_xlim(0, max((r["ms"] for r in rows), default=1.0) * 1.3)  # room for the notes at the bars' ends
    ax.set_xlabel("ms per run (profiled)")
    ax.set_title(title(report), fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130)
    plt.close(fig)
    return buf.getvalue()
