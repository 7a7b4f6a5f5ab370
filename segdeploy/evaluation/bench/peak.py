"""This machine's practical FP32 peak, the denominator of a row's "% of peak": the fastest repeated large matmul,
with the same thread count as the rows. A practical peak, not the datasheet's."""
from __future__ import annotations

import importlib.util
import time

import numpy as np

from segdeploy import backends


def _fastest_seconds(call, seconds: float) -> tuple[float, int]:
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 3:
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    # The fastest call is the peak: slower ones measure whatever else the machine was doing meanwhile.
    return min(times), len(times)


def _torch_matmul(device: str, n: int):
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # FP32 means FP32, not TF32 tensor cores
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def call():
        torch.mm(a, b)
        sync()

    return call


def _onnxruntime_matmul(n: int, threads: int | None):
    """One MatMul node in ONNX Runtime: its MLAS kernels use AVX-512 where torch's BLAS may not (AMD CPUs)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    square = [n, n]
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul",
                              [helper.make_tensor_value_info(k, TensorProto.FLOAT, square) for k in "ab"],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, square)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = {k: np.random.default_rng(0).standard_normal(square, dtype=np.float32) for k in "ab"}
    return lambda: session.run(None, feed)


def fp32_peak_gflops(device: str = "cpu", threads: int | None = None, n: int = 2048, seconds: float = 0.5,
                     probes: int = 3) -> dict:
    """This machine's practical FP32 peak: GFLOP/s of repeated (n x n) @ (n x n) matmuls (2 n^3 FLOPs each).

    On the CPU it is the best of torch.mm and ONNX Runtime's MatMul: libraries differ by 2-3x on the same chip
    (torch's BLAS ran AVX2 code on an AVX-512 AMD EPYC), and a peak lower than what a backend reaches is no peak.
    ``probes`` interleaved rounds (each engine ``seconds / probes`` per round, fastest call of each) guard against a
    burst of load from another process: one round on a shared machine once put the same CPU at 187 GFLOP/s and
    another at 438. The peak is the best round; the spread of the rounds says how steady the machine was.
    """
    import torch

    probes = max(1, int(probes))
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    engines = {"torch.mm": lambda: _torch_matmul(device, n)}
    if torch.device(device).type == "cpu" and importlib.util.find_spec(backends.ONNXRUNTIME) is not None:
        engines["onnxruntime MatMul"] = lambda: _onnxruntime_matmul(n, threads)
    rounds: dict[str, list[float]] = {name: [] for name in engines}
    calls: dict[str, int] = dict.fromkeys(engines, 0)
    try:
        made = {name: make() for name, make in engines.items()}
        for call in made.values():
            call()  # warm-up: thread pool, kernel selection
        for _ in range(probes):
            for name, call in made.items():  # interleaved, so a burst of load hits one round of every engine
                fastest, count = _fastest_seconds(call, seconds / probes)
                rounds[name].append(2 * n**3 / fastest / 1e9)
                calls[name] += count
    finally:
        torch.set_num_threads(old_threads)
    best = max(rounds, key=lambda k: max(rounds[k]))
    method = "; ".join(f"{name} {max(values):.0f} GFLOP/s (best of {len(values)} rounds, {calls[name]} calls)"
                       for name, values in rounds.items())
    spread = [round(min(rounds[best]), 1), round(max(rounds[best]), 1)]
    return {"device": device, "gflops": max(rounds[best]), "engine": best,
            "by_engine": {name: round(max(values), 1) for name, values in rounds.items()},
            "rounds": {name: [round(v, 1) for v in values] for name, values in rounds.items()}, "spread": spread,
            "method": f"fp32 {n}x{n} matmul, {probes} interleaved rounds, best engine: {method}",
            "threads": threads or old_threads}
