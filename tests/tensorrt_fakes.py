"""Stand-ins for TensorRT's Python module and for a machine's TensorRT install, recording what segdeploy asks of
them, so the builder's and the export's decisions run on machines without TensorRT or a GPU.

The fake follows the 10.3/11.1 Python bindings' names and signatures; it is a recorder, not an emulator: it
checks that the calls are the documented ones and returns a fixed "plan"."""
from __future__ import annotations

import os
from types import SimpleNamespace

import onnx
from onnx import TensorProto, helper

from manifests import embed_hashed, sample_manifest
from segdeploy.export.tensorrt import Host
from segdeploy.tensorrt_host import GpuInfo, TensorRTInstall

FAKE_PLAN = b"ftrt-fake-serialized-plan"
FAKE_GPU = GpuInfo("NVIDIA Fake GPU", "8.6")


class _Named(SimpleNamespace):
    pass


def fake_tensorrt(version="10.3.0", *, parse_ok=True, build_ok=True, dla_cores=2):
    calls = []

    class Logger:
        WARNING = "WARNING"

        def __init__(self, severity):
            calls.append(("Logger", severity))

    class Profile:
        def set_shape(self, name, mn, opt, mx):
            calls.append(("profile.set_shape", name, tuple(mn), tuple(opt), tuple(mx)))

    class TimingCache:
        def __init__(self, data):
            self.data = bytes(data)

        def combine(self, other, ignore_mismatch):
            calls.append(("cache.combine", other.data, ignore_mismatch))
            self.data += b"+" + other.data

        def serialize(self):
            return self.data

    class Config:
        def __init__(self):
            self._cache = None

        def set_memory_pool_limit(self, pool, size):
            calls.append(("config.set_memory_pool_limit", pool, size))

        def set_flag(self, flag):
            calls.append(("config.set_flag", flag))

        def add_optimization_profile(self, profile):
            calls.append(("config.add_optimization_profile",))

        def create_timing_cache(self, data):
            calls.append(("config.create_timing_cache", bytes(data)))
            return TimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            calls.append(("config.set_timing_cache", cache.data, ignore_mismatch))
            self._cache = TimingCache(cache.data + b"|tuned")

        def get_timing_cache(self):
            return self._cache

        def __setattr__(self, name, value):
            if not name.startswith("_"):
                calls.append((f"config.{name}", value))
            object.__setattr__(self, name, value)

    class Network:
        pass

    class Builder:
        num_DLA_cores = dla_cores

        def __init__(self, logger):
            calls.append(("Builder",))

        def create_network(self, flags=0):
            calls.append(("create_network", flags))
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calls.append(("build_serialized_network",))
            return FAKE_PLAN if build_ok else None

    class ParserError:
        def desc(self):
            return "Unsupported operator Unique"

        def node_name(self):
            return "uniq"

        def node_operator(self):
            return "Unique"

        def node(self):
            return 3

    class OnnxParser:
        num_errors = 0 if parse_ok else 2

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            calls.append(("parse_from_file", os.path.basename(path)))
            return parse_ok

        def get_error(self, i):
            return ParserError()

    def init_libnvinfer_plugins(logger, namespace):
        calls.append(("init_libnvinfer_plugins", namespace))

    return SimpleNamespace(
        __version__=version, calls=calls, Logger=Logger, Builder=Builder, OnnxParser=OnnxParser,
        init_libnvinfer_plugins=init_libnvinfer_plugins,
        NetworkDefinitionCreationFlag=_Named(STRONGLY_TYPED=1),
        MemoryPoolType=_Named(WORKSPACE="WORKSPACE"),
        BuilderFlag=_Named(FP16="FP16", INT8="INT8", GPU_FALLBACK="GPU_FALLBACK",
                           VERSION_COMPATIBLE="VERSION_COMPATIBLE"),
        DeviceType=_Named(DLA="DLA", GPU="GPU"),
        HardwareCompatibilityLevel=_Named(AMPERE_PLUS="AMPERE_PLUS", SAME_COMPUTE_CAPABILITY="SAME_CC"))


class FakeHost(Host):
    """A machine with the given TensorRT module, trtexec and GPU (None: absent)."""

    def __init__(self, trt=None, trtexec=None, gpu=FAKE_GPU, trtexec_version=None):
        self.trt, self.trtexec, self._gpu, self._trtexec_version = trt, trtexec, gpu, trtexec_version

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
