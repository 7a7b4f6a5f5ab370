"""Per-layer times folded onto the module tree: every layer's time lands in exactly one module row, so the rows add
up to the profiled total whatever the depth; FLOPs are folded by the same scopes, from the ONNX graph's nodes."""
from __future__ import annotations

from collections import defaultdict

from segdeploy.evaluation.profile.scopes import Scope, scope_text


def truncate(scope: Scope, depth: int) -> Scope:
    return tuple(scope[:depth]) if depth > 0 else ()


def fold(layers: list[dict], depth: int, flops_by_scope: dict[Scope, int] | None = None) -> list[dict]:
    """Module rows at ``depth`` levels (``layers``: dicts with ``scope``, ``ms``, ``op``), in graph order (the order
    of each module's first layer): ms, share of the total, layer count, time per operator and, where
    ``flops_by_scope`` (FLOPs per full node scope) is given, the module's FLOPs."""
    total = sum(layer["ms"] for layer in layers)
    rows: dict[Scope, dict] = {}
    for layer in layers:
        key = truncate(tuple(layer["scope"]), depth)
        row = rows.get(key)
        if row is None:
            row = rows[key] = {"scope": list(key), "module": scope_text(key), "ms": 0.0, "layers": 0,
                               "ops": defaultdict(float)}
        row["ms"] += layer["ms"]
        row["layers"] += 1
        row["ops"][layer["op"]] += layer["ms"]
    flops = defaultdict(int)
    for scope, value in (flops_by_scope or {}).items():
        flops[_owner(truncate(scope, depth), rows)] += value
    out = []
    for key, row in rows.items():
        row["share"] = row["ms"] / total if total > 0 else 0.0
        row["ops"] = dict(sorted(row["ops"].items(), key=lambda item: -item[1]))
        row["flops"] = flops.get(key) if flops_by_scope is not None else None
        out.append(row)
    unowned = flops.get(None)
    if unowned:  # FLOPs of nodes whose module no layer landed in (fused away into a neighbour's module)
        out.append({"scope": None, "module": "(FLOPs of fused-away modules)", "ms": 0.0, "layers": 0, "ops": {},
                    "share": 0.0, "flops": unowned})
    return out


def _owner(scope: Scope, rows: dict) -> Scope | None:
    """The row a node's FLOPs belong to: its own module's, else the nearest enclosing module that has a row (a
    node whose layer was fused into its parent's)."""
    while True:
        if scope in rows:
            return scope
        if not scope:
            return None
        scope = scope[:-1]


def by_operator(layers: list[dict]) -> list[dict]:
    """Time per operator type, largest first."""
    total = sum(layer["ms"] for layer in layers)
    ops: dict[str, dict] = {}
    for layer in layers:
        row = ops.setdefault(layer["op"], {"op": layer["op"], "ms": 0.0, "layers": 0})
        row["ms"] += layer["ms"]
        row["layers"] += 1
    for row in ops.values():
        row["share"] = row["ms"] / total if total > 0 else 0.0
    return sorted(ops.values(), key=lambda r: -r["ms"])
