"""Accuracy-aware mixed precision: which quantized blocks to keep in float so an INT8 graph stays within an accuracy
budget.

A sensitivity pass quantizes one block at a time (a block: the quantized layers of one module scope, e.g.
``/model/backbone/network.4/network.4.7/``), runs it on a few calibration images and ranks the blocks by the output
error each causes alone (noise-to-signal ratio of the logits against FP32). Then the worst are kept in float, in that
order, until the accuracy drop on the held-out set is within the budget: the number kept is found by doubling, then
bisection, so a budget that needs k blocks costs about 2 log2(k) evaluations, not k.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from segdeploy.errors import SegdeployError

MIN_BLOCKS, MAX_BLOCKS = 12, 48
SENSITIVITY_IMAGES = 4


@dataclass
class Block:
    name: str
    nodes: list[str]
    nsr: float = 0.0  # noise-to-signal ratio of the logits with only this block quantized
    agreement: float = 1.0  # label agreement with FP32, same run

    def as_dict(self) -> dict:
        return {"block": self.name, "nodes": len(self.nodes), "nsr": float(f"{self.nsr:.4g}"),
                "agreement": float(f"{self.agreement:.5f}")}


@dataclass
class SearchResult:
    kept: list[Block]
    score: float
    drop: float
    evaluations: list[dict] = field(default_factory=list)
    ranking: list[Block] = field(default_factory=list)


def _prefix(name: str, depth: int) -> str:
    parts = [p for p in name.strip("/").split("/")[:-1] if p]  # the scope, without the node's own name
    return "/" + "/".join(parts[:depth]) + "/" if parts else name


def group_blocks(nodes: list[str]) -> list[Block]:
    """The quantized nodes grouped by module scope, at the shallowest depth that gives at least MIN_BLOCKS blocks
    (fewer when there are fewer nodes), stepping back a level when that one overshoots MAX_BLOCKS."""
    best: OrderedDict[str, list[str]] | None = None
    for depth in range(1, 16):
        groups: OrderedDict[str, list[str]] = OrderedDict()
        for node in nodes:
            groups.setdefault(_prefix(node, depth), []).append(node)
        if len(groups) >= min(MIN_BLOCKS, len(nodes)):
            if len(groups) > MAX_BLOCKS and best is not None and len(best) >= MIN_BLOCKS // 2:
                groups = best
            return [Block(name, members) for name, members in groups.items()]
        best = groups
    return [Block(name, members) for name, members in (best or {}).items()]


def logits_error(reference: list[np.ndarray], candidate: list[np.ndarray]) -> tuple[float, float]:
    """(noise-to-signal ratio, label agreement) of candidate logits against the reference's, over all images."""
    noise = signal = 0.0
    same = total = 0
    for ref, out in zip(reference, candidate):
        ref64, out64 = ref.astype(np.float64), out.astype(np.float64)
        noise += float(((out64 - ref64) ** 2).sum())
        signal += float((ref64 ** 2).sum())
        if ref.ndim == 4:
            same += int((ref.argmax(1) == out.argmax(1)).sum())
            total += ref.shape[0] * ref.shape[2] * ref.shape[3]
        else:
            same += int((ref == out).sum())
            total += ref.size
    return noise / max(signal, 1e-30), same / max(total, 1)


def rank_blocks(blocks: list[Block], build: Callable[[dict[str, str]], object], run: Callable[[object], list],
                reference: list, progress=None) -> list[Block]:
    """Each block's error when it alone is quantized; blocks sorted worst first."""
    everything = {node for block in blocks for node in block.nodes}
    for i, block in enumerate(blocks):
        if progress is not None:
            progress(f"sensitivity {i}/{len(blocks)}: {block.name}", i / max(1, len(blocks)))
        others = {node: "sensitivity: only one block quantized" for node in everything - set(block.nodes)}
        block.nsr, block.agreement = logits_error(reference, run(build(others)))
    return sorted(blocks, key=lambda b: (-b.nsr, b.name))


def keep_until_within(ranking: list[Block], budget: float, reference_score: float, first_score: float,
                      evaluate: Callable[[list[Block]], float], metric: str, progress=None) -> SearchResult:
    """The fewest worst-ranked blocks to keep in float for ``reference_score - score <= budget``."""
    history = [{"kept_blocks": 0, "score": round(first_score, 3), "drop": round(reference_score - first_score, 3)}]
    scores = {0: first_score}

    def try_k(k: int) -> float:
        if k not in scores:
            if progress is not None:
                progress(f"keeping the {k} most sensitive blocks in float: evaluating {metric}", None)
            scores[k] = evaluate(ranking[:k])
            history.append({"kept_blocks": k, "score": round(scores[k], 3),
                            "drop": round(reference_score - scores[k], 3)})
        return scores[k]

    def within(k: int) -> bool:
        return reference_score - try_k(k) <= budget

    if within(0):
        return SearchResult([], first_score, reference_score - first_score, history, ranking)
    low, high = 0, 1
    while not within(high):
        if high == len(ranking):
            raise SegdeployError(f"even with all {len(ranking)} quantized blocks kept in float the {metric} drop is "
                                 f"{reference_score - scores[high]:.2f} points (> {budget:g}); the loss is not in "
                                 "the quantized layers: check the float16 islands and the calibration")
        low, high = high, min(2 * high, len(ranking))
    while high - low > 1:
        mid = (low + high) // 2
        if within(mid):
            high = mid
        else:
            low = mid
    return SearchResult(ranking[:high], scores[high], reference_score - scores[high], history, ranking)
