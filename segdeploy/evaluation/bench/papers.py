"""The papers' figures next to a measurement: params, GMACs, and every throughput figure they give, each labelled
with what differs (device, input size, batch protocol). FLOPs: the models' MACs come from
segdeploy.models.complexity (conv, linear and matmul MACs); achieved GFLOP/s counts **2 FLOPs per MAC**. The papers'
"GFLOPs" are MACs (mmcv convention), so reports put measured GMACs next to them."""
from __future__ import annotations

FLOPS_PER_MAC = 2
_DEVICE_NOISE = {"nvidia", "tesla", "geforce", "gpu", "rtx", "amd", "intel", "sxm2", "pcie"}


def same_device(paper_device: str, ours: str) -> bool:
    """Whether the paper's device names ours (its model tokens, e.g. "v100" or "3090", all occur in our name)."""
    tokens = [t for t in paper_device.lower().replace("-", " ").split() if t not in _DEVICE_NOISE]
    ours = ours.lower()
    return bool(tokens) and all(t in ours for t in tokens) and "unspecified" not in tokens


def paper_throughput_rows(model: str, height: int, width: int, batch: int, is_max: bool, throughput_ips: float,
                          device: str) -> list[dict]:
    """Every throughput figure the papers give for ``model``, set against this measurement with the ratio
    measured/paper and flags saying what differs (device, input size, batch protocol)."""
    from segdeploy.models import get_spec

    rows = []
    for entry in get_spec(model).paper.throughput:
        paper_batch = entry.get("batch")
        paper_ips = entry.get("throughput_ips")
        if paper_ips is None and entry.get("latency_ms"):
            paper_ips = 1000.0 / entry["latency_ms"] * (paper_batch if isinstance(paper_batch, int) else 1)
        same_input = list(entry.get("input") or []) == [height, width]
        same_batch = (paper_batch == "maximum" and is_max) or paper_batch == batch
        cross = not same_device(entry.get("device", ""), device)
        label = "cross-device" if cross else "same device"
        if not same_input:
            label += ", different input"
        if not same_batch:
            label += ", different batch"
        rows.append({"device": entry.get("device"), "input": entry.get("input"), "batch": paper_batch,
                     "throughput_ips": paper_ips, "ratio": throughput_ips / paper_ips if paper_ips else None,
                     "cross_device": cross, "same_input": same_input, "same_batch": same_batch, "label": label,
                     "source": entry.get("source")})
    return rows


def best_paper_match(rows: list[dict]) -> dict | None:
    """The figure closest to this setting: same input first, then same batch protocol."""
    if not rows:
        return None
    return max(rows, key=lambda r: (r["same_input"], r["same_batch"], not r["cross_device"]))


_COMPLEXITY: dict = {}


def complexity(model: str, height: int, width: int) -> dict:
    from segdeploy.models.complexity import measure

    key = (model, height, width)
    if key not in _COMPLEXITY:
        _COMPLEXITY[key] = measure(model, height, width)
    return _COMPLEXITY[key]


def paper_comparison(model: str, height: int, width: int, batch: int, is_max: bool, throughput_ips: float,
                     device: str) -> dict:
    from segdeploy.models import get_spec

    paper = get_spec(model).paper
    c = complexity(model, height, width)
    params_m = c["params"] / 1e6
    return {"params_m": params_m, "params_m_paper": paper.params_m,
            "params_ratio": params_m / paper.params_m if paper.params_m else None,
            "gmacs": c["gmacs"], "gflops_paper": paper.flops_g_512,
            # the papers' GFLOPs are MACs at 512x512; another input size is not comparable
            "gmacs_ratio": c["gmacs"] / paper.flops_g_512 if paper.flops_g_512 and (height, width) == (512, 512)
            else None,
            "throughput": paper_throughput_rows(model, height, width, batch, is_max, throughput_ips, device)}



def add_flops(row: dict, model: str | None, peak: dict | None) -> None:
    row["flops_per_mac"] = FLOPS_PER_MAC
    if not model:
        row["gmacs_per_image"] = row["achieved_gflops"] = row["peak_fraction"] = None
        return
    gmacs = complexity(model, row["height"], row["width"])["gmacs"]
    row["gmacs_per_image"] = gmacs
    row["achieved_gflops"] = FLOPS_PER_MAC * gmacs * row["throughput_ips"]
    row["peak_fraction"] = row["achieved_gflops"] / peak["gflops"] if peak else None

