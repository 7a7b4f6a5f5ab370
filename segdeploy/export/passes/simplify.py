"""``simplify``: constant folding, shape inference and Conv/BN fusion by onnxslim (pure Python, a core dependency,
so a plain ``pip install segdeploy`` exports, and the same inputs give the same artifact on every install), with
onnx-simplifier (the optional ``simplify`` extra) as the fallback or on request. The result is checked with
onnx.checker either way, and the caller re-validates it numerically (export does), because a simplifier that returns
a valid graph can still be wrong."""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from typing import TYPE_CHECKING

from segdeploy.errors import ArtifactError
from segdeploy.export.passes import PassReport, op_counts

if TYPE_CHECKING:  # onnx loads when a graph is simplified, not when the simplifier names are read
    import onnx

SIMPLIFIERS = ("onnxslim", "onnxsim")


def simplify(model: onnx.ModelProto, tools: tuple[str, ...] = SIMPLIFIERS
             ) -> tuple[onnx.ModelProto, PassReport]:
    """Simplify with the first of ``tools`` that succeeds; raise ArtifactError when none does."""
    import onnx

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
    import onnx
    import onnxslim

    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # onnxslim edits in place
    return onnxslim.slim(copy)


_SIMPLIFIERS = {"onnxsim": _onnxsim, "onnxslim": _onnxslim}
