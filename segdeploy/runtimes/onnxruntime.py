"""ONNX Runtime behind the Runner contract.

CPU by default. ``providers`` takes ONNX Runtime's names or the short ones ("cpu", "cuda", "tensorrt", "openvino");
asking for one the installed onnxruntime lacks is an error, not a silent fall back to the CPU, so a benchmark
never reports CPU numbers under a GPU label. ``graph_optimization`` is ONNX Runtime's level ("disable", "basic",
"extended", "all"); "disable" runs the graph exactly as stored, which validate uses to look at intermediates.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np

from segdeploy.errors import ArtifactError, InputError, SegdeployError
from segdeploy.runtimes.base import LayerProfile, LayerTime, Runner, TensorInfo, Timing
from segdeploy.runtimes.manifest_check import artifact_manifest, tensor_infos

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}
GRAPH_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")

# ONNX Runtime's type strings -> numpy dtype names
_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(uint8)": "uint8", "tensor(int8)": "int8", "tensor(int32)": "int32", "tensor(int64)": "int64",
    "tensor(bool)": "bool", "tensor(bfloat16)": "bfloat16",
}


def resolve_providers(providers=None) -> list:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if providers is None:
        return ["CPUExecutionProvider"]
    if isinstance(providers, str):
        providers = [p.strip() for p in providers.split(",") if p.strip()]
    resolved = []
    for provider in providers:
        name, options = provider if isinstance(provider, tuple) else (provider, None)
        name = PROVIDER_ALIASES.get(name.lower(), name)
        if name not in available:
            raise SegdeployError(f"ONNX Runtime execution provider {name} is not available in this onnxruntime "
                                 f"(available: {', '.join(available)})")
        resolved.append((name, options) if options else name)
    # the CPU provider stays last as the home of ops a GPU provider does not take
    if "CPUExecutionProvider" not in [p if isinstance(p, str) else p[0] for p in resolved]:
        resolved.append("CPUExecutionProvider")
    return resolved


class OnnxRuntimeRunner(Runner):
    backend = "onnxruntime"

    def __init__(self, path, providers=None, threads: int | None = None, graph_optimization: str = "all",
                 manifest=None):
        """``path``: an .onnx file, or the serialized model as bytes / an onnx.ModelProto (for in-memory graphs);
        ``manifest``: the file's, where the caller read it already."""
        super().__init__()
        import onnxruntime as ort

        if graph_optimization not in GRAPH_OPTIMIZATION_LEVELS:
            raise SegdeployError(f"graph_optimization must be one of {', '.join(GRAPH_OPTIMIZATION_LEVELS)}, "
                                 f"not {graph_optimization!r}")
        self.graph_optimization = graph_optimization
        self.threads = threads
        self.path = None if isinstance(path, (bytes, bytearray)) or hasattr(path, "SerializeToString") \
            else os.fspath(path)
        options = self._options()
        source = path.SerializeToString() if hasattr(path, "SerializeToString") else \
            bytes(path) if isinstance(path, (bytes, bytearray)) else self.path
        if self.path is not None and not os.path.isfile(self.path):
            raise ArtifactError(f"artifact not found: {self.path}")
        self._source = source
        self.providers = resolve_providers(providers)
        try:
            self.session = ort.InferenceSession(source, sess_options=options, providers=self.providers)
        except Exception as exc:
            what = self.path or "the in-memory model"
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ArtifactError(f"ONNX Runtime cannot load {what}: {detail}") from None
        found_inputs = [self._info(i) for i in self.session.get_inputs()]
        found_outputs = [self._info(o) for o in self.session.get_outputs()]
        self.manifest = artifact_manifest(self.path, manifest) if self.path else None
        self._inputs, self._outputs = tensor_infos(self.manifest, found_inputs, found_outputs, self.path)

    def _options(self):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.graph_optimization]
        if self.threads:
            options.intra_op_num_threads = int(self.threads)
            options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # fatal only: failures reach the caller as exceptions with the same text; warnings are noise here
        options.log_severity_level = 4
        # deterministic kernels where ORT has a choice, so validation numbers repeat run to run
        options.use_deterministic_compute = True
        return options

    @staticmethod
    def _info(arg) -> TensorInfo:
        shape = tuple(d if isinstance(d, int) else (d or "?") for d in arg.shape)
        return TensorInfo(arg.name, shape, _ORT_TYPES.get(arg.type, arg.type))

    def inputs(self) -> list[TensorInfo]:
        return list(self._inputs)

    def outputs(self) -> list[TensorInfo]:
        return list(self._outputs)

    def infer(self, feed: dict[str, np.ndarray], output_names: list[str] | None = None) -> dict[str, np.ndarray]:
        """Run one batch; ``output_names`` may ask for intermediate tensors the graph exposes (locate does)."""
        self.check_feed(feed)
        return self._infer(feed, output_names)

    def _infer(self, feed: dict[str, np.ndarray], output_names: list[str] | None = None) -> dict[str, np.ndarray]:
        names = output_names or [o.name for o in self._outputs]
        start = time.perf_counter()
        try:
            values = self.session.run(names, feed)
        except Exception as exc:  # e.g. a size the graph's reshapes cannot take
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"ONNX Runtime failed on inputs {_feed_text(feed)}: {detail}") from None
        self.last_timing = Timing(host_ms=(time.perf_counter() - start) * 1e3)
        return dict(zip(names, values))

    def layer_profile(self, feed: dict[str, np.ndarray], runs: int = 10, warmup: int = 2) -> LayerProfile:
        """ONNX Runtime's profiler on a second session built like this one (profiling is fixed when a session is
        made). The optimized graph that session runs is saved beside the trace, so that the nodes ONNX Runtime adds
        (the NCHWc layout reorders) are placed by their neighbours."""
        import tempfile

        import onnxruntime as ort

        self.check_feed(feed)
        with tempfile.TemporaryDirectory(prefix="segdeploy-profile-") as folder:
            options = self._options()
            options.enable_profiling = True
            options.profile_file_prefix = os.path.join(folder, "trace")
            options.optimized_model_filepath = os.path.join(folder, "optimized.onnx")
            # the weights of the saved graph go to a side file that is never read: only its structure is needed
            options.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                             "optimized.bin")
            options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes",
                                             "1024")
            try:
                session = ort.InferenceSession(self._source, sess_options=options, providers=self.providers)
                names = [o.name for o in self._outputs]
                for _ in range(warmup + runs):
                    session.run(names, feed)
                trace = session.end_profiling()
            except Exception as exc:
                detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise InputError(f"ONNX Runtime failed while profiling on inputs {_feed_text(feed)}: {detail}") \
                    from None
            with open(trace, encoding="utf-8") as f:
                events = json.load(f)
            graph = _graph_links(os.path.join(folder, "optimized.onnx"))
        return profile_from_trace(events, graph, warmup)

    def stream_calls(self, streams: int) -> list:
        """``streams`` sessions of the same graph, the runner's threads split among them (at least one each)."""
        import onnxruntime as ort

        total = self.threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else
                                 os.cpu_count() or 1)
        names = [o.name for o in self._outputs]
        calls = []
        for _ in range(streams):
            options = self._options()
            options.intra_op_num_threads = max(1, int(total) // streams)
            options.inter_op_num_threads = 1
            session = ort.InferenceSession(self._source, sess_options=options, providers=self.providers)
            calls.append(lambda feed, session=session: dict(zip(names, session.run(names, feed))))
        return calls

    def describe(self) -> dict:
        import onnxruntime as ort

        active = self.session.get_providers()
        return {"backend": self.backend, "version": ort.__version__, "providers": active,
                "device": "cpu" if active[0] == "CPUExecutionProvider" else active[0].removesuffix(
                    "ExecutionProvider").lower(),
                "graph_optimization": self.graph_optimization, "threads": self.threads, "artifact": self.path,
                "precision": self.manifest.precision.mode if self.manifest else "as stored"}

    def close(self) -> None:
        self.session = None


def _graph_links(path: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """node name -> (op type, neighbouring node names, consumers first) of a saved ONNX graph, without its weights."""
    import onnx

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception:  # the saved graph is a help for placing unnamed nodes, not a requirement
        return {}
    producer, consumers = {}, {}
    for node in model.graph.node:
        for name in node.output:
            producer[name] = node.name
        for name in node.input:
            consumers.setdefault(name, []).append(node.name)
    links = {}
    for node in model.graph.node:
        after = [c for o in node.output for c in consumers.get(o, [])]
        before = [producer[i] for i in node.input if i in producer]
        links[node.name] = (node.op_type, tuple(dict.fromkeys(after + before)))
    return links


KERNEL_SUFFIX = "_kernel_time"


def profile_from_trace(events: list[dict], graph: dict[str, tuple[str, tuple[str, ...]]], warmup: int
                       ) -> LayerProfile:
    """ONNX Runtime's trace (Chrome trace events) -> mean time per node over the runs after ``warmup``.

    Each ``model_run`` session event spans one ``run`` call; a node's kernel event belongs to the run whose span
    holds its start. ``graph`` (node name -> op type and neighbours) comes from the optimized graph."""
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])[warmup:]
    if not runs:
        raise SegdeployError("ONNX Runtime's trace holds no profiled run")
    spans = [(e["ts"], e["ts"] + e["dur"]) for e in runs]
    samples: dict[str, list[float]] = {}
    ops: dict[str, str] = {}
    providers: dict[str, str] = {}
    for event in sorted((e for e in events if e.get("cat") == "Node"), key=lambda e: e["ts"]):
        name = event.get("name", "")
        if not name.endswith(KERNEL_SUFFIX):
            continue  # fence events in older releases; kernel time is what a node costs
        run = next((i for i, (start, stop) in enumerate(spans) if start <= event["ts"] <= stop), None)
        if run is None:
            continue  # a warm-up run
        node = name[:-len(KERNEL_SUFFIX)]
        if node not in samples:
            samples[node] = [0.0] * len(runs)
        samples[node][run] += event["dur"] / 1e3
        args = event.get("args") or {}
        ops[node] = args.get("op_name") or graph.get(node, ("?",))[0]
        providers[node] = args.get("provider", "")
    layers = [LayerTime(node, ops[node], sum(values) / len(values), sources=(node,),
                        neighbours=graph.get(node, ("", ()))[1], kernel=providers[node], samples=tuple(values))
              for node, values in samples.items()]
    return LayerProfile("onnxruntime", layers, [e["dur"] / 1e3 for e in runs])


def _feed_text(feed) -> str:
    return ", ".join(f"{k}{tuple(v.shape)}" for k, v in feed.items())
