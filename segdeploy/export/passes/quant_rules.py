"""Which nodes the INT8 passes may quantize, shared by every flavour: compute nodes with a constant weight, outside
the attention core (the score MatMul, the Softmax, the MatMul applying its weights and what lies between them, and
any MatMul of two activations) and outside the float32 islands the FP16 pass keeps (normalisations, SegNeXt's NMF,
coordinate arithmetic)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segdeploy.export.passes.graph_index import GraphIndex

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
ATTENTION_SEARCH_DEPTH = 6  # nodes between a score MatMul and its Softmax (scale, bias, talking heads, reshapes)


@dataclass(frozen=True)
class Candidate:
    node: object
    weight: str  # the constant weight input
    weight_axis: int | None  # the output-channel axis of the weight, None: per-tensor only


def weight_input(index: GraphIndex, node) -> tuple[str, int | None] | None:
    """(weight tensor, its output-channel axis) of a Conv/ConvTranspose/Gemm/MatMul whose weight is constant."""
    if node.op_type in ("Conv", "ConvTranspose"):
        if len(node.input) < 2 or not index.is_constant(node.input[1]):
            return None
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if node.op_type == "Conv":
            return node.input[1], 0
        return node.input[1], 1 if group == 1 else None
    if node.op_type == "Gemm":
        if not index.is_constant(node.input[1]):
            return None
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return node.input[1], 0 if trans_b else 1
    if node.op_type == "MatMul":
        if not index.is_constant(node.input[1]) or index.is_constant(node.input[0]):
            return None
        rank = index.rank(node.input[1])
        return node.input[1], (rank - 1 if rank == 2 else None) if rank else None
    return None


def is_matrix_vector(index: GraphIndex, node) -> bool:
    """A MatMul/Gemm whose product is a matrix-vector one (an output or reduction dimension of 1): TensorRT runs
    those as GEMV, where INT8 gains nothing."""
    if node.op_type not in ("MatMul", "Gemm"):
        return False
    a, b = index.shapes.get(node.input[0]), index.shapes.get(node.input[1])
    if not a or not b:
        return False
    dims = [a[-2] if len(a) >= 2 else 1, a[-1], b[-1]] if node.op_type == "MatMul" else [*a[-2:], *b[-1:]]
    return any(d == 1 for d in dims if d is not None)


def attention_core(index: GraphIndex) -> dict[int, str]:
    """id(node) -> why, for the nodes between an attention score MatMul, its Softmax and the MatMul that applies
    the weights, and for every MatMul of two activations.

    The MatMul that applies the weights is the first one after the Softmax, whatever its other operand: OffSeg's
    pixel branch applies them to the class tokens, a constant. The projection after it is an ordinary layer
    (TensorRT quantizes an attention block's output projection like any Linear), and in OffSeg's head it is the
    largest product of the graph."""
    core: dict[int, str] = {}
    for softmax in (n for n in index.nodes if n.op_type == "Softmax"):
        why = f"attention core around {softmax.name or 'a Softmax'}"
        back = _walk(index, softmax, upstream=True)
        ahead = _walk(index, softmax, upstream=False)
        if back is None and ahead is None:
            continue
        core[id(softmax)] = why
        for node in (back or []) + (ahead or []):
            core[id(node)] = why
    for node in index.nodes:
        if node.op_type == "MatMul" and not any(index.is_constant(i) for i in node.input[:2]):
            core.setdefault(id(node), "MatMul of two activations (attention-like)")
    return core


def _walk(index: GraphIndex, start, upstream: bool) -> list | None:
    """The nodes from ``start`` to the nearest MatMul (inclusive): upstream the score MatMul, if it multiplies two
    activations; downstream the one applying the weights, whatever its other operand. None if there is none within
    the search depth. No path crosses a MatMul."""
    frontier = [(start, [])]
    for _ in range(ATTENTION_SEARCH_DEPTH):
        following = []
        for node, path in frontier:
            if upstream:
                nexts = [index.producer[i] for i in node.input if i in index.producer]
            else:
                nexts = [c for o in node.output for c in index.consumers.get(o, [])]
            for nxt in nexts:
                if nxt.op_type == "MatMul":
                    if not upstream or not any(index.is_constant(i) for i in nxt.input[:2]):
                        return path + [nxt]
                    continue  # scores against constant keys (OffSeg's class tokens) come from a plain layer
                if not nxt.op_type == "Softmax":
                    following.append((nxt, path + [nxt]))
        frontier = following
        if not frontier:
            break
    return None


def weight_scales(weight: np.ndarray, axis: int | None, qmax: int = 127) -> np.ndarray:
    """Symmetric scales: max |w| / qmax per output channel (or one for the tensor); an all-zero channel gets 1 (a
    positive scale, as TensorRT requires; its values quantize to 0 either way)."""
    w = np.abs(weight.astype(np.float64))
    if axis is None:
        peak = np.array([w.max(initial=0.0)])
    else:
        peak = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1).max(axis=1)
    scales = peak / qmax
    scales[scales <= 0] = 1.0
    return scales.astype(np.float32)


def quantize_weight(weight: np.ndarray, scales: np.ndarray, axis: int | None, qmax: int = 127) -> np.ndarray:
    shape = [1] * weight.ndim
    if axis is not None:
        shape[axis] = -1
    q = np.round(weight.astype(np.float64) / scales.reshape(shape if axis is not None else [1] * weight.ndim))
    return np.clip(q, -qmax, qmax).astype(np.int8)
