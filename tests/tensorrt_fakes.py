"""TensorRT for the tests: NVIDIA's real module of a release, with recorders in place of what needs a GPU.

``recording_tensorrt(real)`` wraps the real ``tensorrt`` module of one release (tests/real_tensorrt.py). Enums,
flags, ``Logger``, ``Dims``, ``IOutputAllocator`` and ``init_libnvinfer_plugins`` are the real ones. The factories
that need libnvinfer (``Builder``, ``Runtime``, ``OnnxParser``) return recorders, and every object they hand out is
a recorder of the real class its pybind11 signature names. A recorder checks each use against that real class: the
attribute must exist, a method call must bind to one of its overloads (argument count, keyword names, and the types
pybind11 would refuse: enums of the wrong kind, a path object for a ``str``, a float for an ``int``), a property
must exist and be writable (``property.fset``) and take a value of its type. A call the release lacks fails the test
the way it would fail on the target.

What the recorders return is scripted by a ``Scenario``: parser and build outcomes, DLA cores, the timing cache's
answers, and for the runner an ``EngineModel`` (the engine's I/O tensors, profiles and a numpy function standing for
its layers). With ``CpuTorch`` (torch whose CUDA API works on host memory) the runner's whole inference path runs on
the CPU: ``execute_async_v3`` reads the inputs from the addresses the runner set and writes the outputs to the
addresses it gave, checked against the buffers that were allocated.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

from manifests import embed_hashed, sample_manifest
from segdeploy.export.tensorrt import Host
from segdeploy.tensorrt_host import GpuInfo, TensorRTInstall

FAKE_PLAN = b"ftrt-recorded-serialized-plan"
FAKE_GPU = GpuInfo("NVIDIA Fake GPU", "8.6")
ORIN = GpuInfo("NVIDIA Jetson AGX Orin", "8.7")


class NotInRelease(AssertionError):
    """segdeploy used something the real TensorRT module of this release does not have or would refuse."""


# ---------------------------------------------------------------------------------------------------------------
# pybind11 signatures, read from the real functions' docstrings


@dataclass(frozen=True)
class Param:
    name: str
    annotation: str
    has_default: bool


@dataclass(frozen=True)
class Signature:
    name: str
    params: tuple[Param, ...]
    returns: str


def _split_top(text: str, sep: str = ",") -> list[str]:
    parts, depth, current = [], 0, []
    for ch in text:
        if ch in "([{<":
            depth += 1
        elif ch in ")]}>":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if "".join(current).strip():
        parts.append("".join(current))
    return parts


def _parse_signature(line: str) -> Signature | None:
    match = re.match(r"\s*(?:\d+\.\s*)?(\w+)\((.*)$", line)
    if not match:
        return None
    name, rest = match.groups()
    depth, end = 1, None
    for i, ch in enumerate(rest):
        if ch in "([{<":
            depth += 1
        elif ch in ")]}>":
            depth -= 1
            if depth == 0:
                end = i
                break
    if end is None:
        return None
    params = []
    for piece in _split_top(rest[:end]):
        piece = piece.strip()
        if piece.startswith("*"):
            return None  # the overloaded dispatcher's (*args, **kwargs)
        head, _, default = piece.partition("=")
        pname, _, annotation = head.partition(":")
        params.append(Param(pname.strip(), annotation.strip(), bool(default.strip())))
    returns = rest[end + 1:].strip()
    returns = returns[2:].strip() if returns.startswith("->") else ""
    if params and params[0].name in ("self", "arg0"):
        params = params[1:]
    return Signature(name, tuple(params), returns)


def signatures(function) -> list[Signature]:
    """Every overload's signature of a pybind11 function or method."""
    found = []
    for line in (getattr(function, "__doc__", None) or "").splitlines():
        sig = _parse_signature(line)
        if sig is not None and sig.name == getattr(function, "__name__", sig.name):
            found.append(sig)
    return found


def _type_name(annotation: str) -> str:
    return annotation.rsplit(".", 1)[-1].strip()


# ---------------------------------------------------------------------------------------------------------------
# The recorders


@dataclass
class Call:
    owner: str  # the real class name
    name: str
    args: tuple
    kwargs: dict

    @property
    def values(self) -> tuple:
        return self.args + tuple(self.kwargs.values())


@dataclass
class EngineTensor:
    name: str
    mode: str  # "INPUT" | "OUTPUT"
    dtype: str  # numpy dtype name
    shape: tuple  # -1 where dynamic
    trt_dtype: str | None = None  # TensorRT DataType member name when it differs from dtype's (BF16 ...)
    format: str = "LINEAR"
    location: str = "DEVICE"
    data_dependent: bool = False  # shape known only after the run (an output allocator is needed)


@dataclass
class EngineModel:
    """What an engine does, for the recorder's ICudaEngine/IExecutionContext: its I/O tensors, the profiles
    (per profile, input name -> (min, opt, max)), the output shapes for given input shapes, and its layers."""
    tensors: list[EngineTensor]
    profiles: list[dict]
    output_shapes: Callable[[dict], dict]
    compute: Callable[[dict], dict]
    device_memory: int = 4096
    weights_bytes: int = 1 << 20

    def tensor(self, name: str) -> EngineTensor:
        for t in self.tensors:
            if t.name == name:
                return t
        raise NotInRelease(f"the engine has no I/O tensor {name!r}")


def conv_engine(classes: int = 4, dynamic: bool = False, stride: int = 8) -> EngineModel:
    """An engine with the sample manifest's I/O: [N, 3, H, W] float32 in, [N, classes, H/8, W/8] logits out; its
    "layers" average each stride x stride patch and weight the channels per class."""
    weights = np.arange(1, classes * 3 + 1, dtype=np.float32).reshape(classes, 3) / 10

    def compute(inputs):
        x = inputs["input"]
        n, c, h, w = x.shape
        pooled = x.reshape(n, c, h // stride, stride, w // stride, stride).mean(axis=(3, 5))
        return {"logits": np.einsum("kc,nchw->nkhw", weights, pooled).astype(np.float32)}

    def output_shapes(shapes):
        n, _, h, w = shapes["input"]
        return {"logits": (n, classes, h // stride, w // stride)}

    if dynamic:
        shape_in, shape_out = (-1, 3, -1, -1), (-1, classes, -1, -1)
        profiles = [{"input": ((1, 3, 256, 256), (1, 3, 512, 512), (4, 3, 1024, 1024))}]
    else:
        shape_in, shape_out = (1, 3, 512, 512), (1, classes, 64, 64)
        profiles = [{"input": ((1, 3, 512, 512),) * 3}]
    return EngineModel([EngineTensor("input", "INPUT", "float32", shape_in),
                        EngineTensor("logits", "OUTPUT", "float32", shape_out)], profiles, output_shapes, compute)


def conv_reference(x: np.ndarray, classes: int = 4, stride: int = 8) -> np.ndarray:
    return conv_engine(classes, stride=stride).compute({"input": x})["logits"]


@dataclass
class Scenario:
    """The machine and the outcomes the recorders report."""
    parse_ok: bool = True
    build_ok: bool = True
    dla_cores: int = 0  # a discrete GPU has none; an AGX Orin has two
    set_timing_cache_ok: bool = True
    plan: bytes = FAKE_PLAN
    engine: EngineModel | None = None
    engine_needs_host_code: bool = False  # a version-compatible plan: deserialization needs host code allowed
    deserialize_ok: bool = True
    device: CpuTorch | None = None  # where execute_async_v3 reads and writes (CpuTorch's allocations)
    parser_errors: list = field(default_factory=lambda: [("uniq", "Unique", 3, "Unsupported operator Unique"),
                                                          ("gather", "Gather", 4, "index out of range")])


class Recorder:
    """An object of real class ``cls`` that records what is done to it and checks it against that class."""

    def __init__(self, trt: RecordingTensorRT, cls, **state):
        object.__setattr__(self, "_trt", trt)
        object.__setattr__(self, "_cls", cls)
        object.__setattr__(self, "_props", {})
        object.__setattr__(self, "_state", state)

    @property
    def real_class(self):
        return self._cls

    def __repr__(self):
        return f"<recorder of {self._trt.__version__} {self._cls.__name__}>"

    def _real_attribute(self, name):
        if name.startswith("__") or not hasattr(self._cls, name):
            raise NotInRelease(f"TensorRT {self._trt.__version__}'s {self._cls.__name__} has no attribute {name!r}")
        return getattr(self._cls, name)

    def __getattr__(self, name):
        real = self._real_attribute(name)
        descriptor = next((k.__dict__[name] for k in self._cls.__mro__ if name in k.__dict__), None)
        if isinstance(descriptor, property):
            if name in self._props:
                return self._props[name]
            return self._trt._property(self, name, descriptor)
        if callable(real):
            sigs = signatures(real)
            if not sigs:
                raise NotInRelease(f"no signature for {self._cls.__name__}.{name} in TensorRT "
                                   f"{self._trt.__version__}")
            return lambda *args, **kwargs: self._trt._invoke(self, name, sigs, args, kwargs)
        return real

    def __setattr__(self, name, value):
        self._real_attribute(name)
        descriptor = next((k.__dict__[name] for k in self._cls.__mro__ if name in k.__dict__), None)
        if not isinstance(descriptor, property):
            raise NotInRelease(f"{self._cls.__name__}.{name} is not a property in TensorRT {self._trt.__version__}")
        if descriptor.fset is None:
            raise NotInRelease(f"{self._cls.__name__}.{name} is read-only in TensorRT {self._trt.__version__}")
        getter = signatures(descriptor.fget) or _property_signature(descriptor)
        annotation = getter[0].returns if getter else ""
        problem = self._trt._type_problem(value, annotation)
        if problem:
            raise NotInRelease(f"{self._cls.__name__}.{name} = {value!r}: {problem} (TensorRT "
                               f"{self._trt.__version__})")
        self._props[name] = value
        self._trt.calls.append(Call(self._cls.__name__, name, (value,), {}))


def _property_signature(descriptor) -> list[Signature]:
    doc = (descriptor.fget.__doc__ or "").strip().splitlines()
    match = re.match(r"\((.*)\)\s*->\s*(.+)$", doc[0]) if doc else None
    return [Signature("fget", (), match.group(2).strip())] if match else []


class HostMemory:
    """IHostMemory's part segdeploy uses: the buffer protocol (``bytes(...)``) and ``nbytes``."""

    def __init__(self, data: bytes):
        self._data = bytes(data)
        self.nbytes = len(self._data)

    def __bytes__(self):
        return self._data


class RecordingTensorRT:
    """The ``tensorrt`` module of one release as segdeploy sees it on a machine with a GPU."""

    def __init__(self, real, scenario: Scenario | None = None):
        self._real = real
        self.scenario = scenario or Scenario()
        self.calls: list[Call] = []
        self.__version__ = real.__version__
        self.created: dict[str, list] = {}

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        if not hasattr(self._real, name):
            raise NotInRelease(f"TensorRT {self._real.__version__} has no {name!r}")
        return getattr(self._real, name)

    # -- the factories that need libnvinfer --------------------------------------------------------------------
    def Builder(self, *args, **kwargs):  # noqa: N802 (TensorRT's name)
        return self._construct("Builder", args, kwargs)

    def Runtime(self, *args, **kwargs):  # noqa: N802
        return self._construct("Runtime", args, kwargs)

    def OnnxParser(self, *args, **kwargs):  # noqa: N802
        return self._construct("OnnxParser", args, kwargs)

    def _construct(self, name, args, kwargs):
        cls = getattr(self._real, name)
        self._bind(cls.__name__, "__init__", signatures(cls.__init__), args, kwargs)
        obj = Recorder(self, cls)
        self.calls.append(Call(name, "__init__", args, kwargs))
        self.created.setdefault(name, []).append(obj)
        return obj

    # -- queries for the tests ---------------------------------------------------------------------------------
    def called(self, owner: str, name: str) -> list[tuple]:
        """The values of every call (or property write) ``owner.name``, in order."""
        return [c.values for c in self.calls if c.owner == owner and c.name == name]

    def last(self, owner: str):
        return self.created[owner][-1]

    # -- checking ----------------------------------------------------------------------------------------------
    def _bind(self, owner, name, sigs, args, kwargs) -> tuple[Signature, dict]:
        problems = []
        for sig in sigs:
            problem, bound = self._bind_one(sig, args, kwargs)
            if problem is None:
                return sig, bound
            problems.append(problem)
        raise NotInRelease(f"{owner}.{name}{_show(args, kwargs)} matches no overload in TensorRT "
                           f"{self.__version__}: {'; '.join(problems) or 'no signature'}")

    def _bind_one(self, sig: Signature, args, kwargs):
        if len(args) > len(sig.params):
            return f"takes {len(sig.params)} arguments, got {len(args)}", None
        bound = {p.name: a for p, a in zip(sig.params, args)}
        for key, value in kwargs.items():
            if key not in {p.name for p in sig.params}:
                return f"no keyword {key!r} ({', '.join(p.name for p in sig.params)})", None
            if key in bound:
                return f"{key!r} given twice", None
            bound[key] = value
        missing = [p.name for p in sig.params if p.name not in bound and not p.has_default]
        if missing:
            return f"missing {', '.join(missing)}", None
        for p in sig.params:
            if p.name in bound:
                problem = self._type_problem(bound[p.name], p.annotation)
                if problem:
                    return f"{p.name}: {problem}", None
        return None, bound

    def _type_problem(self, value, annotation: str) -> str | None:
        """What pybind11 would refuse about ``value`` for a parameter annotated ``annotation``, or None."""
        kind = _type_name(annotation)
        if annotation in ("int", "typing.SupportsInt"):
            ok = isinstance(value, int) or hasattr(value, "__index__")
            return None if ok and not isinstance(value, float) else f"{type(value).__name__} is not an int"
        if annotation in ("float", "typing.SupportsFloat"):
            return None if isinstance(value, (int, float)) else f"{type(value).__name__} is not a float"
        if annotation == "bool":
            return None if isinstance(value, (bool, int, np.bool_)) else f"{type(value).__name__} is not a bool"
        if annotation == "str":
            return None if isinstance(value, (str, bytes)) else f"{type(value).__name__} is not a str"
        if kind in ("buffer", "Buffer"):
            try:
                memoryview(value)
            except TypeError:
                return f"{type(value).__name__} has no buffer protocol"
            return None
        if annotation == "tuple":
            return None if isinstance(value, tuple) else f"{type(value).__name__} is not a tuple"
        real = getattr(self._real, kind, None) if "tensorrt" in annotation else None
        if real is None or value is None:
            return None
        if kind == "Dims" or (isinstance(real, type) and issubclass(real, self._real.Dims)):
            ok = isinstance(value, (tuple, list, self._real.Dims)) and all(isinstance(int(d), int) for d in value)
            return None if ok else f"{value!r} is not a shape"
        if isinstance(value, Recorder):
            return None if issubclass(value.real_class, real) else f"a {value.real_class.__name__}, not a {kind}"
        if isinstance(value, RecordingTensorRT):
            return f"the module, not a {kind}"
        return None if isinstance(value, real) else f"{type(value).__name__} {value!r} is not a {kind}"

    # -- behaviour ---------------------------------------------------------------------------------------------
    def _invoke(self, obj: Recorder, name: str, sigs, args, kwargs):
        owner = obj.real_class.__name__
        sig, bound = self._bind(owner, name, sigs, args, kwargs)
        self.calls.append(Call(owner, name, args, kwargs))
        behaviour = getattr(self, f"_{owner}_{name}", None)
        if behaviour is not None:
            return behaviour(obj, **bound)
        return self._default(sig.returns)

    def _default(self, returns: str):
        kind = _type_name(returns)
        if returns in ("None", ""):
            return None
        if returns == "bool":
            return True
        if returns == "int":
            return 0
        if returns == "str":
            return ""
        real = getattr(self._real, kind, None)
        if isinstance(real, type) and "tensorrt" in returns:
            return Recorder(self, real)
        raise NotInRelease(f"the recorder has no value for a {returns}")

    def _property(self, obj: Recorder, name: str, descriptor: property):
        owner = obj.real_class.__name__
        value = getattr(self, f"_{owner}_get_{name}", None)
        if value is not None:
            return value(obj)
        returns = (signatures(descriptor.fget) or _property_signature(descriptor) or [Signature("", (), "")])[0]
        if returns.returns == "int":
            return 0
        if returns.returns == "bool":
            return False
        raise NotInRelease(f"the recorder has no value for {owner}.{name}")

    # Builder, network, parser
    def _Builder_get_num_DLA_cores(self, obj):  # noqa: N802
        return self.scenario.dla_cores

    def _Builder_create_builder_config(self, obj):  # noqa: N802
        config = Recorder(self, self._real.IBuilderConfig, flags={self._real.BuilderFlag.TF32}, cache=None)
        self.created.setdefault("IBuilderConfig", []).append(config)
        return config

    def _Builder_create_network(self, obj, flags=0):  # noqa: N802
        network = Recorder(self, self._real.INetworkDefinition, flags=int(flags))
        self.created.setdefault("INetworkDefinition", []).append(network)
        return network

    def _Builder_build_serialized_network(self, obj, network, config):  # noqa: N802
        if config._state.get("cache") is not None:
            config._state["cache"]._state["data"] += b"|tuned"
        return HostMemory(self.scenario.plan) if self.scenario.build_ok else None

    def _OnnxParser_parse_from_file(self, obj, model):  # noqa: N802
        if not os.path.isfile(model):
            raise NotInRelease(f"parse_from_file({model!r}): no such file")
        return self.scenario.parse_ok

    def _OnnxParser_get_num_errors(self, obj):  # noqa: N802
        return 0 if self.scenario.parse_ok else len(self.scenario.parser_errors)

    def _OnnxParser_get_error(self, obj, index):  # noqa: N802
        name, op, node, desc = self.scenario.parser_errors[int(index)]
        return Recorder(self, self._real.ParserError, node_name=name, node_operator=op, node=node, desc=desc)

    def _ParserError_node_name(self, obj):  # noqa: N802
        return obj._state["node_name"]

    def _ParserError_node_operator(self, obj):  # noqa: N802
        return obj._state["node_operator"]

    def _ParserError_node(self, obj):  # noqa: N802
        return obj._state["node"]

    def _ParserError_desc(self, obj):  # noqa: N802
        return obj._state["desc"]

    # the builder config
    def _IBuilderConfig_set_flag(self, obj, flag):  # noqa: N802
        obj._state["flags"].add(flag)

    def _IBuilderConfig_clear_flag(self, obj, flag):  # noqa: N802
        obj._state["flags"].discard(flag)

    def _IBuilderConfig_get_flag(self, obj, flag):  # noqa: N802
        return flag in obj._state["flags"]

    def _IBuilderConfig_create_timing_cache(self, obj, serialized_timing_cache):  # noqa: N802
        return Recorder(self, self._real.ITimingCache, data=bytes(serialized_timing_cache))

    def _IBuilderConfig_set_timing_cache(self, obj, cache, ignore_mismatch):  # noqa: N802
        if not self.scenario.set_timing_cache_ok:
            return False
        obj._state["cache"] = cache
        return True

    def _IBuilderConfig_get_timing_cache(self, obj):  # noqa: N802
        return obj._state["cache"]

    def _ITimingCache_combine(self, obj, input_cache, ignore_mismatch):  # noqa: N802
        obj._state["data"] += b"+" + input_cache._state["data"]
        return True

    def _ITimingCache_serialize(self, obj):  # noqa: N802
        return HostMemory(obj._state["data"])

    # the runtime and the engine
    def _Runtime_get_num_DLA_cores(self, obj):  # noqa: N802
        return self.scenario.dla_cores

    def _Runtime_deserialize_cuda_engine(self, obj, serialized_engine):  # noqa: N802
        plan = bytes(memoryview(serialized_engine))
        if not self.scenario.deserialize_ok or plan != self.scenario.plan:
            return None  # TensorRT logs why and returns None
        if self.scenario.engine_needs_host_code and not obj._props.get("engine_host_code_allowed", False):
            return None  # "host code is not allowed": a version-compatible plan on a runtime that forbids it
        model = self.scenario.engine
        if model is None:
            raise NotInRelease("the scenario has no engine to deserialize")
        device = self.scenario.device
        if device is not None:
            device.cuda.tensorrt_bytes += model.weights_bytes
        engine = Recorder(self, self._real.ICudaEngine, model=model)
        self.created.setdefault("ICudaEngine", []).append(engine)
        return engine

    def _ICudaEngine_get_num_io_tensors(self, obj):  # noqa: N802
        return len(obj._state["model"].tensors)

    def _ICudaEngine_get_num_optimization_profiles(self, obj):  # noqa: N802
        return len(obj._state["model"].profiles)

    def _ICudaEngine_get_device_memory_size_v2(self, obj):  # noqa: N802
        return obj._state["model"].device_memory

    def _ICudaEngine_get_tensor_name(self, obj, index):  # noqa: N802
        return obj._state["model"].tensors[int(index)].name

    def _ICudaEngine_get_tensor_mode(self, obj, name):  # noqa: N802
        return getattr(self._real.TensorIOMode, obj._state["model"].tensor(name).mode)

    def _ICudaEngine_get_tensor_dtype(self, obj, name):  # noqa: N802
        t = obj._state["model"].tensor(name)
        names = {"float32": "FLOAT", "float16": "HALF", "int8": "INT8", "int32": "INT32", "int64": "INT64",
                 "bool": "BOOL", "uint8": "UINT8"}
        return getattr(self._real.DataType, t.trt_dtype or names[t.dtype])

    def _ICudaEngine_get_tensor_shape(self, obj, name):  # noqa: N802
        return self._real.Dims(obj._state["model"].tensor(name).shape)

    def _ICudaEngine_get_tensor_format(self, obj, name, *rest):  # noqa: N802
        return getattr(self._real.TensorFormat, obj._state["model"].tensor(name).format)

    def _ICudaEngine_get_tensor_location(self, obj, name):  # noqa: N802
        return getattr(self._real.TensorLocation, obj._state["model"].tensor(name).location)

    def _ICudaEngine_is_shape_inference_io(self, obj, name):  # noqa: N802
        return False

    def _ICudaEngine_get_tensor_profile_shape(self, obj, name, profile_index):  # noqa: N802
        model = obj._state["model"]
        if model.tensor(name).mode != "INPUT":
            raise NotInRelease(f"get_tensor_profile_shape({name!r}) of an output")
        return [self._real.Dims(s) for s in model.profiles[int(profile_index)][name]]

    def _ICudaEngine_create_execution_context(self, obj, strategy=None):  # noqa: N802
        context = Recorder(self, self._real.IExecutionContext, model=obj._state["model"], strategy=strategy,
                           shapes={}, addresses={}, allocators={}, profile=0, device_memory=None, runs=0)
        self.created.setdefault("IExecutionContext", []).append(context)
        return context

    def _IExecutionContext_set_device_memory(self, obj, memory, size):  # noqa: N802
        self._check_memory(int(memory), int(size), "the context's device memory")
        obj._state["device_memory"] = (int(memory), int(size))

    def _IExecutionContext_set_optimization_profile_async(self, obj, profile_index, stream_handle):  # noqa: N802
        if not 0 <= int(profile_index) < len(obj._state["model"].profiles):
            return False
        obj._state["profile"] = int(profile_index)
        obj._state["shapes"].clear()
        return True

    def _IExecutionContext_set_input_shape(self, obj, name, shape):  # noqa: N802
        model = obj._state["model"]
        lo, _, hi = model.profiles[obj._state["profile"]][name]
        shape = tuple(int(d) for d in shape)
        if len(shape) != len(lo) or not all(a <= d <= b for d, a, b in zip(shape, lo, hi)):
            return False
        obj._state["shapes"][name] = shape
        return True

    def _IExecutionContext_infer_shapes(self, obj):  # noqa: N802
        model = obj._state["model"]
        return [t.name for t in model.tensors if t.mode == "INPUT" and t.name not in obj._state["shapes"]]

    def _output_shapes(self, obj) -> dict:
        model = obj._state["model"]
        shapes = dict(obj._state["shapes"])
        shapes.update(model.output_shapes(obj._state["shapes"]))
        return shapes

    def _IExecutionContext_get_tensor_shape(self, obj, name):  # noqa: N802
        tensor = obj._state["model"].tensor(name)
        if tensor.data_dependent:
            return self._real.Dims(tuple(-1 for _ in tensor.shape))
        shapes = self._output_shapes(obj) if tensor.mode == "OUTPUT" else obj._state["shapes"]
        return self._real.Dims(shapes.get(name, tensor.shape))

    def _IExecutionContext_set_tensor_address(self, obj, name, memory):  # noqa: N802
        obj._state["model"].tensor(name)
        obj._state["addresses"][name] = int(memory)
        return True

    def _IExecutionContext_set_output_allocator(self, obj, name, output_allocator):  # noqa: N802
        obj._state["allocators"][name] = output_allocator
        return True

    def _IExecutionContext_execute_async_v3(self, obj, stream_handle):  # noqa: N802
        device = self.scenario.device
        if device is None:
            raise NotInRelease("execute_async_v3 needs the scenario's device (CpuTorch)")
        user_managed = obj._state["strategy"] == self._real.ExecutionContextAllocationStrategy.USER_MANAGED
        if user_managed and obj._state["device_memory"] is None:
            raise NotInRelease("execute_async_v3 on a USER_MANAGED context without set_device_memory")
        run = self._prepare_run(obj, device)
        capturing = device.cuda.capturing
        if capturing is not None:
            capturing.work.append(run)  # a CUDA graph records the work; replay runs it
        else:
            run()
        return True

    def _prepare_run(self, obj, device):
        model = obj._state["model"]
        missing = [t.name for t in model.tensors if t.mode == "INPUT" and t.name not in obj._state["shapes"]]
        if missing:
            raise NotInRelease(f"execute_async_v3 before set_input_shape for {missing}")
        shapes = self._output_shapes(obj)
        inputs = {}
        for t in model.tensors:
            if t.mode != "INPUT":
                continue
            address = obj._state["addresses"].get(t.name)
            if address is None:
                raise NotInRelease(f"execute_async_v3 without an address for input {t.name!r}")
            inputs[t.name] = (address, shapes[t.name], np.dtype(t.dtype))
        outputs = {}
        for t in model.tensors:
            if t.mode != "OUTPUT":
                continue
            if t.data_dependent:
                if t.name not in obj._state["allocators"]:
                    raise NotInRelease(f"data-dependent output {t.name!r} without an output allocator")
                outputs[t.name] = (None, None, np.dtype(t.dtype))
                continue
            address = obj._state["addresses"].get(t.name)
            if address is None:
                raise NotInRelease(f"execute_async_v3 without an address for output {t.name!r}")
            outputs[t.name] = (address, shapes[t.name], np.dtype(t.dtype))

        def run():
            arrays = {n: device.read(a, s, d) for n, (a, s, d) in inputs.items()}
            results = model.compute(arrays)
            for name, (address, shape, dtype) in outputs.items():
                value = np.ascontiguousarray(results[name], dtype=dtype)
                if address is None:
                    allocator = obj._state["allocators"][name]
                    address = allocator.reallocate_output_async(name, 0, value.nbytes, 256, 0)
                    device.write(address, value)
                    allocator.notify_shape(name, self._real.Dims(value.shape))
                else:
                    if tuple(value.shape) != tuple(shape):
                        raise NotInRelease(f"output {name!r}: the engine made {value.shape}, not {shape}")
                    device.write(address, value)
            obj._state["runs"] += 1
        return run

    def _check_memory(self, address, size, what):
        device = self.scenario.device
        if device is not None:
            device.check(address, size, what)


def recording_tensorrt(real, **scenario) -> RecordingTensorRT:
    return RecordingTensorRT(real, Scenario(**scenario))


def _show(args, kwargs) -> str:
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return "(" + ", ".join(parts) + ")"


# ---------------------------------------------------------------------------------------------------------------
# torch whose CUDA API runs on host memory: the runner's buffer layer, so its real code path runs on the CPU


class _Graph:
    def __init__(self):
        self.work = []

    def replay(self):
        for run in self.work:
            run()


class _Stream:
    _next = 0x5000

    def __init__(self, device=None):
        _Stream._next += 16
        self.cuda_stream = _Stream._next

    def synchronize(self):
        pass


class _Event:
    def __init__(self, enable_timing=False):
        self.enable_timing, self.at = enable_timing, None

    def record(self, stream=None):
        import time

        self.at = time.perf_counter()

    def elapsed_time(self, other) -> float:
        if not (self.enable_timing and other.enable_timing) or self.at is None or other.at is None:
            raise RuntimeError("elapsed_time needs two recorded timing events")
        return (other.at - self.at) * 1e3


class _CpuCuda:
    def __init__(self, owner, capability, name, total):
        self._owner, self._capability, self._name, self._total = owner, capability, name, total
        self.capturing = None
        self.tensorrt_bytes = 0  # what "TensorRT" allocated itself (weights at deserialization)
        self.Stream, self.Event, self.CUDAGraph = _Stream, _Event, _Graph

    def is_available(self):
        return True

    def device_count(self):
        return 1

    def get_device_capability(self, device=None):
        return self._capability

    def get_device_name(self, device=None):
        return self._name

    def device(self, device):
        return contextlib.nullcontext()

    def stream(self, stream):
        return contextlib.nullcontext()

    def synchronize(self, device=None):
        pass

    def mem_get_info(self, device=None):
        used = self.tensorrt_bytes + self._owner.allocated()
        return self._total - used, self._total

    def max_memory_allocated(self, device=None):
        return self._owner.peak

    def reset_peak_memory_stats(self, device=None):
        self._owner.peak = self._owner.allocated()

    @contextlib.contextmanager
    def graph(self, graph, stream=None):
        self.capturing = graph
        try:
            yield graph
        finally:
            self.capturing = None


class CpuTorch:
    """torch with a CUDA device emulated in host memory: tensors "on the GPU" are CPU tensors whose allocations
    are registered, so the recorder's execute_async_v3 can check every address it is given lies inside one."""

    def __init__(self, capability=(8, 7), name="NVIDIA Fake Orin", total=8 << 30):
        self.__version__ = torch.__version__ + " (CUDA emulated on the CPU for the tests)"
        self.cuda = _CpuCuda(self, capability, name, total)
        self._live: dict[int, torch.Tensor] = {}
        self.peak = 0

    def __getattr__(self, name):
        return getattr(torch, name)

    def empty(self, shape, dtype=None, device=None, pin_memory=False):
        tensor = torch.empty(shape, dtype=dtype)
        if device is not None and torch.device(device).type == "cuda":
            self._live[tensor.data_ptr()] = tensor
            self.peak = max(self.peak, self.allocated())
        return tensor

    def allocated(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._live.values())

    def check(self, address: int, size: int, what: str) -> None:
        for start, tensor in self._live.items():
            if start <= address and address + size <= start + tensor.numel() * tensor.element_size():
                return
        raise NotInRelease(f"{what}: {size} bytes at {address:#x} lie outside every device allocation")

    def read(self, address: int, shape, dtype) -> np.ndarray:
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        self.check(address, size, "an input")
        raw = (ctypes.c_char * size).from_address(address)
        return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()

    def write(self, address: int, value: np.ndarray) -> None:
        self.check(address, value.nbytes, "an output")
        ctypes.memmove(address, value.ctypes.data, value.nbytes)


# ---------------------------------------------------------------------------------------------------------------
# The machine around TensorRT: install, trtexec, GPU


class FakeHost(Host):
    """A machine with the given TensorRT module, trtexec and GPU (None: absent)."""

    def __init__(self, trt=None, trtexec=None, gpu=FAKE_GPU, trtexec_version=None, jetson=False):
        self.trt, self.trtexec, self._gpu, self._trtexec_version = trt, trtexec, gpu, trtexec_version
        self._jetson = jetson

    def find_tensorrt(self):
        return TensorRTInstall(self.trt.__version__, "pip:tensorrt") if self.trt else TensorRTInstall(None, "absent")

    def import_tensorrt(self):
        return self.trt

    def find_trtexec(self):
        return self.trtexec

    def trtexec_version(self, path):
        return self._trtexec_version or super().trtexec_version(path)

    def gpu(self):
        return self._gpu

    def platform(self):
        from segdeploy.tensorrt_host import Platform

        return Platform("aarch64", True) if self._jetson else Platform("x86_64", False)


def trtexec_number(release: str) -> int:
    """NV_TENSORRT_VERSION of a release, as trtexec's banner prints it (major*10000 + minor*100 + patch)."""
    major, minor, patch = (int(p) for p in release.split(".")[:3])
    return major * 10000 + minor * 100 + patch


def write_fake_trtexec(folder, version_number=100300, fail=False):
    """A trtexec that prints the real banner and, like trtexec, writes the plan given by --saveEngine."""
    script = folder / "trtexec"
    script.write_text(f"""#!/usr/bin/env bash
echo "&&&& RUNNING TensorRT.trtexec [TensorRT v{version_number}] # $0 $*"
if [ "$1" = "--help" ]; then exit 0; fi
printf '%s\\n' "$@" > "$(dirname "$0")/argv.txt"
{'echo "[E] Error[4]: fake build failure" ; exit 1' if fail else ''}
for arg in "$@"; do case "$arg" in --saveEngine=*) printf 'ftrt-bare-plan' > "${{arg#--saveEngine=}}";; esac; done
""")
    script.chmod(0o755)
    return str(script)


def precision_nodes(mode: str, source: str, target: str, out_type: int) -> list:
    """Identity-like nodes from ``source`` to ``target`` whose tensors are what ``mode`` says (fp32: none extra)."""
    if mode == "fp16":
        return [helper.make_node("Cast", [source], ["half"], to=TensorProto.FLOAT16, name="to_half"),
                helper.make_node("Cast", ["half"], [target], to=out_type, name="to_float")]
    if mode == "int8":
        return [helper.make_node("QuantizeLinear", [source, "scale"], ["q"], name="quantize"),
                helper.make_node("DequantizeLinear", ["q", "scale"], [target], name="dequantize")]
    return [helper.make_node("Identity", [source], [target], name="identity")]


def write_onnx_artifact(path, *, manifest=None, nodes=None):
    """A tiny ONNX file carrying ``manifest`` (default: a static fp32 sample) the way segdeploy's export embeds it;
    its graph holds what the manifest's precision claims (a float16 cast for fp16, a Q/DQ pair for int8), since the
    reader checks that claim against the graph."""
    manifest = manifest or sample_manifest()
    inp, out = manifest.input, manifest.output
    elem = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "uint8": TensorProto.UINT8}
    nodes = nodes or precision_nodes(manifest.precision.mode, inp.name, out.name, elem[out.dtype])
    used = {name for node in nodes for name in node.input}
    initializers = [helper.make_tensor("scale", TensorProto.FLOAT, [], [0.1])] if "scale" in used else []
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(inp.name, elem[inp.dtype], inp.shape)],
                              [helper.make_tensor_value_info(out.name, elem[out.dtype], out.shape)],
                              initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(embed_hashed(model, manifest), path)
    return str(path)
