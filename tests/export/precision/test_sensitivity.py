"""Mixed precision's search: blocks by module scope, the ranking by error alone, and keep-until-within (the fewest
worst blocks, found with few evaluations; an impossible budget is one clear error)."""
from __future__ import annotations

import numpy as np
import pytest

from segdeploy.errors import SegdeployError
from segdeploy.export.precision.sensitivity import Block, group_blocks, keep_until_within, logits_error, rank_blocks


def test_blocks_follow_module_scopes():
    nodes = [f"/model/backbone/stage{s}/block{b}/conv{c}/Conv" for s in range(4) for b in range(4) for c in range(2)]
    blocks = group_blocks(nodes)
    # depth 2 gives 1 block (/model/backbone/), depth 3 gives 4 stages: too few; depth 4 gives 16 blocks
    assert len(blocks) == 16 and blocks[0].name == "/model/backbone/stage0/block0/"
    assert all(len(b.nodes) == 2 for b in blocks)
    assert len(group_blocks(["/a/Conv", "/b/Conv"])) == 2  # fewer nodes than blocks wanted: one block each


def test_logits_error_and_ranking():
    reference = [np.random.default_rng(0).standard_normal((1, 3, 4, 4))]
    nsr, agreement = logits_error(reference, reference)
    assert nsr == 0 and agreement == 1
    noisy = [reference[0] + 0.1]
    assert logits_error(reference, noisy)[0] > 0
    blocks = [Block("a", ["a1"]), Block("b", ["b1"]), Block("c", ["c1"])]
    damage = {"a1": 0.05, "b1": 0.5, "c1": 0.01}  # the error of each block's node when quantized

    def build(keep):
        return sum(v for k, v in damage.items() if k not in keep)

    ranked = rank_blocks(blocks, build, lambda total: [reference[0] + total], reference)
    assert [b.name for b in ranked] == ["b", "a", "c"]


def test_keep_until_within_finds_the_fewest_blocks_with_few_evaluations():
    ranking = [Block(f"b{i}", [f"n{i}"]) for i in range(20)]
    calls = []

    def evaluate(kept):  # each kept block recovers 0.5 points of a 5-point loss
        calls.append(len(kept))
        return 40.0 + 0.5 * len(kept)

    found = keep_until_within(ranking, 1.0, 45.0, 40.0, evaluate, "mIoU")
    assert len(found.kept) == 8 and found.drop == pytest.approx(1.0)
    assert len(calls) <= 6  # doubling 1, 2, 4, 8 then bisection, not 8 single steps
    assert [e["kept_blocks"] for e in found.evaluations][0] == 0
    nothing = keep_until_within(ranking, 5.0, 45.0, 40.0, evaluate, "mIoU")
    assert nothing.kept == [] and nothing.evaluations == [{"kept_blocks": 0, "score": 40.0, "drop": 5.0}]


def test_an_unreachable_budget_is_one_error():
    ranking = [Block(f"b{i}", [f"n{i}"]) for i in range(3)]
    with pytest.raises(SegdeployError, match="even with all 3 quantized blocks kept in float"):
        keep_until_within(ranking, 0.5, 45.0, 40.0, lambda kept: 42.0, "mIoU")
