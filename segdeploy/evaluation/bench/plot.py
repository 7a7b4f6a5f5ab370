"""Throughput vs GMACs per image, the measured rows per backend beside the papers' points."""
from __future__ import annotations

import io

from segdeploy.errors import SegdeployError
from segdeploy.evaluation.bench.labels import row_names


def render_plot(report: dict) -> bytes:
    """Throughput vs GMACs per image: measured rows per backend and the papers' points, log-scale throughput."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SegdeployError("--plot needs matplotlib (pip install 'segdeploy[plot]')") from None
    from segdeploy.models import get_spec

    fig, ax = plt.subplots(figsize=(8, 5.5))
    ok = [r for r in report["results"] if r["status"] == "ok" and r.get("gmacs_per_image")]
    for key in sorted({row_names(r)[1] for r in ok}):
        rows = [r for r in ok if row_names(r)[1] == key]
        label = key
        ax.scatter([r["gmacs_per_image"] for r in rows], [r["throughput_ips"] for r in rows], label=label, s=30)
        for r in rows:
            ax.annotate(f"{r['model']} b{r['batch']}", (r["gmacs_per_image"], r["throughput_ips"]), fontsize=6,
                        xytext=(3, 2), textcoords="offset points")
    papers = {}
    for model in sorted({r["model"] for r in ok}):
        spec = get_spec(model)
        for entry in spec.paper.throughput:
            ips = entry.get("throughput_ips") or (1000.0 / entry["latency_ms"] if entry.get("latency_ms") else None)
            if ips and spec.paper.flops_g_512:
                # MACs grow with the pixel count, so a figure at another input sits at the scaled GFLOPs
                h, w = entry.get("input") or (512, 512)
                papers.setdefault(entry["device"], []).append((spec.paper.flops_g_512 * h * w / 512**2, ips, model,
                                                               entry))
    for device, points in sorted(papers.items()):
        ax.scatter([p[0] for p in points], [p[1] for p in points], marker="x", s=40,
                   label=f"paper: {device}")
        for x, y, model, entry in points:
            ax.annotate(f"{model} {entry['input'][0]}x{entry['input'][1]} b={entry['batch']}", (x, y), fontsize=6,
                        xytext=(3, -8), textcoords="offset points")
    ax.set_xlabel("GMACs per image, log (papers: their 'GFLOPs', scaled by pixel count to the figure's input)")
    ax.set_ylabel("throughput (img/s, log)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    cpu = report["machine"]["cpu"]
    ax.set_title(f"Measured on {cpu['model']} ({cpu['usable_cores']} cores) vs the papers' GPU figures", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130)
    plt.close(fig)
    return buf.getvalue()
