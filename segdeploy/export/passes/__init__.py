"""Graph passes: each takes an ONNX model and returns ``(model, PassReport)``, one pass per module, so they compose
and are tested alone (onnxslim's one-pattern-per-file idea). The export orchestrator (export/onnx.py) runs them in
order and records every report in the artifact's manifest."""
from __future__ import annotations

import collections
from dataclasses import dataclass, field

STANDARD_DOMAINS = ("", "ai.onnx")


@dataclass
class PassReport:
    name: str
    nodes_before: int
    nodes_after: int
    tool: str = ""
    notes: list[str] = field(default_factory=list)
    op_counts: dict[str, int] = field(default_factory=dict)  # of the result
    # what a pass decided, in structured form (the precision passes' islands and Q/DQ placement); the orchestrator
    # files it where it belongs in the manifest, so as_dict() leaves it out
    details: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"name": self.name, "tool": self.tool, "nodes_before": self.nodes_before,
                "nodes_after": self.nodes_after, "notes": list(self.notes), "op_counts": dict(self.op_counts)}


def op_counts(model) -> dict[str, int]:
    return dict(sorted(collections.Counter(node.op_type for node in model.graph.node).items()))


def default_opset(model) -> int:
    for entry in model.opset_import:
        if entry.domain in STANDARD_DOMAINS:
            return entry.version
    return 0
