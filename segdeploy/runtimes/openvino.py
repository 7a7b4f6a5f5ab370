"""OpenVINO (optional extra ``segdeploy[openvino]``) running the ONNX artifact directly, behind the runner contract.

FP32 is asked for explicitly: on CPUs with AVX512-BF16 or AMX, OpenVINO's default inference precision is bf16,
which would make an "FP32" comparison silently compare a lower precision. Dynamic dims are made static per feed
shape (one compiled model per shape), because the CPU plugin's static-shape kernels are faster than its dynamic ones.
"""
from __future__ import annotations

import os
import time

import numpy as np

from segdeploy.errors import ArtifactError, SegdeployError
from segdeploy.runtimes.base import LayerProfile, LayerTime, Runner, TensorInfo, Timing
from segdeploy.runtimes.manifest_check import artifact_manifest, tensor_infos

PRECISIONS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


def _import_openvino():
    try:
        import openvino
    except ImportError:
        raise SegdeployError("OpenVINO is not installed; pip install 'segdeploy[openvino]'") from None
    return openvino


def _dim(d):
    return d.get_length() if d.is_static else "?"


_OV_BOILERPLATE = ("Exception from ", "Check '", "FrontEnd API failed", "Model wasn't fully converted",
                   "Summary:", "While validating")


def openvino_reason(exc: BaseException) -> str:
    """The line of an OpenVINO error that says what is wrong: its messages open with the C++ file and the failed
    check, and put the reason (e.g. "No conversion rule found for operations: NoSuchOp-20") further down."""
    lines = [line.strip(" -") for line in str(exc).splitlines() if line.strip(" -")]
    useful = [line for line in lines if not line.startswith(_OV_BOILERPLATE)]
    summary = [line for line in useful if line.startswith(("No conversion rule", "Conversion is failed"))]
    return ((summary or useful or lines or [type(exc).__name__])[0])[:200]


class OpenVinoRunner(Runner):
    backend = "openvino"

    def __init__(self, path: str | os.PathLike, *, device: str = "CPU", precision: str = "fp32",
                 threads: int | None = None, hint: str = "LATENCY", manifest=None):
        super().__init__()
        ov = _import_openvino()
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise ArtifactError(f"model not found: {self.path}")
        if precision not in PRECISIONS:
            raise SegdeployError(f"openvino precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        self.core = ov.Core()
        if device.split(".")[0] not in self.core.available_devices:
            raise SegdeployError(f"OpenVINO device {device!r} not available; found {self.core.available_devices}")
        try:
            self.model = self.core.read_model(self.path)
        except Exception as exc:  # OpenVINO raises RuntimeError and others on corrupt or foreign files
            raise ArtifactError(f"OpenVINO cannot read {self.path}: {openvino_reason(exc)}") from None
        self.device, self.precision, self.threads, self.hint = device, precision, threads, hint
        # A single synchronous request: the LATENCY hint gives it all the threads (THROUGHPUT would split them
        # into streams that only parallel requests can use).
        self.config = {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": PRECISIONS[precision]}
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = int(threads)
        found_inputs = [TensorInfo(p.get_any_name(), tuple(_dim(d) for d in p.get_partial_shape()),
                                   np.dtype(p.get_element_type().to_dtype()).name) for p in self.model.inputs]
        found_outputs = [TensorInfo(p.get_any_name(), tuple(_dim(d) for d in p.get_partial_shape()),
                                    np.dtype(p.get_element_type().to_dtype()).name) for p in self.model.outputs]
        self.manifest = artifact_manifest(self.path, manifest)  # ``manifest``: the file's, where read already
        self._inputs, self._outputs = tensor_infos(self.manifest, found_inputs, found_outputs, self.path)
        self._requests: dict[tuple, object] = {}  # input shapes -> infer request of a model compiled for them
        if all(isinstance(d, int) for info in self._inputs for d in info.shape):
            self._request_for(tuple(info.shape for info in self._inputs))

    def inputs(self) -> list[TensorInfo]:
        return list(self._inputs)

    def outputs(self) -> list[TensorInfo]:
        return list(self._outputs)

    def _request_for(self, shapes: tuple):
        if shapes not in self._requests:
            model = self.model
            if any(not isinstance(d, int) for info in self._inputs for d in info.shape):
                model = model.clone()
                model.reshape({info.name: list(shape) for info, shape in zip(self._inputs, shapes)})
            try:
                compiled = self.core.compile_model(model, self.device, self.config)
            except Exception as exc:  # a graph OpenVINO reads but cannot compile (at these shapes)
                raise ArtifactError(f"OpenVINO cannot compile {self.path} for {list(shapes)}: "
                                    f"{openvino_reason(exc)}") from None
            self._requests[shapes] = compiled.create_infer_request()
        return self._requests[shapes]

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [info.name for info in self._inputs]
        start = time.perf_counter()
        request = self._request_for(tuple(tuple(feed[n].shape) for n in names))
        request.infer({n: np.ascontiguousarray(feed[n]) for n in names}, share_inputs=True)
        out = {info.name: request.get_tensor(info.name).data.copy() for info in self._outputs}
        self.last_timing = Timing(host_ms=(time.perf_counter() - start) * 1e3)
        return out

    def layer_profile(self, feed: dict[str, np.ndarray], runs: int = 10, warmup: int = 2) -> LayerProfile:
        """OpenVINO's performance counters (``PERF_COUNT``) on a model compiled like this runner's for the feed's
        shapes. A counter names the plugin's layer; the compiled model's runtime graph says which of the ONNX
        graph's nodes each layer computes (``originalLayersNames``: several where it fused them) and what is next
        to the layers the plugin added itself (reorders)."""
        self.check_feed(feed)
        names = [info.name for info in self._inputs]
        shapes = tuple(tuple(feed[n].shape) for n in names)
        model = self.model
        if any(not isinstance(d, int) for info in self._inputs for d in info.shape):
            model = model.clone()
            model.reshape({info.name: list(shape) for info, shape in zip(self._inputs, shapes)})
        try:
            compiled = self.core.compile_model(model, self.device, {**self.config, "PERF_COUNT": True})
        except Exception as exc:
            raise ArtifactError(f"OpenVINO cannot compile {self.path} for {list(shapes)}: "
                                f"{openvino_reason(exc)}") from None
        request = compiled.create_infer_request()
        inputs = {n: np.ascontiguousarray(feed[n]) for n in names}
        samples: dict[str, list[float]] = {}
        kinds: dict[str, tuple[str, str]] = {}
        wall = []
        for i in range(warmup + runs):
            start = time.perf_counter()
            request.infer(inputs, share_inputs=True)
            elapsed = (time.perf_counter() - start) * 1e3
            if i < warmup:
                continue
            wall.append(elapsed)
            for info in request.get_profiling_info():
                if str(info.status).rsplit(".", 1)[-1] != "EXECUTED":
                    continue  # fused into a neighbour or a constant: it has no time of its own
                values = samples.setdefault(info.node_name, [0.0] * runs)
                values[i - warmup] += info.real_time.total_seconds() * 1e3
                kinds[info.node_name] = (info.node_type, info.exec_type)
        graph = _runtime_links(compiled)
        layers = []
        for name, values in samples.items():
            sources, neighbours = graph.get(name, ((), ()))
            layers.append(LayerTime(name, kinds[name][0], sum(values) / runs, sources or (name,), neighbours,
                                    kinds[name][1], tuple(values)))
        order = {name: i for i, name in enumerate(graph)}
        layers.sort(key=lambda layer: order.get(layer.name, len(order)))
        return LayerProfile("openvino", layers, wall,
                            notes=["layer times are OpenVINO's performance counters; a run's wall time also holds "
                                   "the copies in and out and the plugin's own scheduling"])

    def stream_calls(self, streams: int) -> list:
        """One model compiled with the THROUGHPUT hint and ``streams`` streams (OpenVINO splits the runner's threads
        among them and pins them), and one infer request per stream."""
        if any(not isinstance(d, int) for info in self._inputs for d in info.shape):
            raise SegdeployError("OpenVINO's throughput mode here takes a static artifact (export without --dynamic)")
        config = {**self.config, "PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": int(streams)}
        try:
            compiled = self.core.compile_model(self.model, self.device, config)
        except Exception as exc:
            raise ArtifactError(f"OpenVINO cannot compile {self.path} with {streams} streams: "
                                f"{openvino_reason(exc)}") from None
        names = [info.name for info in self._inputs]
        outputs = [info.name for info in self._outputs]

        def make(request):
            def call(feed):
                request.infer({n: np.ascontiguousarray(feed[n]) for n in names}, share_inputs=True)
                return {n: request.get_tensor(n).data.copy() for n in outputs}
            return call

        return [make(compiled.create_infer_request()) for _ in range(streams)]

    def describe(self) -> dict:
        import openvino

        return {"backend": self.backend, "artifact": self.path, "device": self.device,
                "device_name": self.core.get_property(self.device, "FULL_DEVICE_NAME"),
                "precision": self.precision, "threads": self.threads, "hint": self.hint,
                "versions": {"openvino": openvino.__version__}}

    def close(self) -> None:
        self._requests.clear()


def _runtime_links(compiled) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """layer name -> (the ONNX nodes it computes, its neighbouring layers, consumers first), from the compiled
    model's runtime graph, in execution order."""
    links = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        original = ""
        if "originalLayersNames" in info:
            value = info["originalLayersNames"]
            original = value.astype(str) if hasattr(value, "astype") else str(value)
        sources = tuple(n for n in original.split(",") if n)
        after = [target.get_node().get_friendly_name() for output in op.outputs()
                 for target in output.get_target_inputs()]
        before = [value.get_node().get_friendly_name() for value in op.input_values()]
        links[op.get_friendly_name()] = (sources, tuple(dict.fromkeys(after + before)))
    return links
