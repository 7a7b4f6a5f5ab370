"""Graph passes: each takes an ONNX model and returns ``(model, PassReport)``, so they compose and test alone.

* ``check_standard_ops``: every node in the default ONNX domain and the opset at least 17 (LayerNormalization). A
  custom domain would tie the artifact to one runtime's plugins; it is an error, not a warning.
* ``simplify``: onnx-simplifier (constant folding, shape inference, BN/Conv fusion), falling back to onnxslim where
  onnxsim fails or is absent; the model is checked with onnx.checker either way. The caller re-validates the
  result numerically (export_onnx does), because a simplifier that returns a valid graph can still be wrong.
"""
from __future__ import annotations

import collections
import contextlib
import os
import sys
import tempfile
from dataclasses import dataclass, field

import onnx

from segdeploy.errors import ArtifactError

MIN_OPSET = 17
STANDARD_DOMAINS = ("", "ai.onnx")


@dataclass
class PassReport:
    name: str
    nodes_before: int
    nodes_after: int
    tool: str = ""
    notes: list[str] = field(default_factory=list)
    op_counts: dict[str, int] = field(default_factory=dict)  # of the result

    def as_dict(self) -> dict:
        return {"name": self.name, "tool": self.tool, "nodes_before": self.nodes_before,
                "nodes_after": self.nodes_after, "notes": list(self.notes), "op_counts": dict(self.op_counts)}


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    return dict(sorted(collections.Counter(node.op_type for node in model.graph.node).items()))


def default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in STANDARD_DOMAINS:
            return entry.version
    return 0


def check_standard_ops(model: onnx.ModelProto, min_opset: int = MIN_OPSET) -> tuple[onnx.ModelProto, PassReport]:
    foreign = sorted({f"{node.domain}::{node.op_type}" for node in model.graph.node
                      if node.domain not in STANDARD_DOMAINS})
    if foreign:
        raise ArtifactError(f"graph uses non-standard ops ({', '.join(foreign[:5])}); only the default ONNX domain "
                            "is allowed")
    extra_domains = sorted(e.domain for e in model.opset_import if e.domain not in STANDARD_DOMAINS)
    opset = default_opset(model)
    if opset < min_opset:
        raise ArtifactError(f"graph has opset {opset}; at least {min_opset} is needed (LayerNormalization)")
    n = len(model.graph.node)
    notes = [f"opset {opset}; all {n} nodes in the default domain"]
    if extra_domains:
        notes.append(f"unused opset imports: {', '.join(extra_domains)}")
    return model, PassReport("check_standard_ops", n, n, "segdeploy", notes, op_counts(model))


def simplify(model: onnx.ModelProto, tools: tuple[str, ...] = ("onnxsim", "onnxslim")
             ) -> tuple[onnx.ModelProto, PassReport]:
    """Simplify with the first of ``tools`` that succeeds; raise ArtifactError when none does."""
    before = len(model.graph.node)
    failures = []
    for tool in tools:
        try:
            with _native_output_captured() as printed:
                result = _SIMPLIFIERS[tool](model)
            onnx.checker.check_model(result)
        except ImportError:
            failures.append(f"{tool}: not installed")
            continue
        except Exception as exc:  # any simplifier failure: try the next one
            failures.append(f"{tool}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            continue
        notes = [f"fell back after {f}" for f in failures] + [f"{tool}: {line}" for line in printed]
        return result, PassReport("simplify", before, len(result.graph.node), tool, notes, op_counts(result))
    raise ArtifactError("could not simplify the graph (" + "; ".join(failures) + "); pass --no-simplify to keep it")


@contextlib.contextmanager
def _native_output_captured():
    """Collect what native code prints on fds 1 and 2 (onnxsim's C++ warnings) into a list for the report, instead
    of letting it interleave with segdeploy's own output."""
    lines: list[str] = []
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile(mode="w+b") as sink:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield lines
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace")
            lines.extend(line.strip() for line in text.splitlines() if line.strip())


def _onnxsim(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnxsim

    # check_n=0: numerical checking is done by segdeploy against PyTorch, on the real input shapes
    result, ok = onnxsim.simplify(model, check_n=0)
    if not ok:
        raise RuntimeError("onnxsim reported that the simplified model is not equivalent")
    return result


def _onnxslim(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnxslim

    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # onnxslim edits in place
    return onnxslim.slim(copy)


_SIMPLIFIERS = {"onnxsim": _onnxsim, "onnxslim": _onnxslim}
