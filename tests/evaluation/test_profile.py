"""The profiler: module scopes from node names, placing every layer of a backend's profile in exactly one module,
the fold's rows adding up whatever the depth, FLOPs per node, ONNX Runtime's trace parsing, and profiles of a real
export on ONNX Runtime and OpenVINO whose layers all land in modules the model has."""
from __future__ import annotations

import importlib.util
import random

import onnx
import pytest
from onnx import TensorProto, helper
from profile_graphs import SCOPED_FLOPS, scoped_graph, tensor

from exports import CI_SIZE, export
from segdeploy.evaluation.bench.protocol import Protocol
from segdeploy.evaluation.profile import report as profile_report
from segdeploy.evaluation.profile.flops import node_flops
from segdeploy.evaluation.profile.fold import by_operator, fold
from segdeploy.evaluation.profile.run import ProfileRequest, profile
from segdeploy.evaluation.profile.scopes import ScopeResolver, common_scope, scope_of, scope_text
from segdeploy.models.deploy import build_deploy_graph
from segdeploy.runtimes.base import LayerTime
from segdeploy.runtimes.onnxruntime import profile_from_trace
from segdeploy.runtimes.tensorrt_hooks import tensorrt_layer_sources

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
QUICK = Protocol(warmup_s=0.0, min_s=0.0, min_iters=2)


def test_scope_of_reads_the_exporters_module_path():
    assert scope_of("/model/backbone/network.0/network.0.0/mlp/fc1/Conv") == ("backbone", "network.0", "0", "mlp",
                                                                              "fc1")
    # ONNX Runtime appends to the last component, which is the operator's: the scope is unchanged
    assert scope_of("/model/backbone/network.0/network.0.0/mlp/fc1/Conv_output_0_nchwc") == \
        scope_of("/model/backbone/network.0/network.0.0/mlp/fc1/Conv")
    assert scope_of("/model/decode_head/conv_seg/Conv") == ("decode_head", "conv_seg")
    assert scope_of("/to_mask/Resize") == ("to_mask",)
    assert scope_of("/Conv") == ()
    assert scope_of("ReorderInput_token_12") is None and scope_of("Conv_3") is None
    assert scope_text(("backbone", "network.0", "0")) == "backbone.network.0.0" and scope_text(()) == "(graph)"
    assert common_scope([("a", "b", "c"), ("a", "b"), ("a", "b", "d")]) == ("a", "b")
    assert common_scope([("a",), ("b",)]) == () and common_scope([]) is None


def test_resolver_reads_each_backends_spelling():
    known = ["/model/backbone/stage.0/conv/Conv", "/model/backbone/stage.0/act/Gelu", "/model/head/MatMul"]
    resolver = ScopeResolver(known)
    stage = ("backbone", "stage.0")
    assert resolver.resolve("/model/backbone/stage.0/conv/Conv/WithoutBiases") == stage + ("conv",)  # OpenVINO
    assert resolver.resolve("input_abcd_acdb_/model/backbone/stage.0/conv/Conv/WithoutBiases") == stage + ("conv",)
    assert resolver.resolve("/model/head/MatMul") == ("head",)
    assert resolver.resolve("Multiply_17510") is None
    # a fused layer lands in the scope its nodes share
    fused = LayerTime("/model/backbone/stage.0/conv/Conv", "Convolution", 1.0,
                      sources=("Multiply_1", "/model/backbone/stage.0/conv/Conv", "/model/backbone/stage.0/act/Gelu"))
    assert resolver.own_scope(fused) == stage
    # TensorRT's layer names hold the ONNX node names
    assert tensorrt_layer_sources("/model/a/Conv + /model/a/act/Relu") == ("/model/a/Conv", "/model/a/act/Relu")
    assert tensorrt_layer_sources("PWN(PWN(/model/b.0/Mul, /model/b.0/Add), /model/b.0/act/Gelu)") == \
        ("/model/b.0/Mul", "/model/b.0/Add", "/model/b.0/act/Gelu")
    assert tensorrt_layer_sources("{ForeignNode[/model/blk.0/attn/MatMul.../model/blk.0/attn/Softmax]}") == \
        ("/model/blk.0/attn/MatMul", "/model/blk.0/attn/Softmax")
    assert tensorrt_layer_sources("Reformatting CopyNode for Input Tensor 0 to /model/x/Conv") == ("/model/x/Conv",)
    assert tensorrt_layer_sources("__myl_MulAdd_myl0_3") == ()


def test_layers_without_nodes_are_placed_beside_their_neighbours():
    layers = [
        LayerTime("/model/a/conv/Conv", "Conv", 1.0, ("/model/a/conv/Conv",), ("reorder_1",)),
        LayerTime("reorder_1", "Reorder", 0.5, (), ("reorder_2", "/model/a/conv/Conv")),  # consumers first
        LayerTime("reorder_2", "Reorder", 0.5, (), ("/model/b/Add", "reorder_1")),
        LayerTime("/model/b/Add", "Add", 0.2, ("/model/b/Add",), ()),
        LayerTime("orphan", "Copy", 0.1, (), ("nothing_known",)),
    ]
    placed = ScopeResolver().place(layers)
    # the nearest placed neighbour wins (consumers first at the same distance): reorder_1's producer is one hop
    # away, its consumer's consumer two; reorder_2's consumer one
    assert placed == [(("a", "conv"), "own"), (("a", "conv"), "neighbour"), (("b",), "neighbour"), (("b",), "own"),
                      ((), "unplaced")]


def test_the_fold_is_exhaustive_at_every_depth():
    """Every layer lands in exactly one module row: the rows' times and layer counts add up to the layers' at every
    depth, and the FLOPs to the graph's."""
    rng = random.Random(0)
    names = ["backbone", "decode_head", "stage.0", "stage.1", "0", "1", "attn", "mlp", "fc1", "act"]
    layers, flops = [], {}
    for i in range(300):
        scope = tuple(rng.choice(names) for _ in range(rng.randint(0, 6)))
        layers.append({"name": f"n{i}", "op": rng.choice(["Conv", "Gelu", "Reorder"]), "ms": rng.random(),
                       "scope": list(scope)})
        flops[scope] = flops.get(scope, 0) + rng.randint(0, 1000)
    total = sum(layer["ms"] for layer in layers)
    for depth in range(0, 8):
        rows = fold(layers, depth, flops)
        assert sum(r["ms"] for r in rows) == pytest.approx(total)
        assert sum(r["layers"] for r in rows) == len(layers)
        assert sum(r["share"] for r in rows) == pytest.approx(1.0)
        assert sum(r["flops"] or 0 for r in rows) == sum(flops.values())
        assert all(len(r["scope"]) <= depth for r in rows if r["scope"] is not None)
        assert len({r["module"] for r in rows}) == len(rows)
        for r in rows:
            assert sum(r["ops"].values()) == pytest.approx(r["ms"])
    assert [r["module"] for r in fold(layers, 0, flops)] == ["(graph)"]
    ops = by_operator(layers)
    assert sum(r["ms"] for r in ops) == pytest.approx(total) and sum(r["layers"] for r in ops) == len(layers)


def test_flops_per_node(tmp_path):
    path = scoped_graph(tmp_path / "g.onnx")
    assert node_flops(onnx.load(path)) == SCOPED_FLOPS
    # a MatMul sums K products per output element; a ConvTranspose scatters a (Cout/g x kernel) patch per input
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["m"], name="mm"),
         helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2], name="up")], "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3, 5, 7]),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("m", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [tensor("b", [7, 11], 0), tensor("w", [4, 6, 2, 2], 1)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=9)
    assert node_flops(model) == {"mm": 2 * 2 * 3 * 5 * 11 * 7, "up": 2 * 4 * 8 * 8 * 6 * 2 * 2}
    # dynamic inputs are counted at the shapes given
    dynamic = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["m"], name="mm")], "g",
                                [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 5])],
                                [helper.make_tensor_value_info("m", TensorProto.FLOAT, None)],
                                [tensor("b", [5, 3], 0)])
    model = helper.make_model(dynamic, opset_imports=[helper.make_opsetid("", 20)], ir_version=9)
    assert node_flops(model) == {"mm": None}
    assert node_flops(model, {"a": (4, 5)}) == {"mm": 2 * 4 * 3 * 5}


def test_onnxruntime_trace_parsing_drops_the_warmup_runs():
    def run(ts, dur):
        return {"cat": "Session", "name": "model_run", "ts": ts, "dur": dur}

    def node(name, ts, dur, op):
        return {"cat": "Node", "name": name + "_kernel_time", "ts": ts, "dur": dur,
                "args": {"op_name": op, "provider": "CPUExecutionProvider"}}

    events = [run(0, 100), node("/m/a/Conv", 10, 90, "Conv"),  # warm-up
              run(200, 50), node("/m/a/Conv", 205, 30, "Conv"), node("ReorderOutput_1", 240, 8, "ReorderOutput"),
              {"cat": "Node", "name": "/m/a/Conv_fence_before", "ts": 204, "dur": 1},
              run(300, 70), node("/m/a/Conv", 305, 50, "Conv"), node("ReorderOutput_1", 360, 6, "ReorderOutput")]
    graph = {"ReorderOutput_1": ("ReorderOutput", ("/m/b/Add", "/m/a/Conv"))}
    result = profile_from_trace(events, graph, warmup=1)
    assert result.run_ms == [0.05, 0.07]
    assert [(layer.name, layer.op, layer.ms) for layer in result.layers] == [
        ("/m/a/Conv", "Conv", pytest.approx(0.04)), ("ReorderOutput_1", "ReorderOutput", pytest.approx(0.007))]
    assert result.layers[1].neighbours == ("/m/b/Add", "/m/a/Conv")
    assert result.layers[0].samples == pytest.approx((0.03, 0.05))  # per run, for a median over runs


BACKENDS = ["onnxruntime"] + (["openvino"] if HAS_OPENVINO else [])


@pytest.mark.parametrize("backend", BACKENDS)
def test_profile_of_a_scoped_graph(backend, tmp_path):
    path = scoped_graph(tmp_path / "g.onnx")
    report = profile(ProfileRequest(artifact=path, backend=backend, height=32, width=32, threads=1, runs=3, warmup=1,
                                    depth=2, protocol=QUICK, measure_peak=False))
    layers = report["layers"]
    assert layers and report["placement"]["unplaced"] == 0
    assert sum(r["ms"] for r in report["modules"]) == pytest.approx(report["profiled"]["layer_ms"])
    assert {r["module"] for r in report["modules"]} <= {"backbone.stage.0", "backbone.stage.1", "decode_head",
                                                        "decode_head.cls"}
    assert report["flops"]["total"] == sum(SCOPED_FLOPS.values())
    by_module = {r["module"]: r for r in report["modules"]}
    assert by_module["backbone.stage.0"]["flops"] == SCOPED_FLOPS["/model/backbone/stage.0/stage.0.0/conv/Conv"]
    assert report["latency_ms"]["p50"] > 0 and report["coverage"]["of_latency_p50"] > 0
    columns, rows = profile_report.module_table(report)
    assert len(rows) == len([r for r in report["modules"] if r["ms"] > 0 or r.get("flops")])
    assert "backbone.stage.0" in profile_report.to_markdown(report)


@pytest.fixture(scope="module")
def segnext(tmp_path_factory):
    return export("segnext_t", tmp_path_factory.mktemp("profile") / "segnext_t.onnx", height=CI_SIZE[0],
                  width=CI_SIZE[1], verify=False).path


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_layer_of_a_real_export_lands_in_a_module_of_the_model(segnext, backend):
    """The exporter's scopes survive simplification and the backends' fusions: each layer is placed in a module
    that exists in the model (or in a module that called it), none is left to the whole graph, and the graph's
    FLOPs are the model's."""
    report = profile(ProfileRequest(artifact=segnext, backend=backend, height=CI_SIZE[0], width=CI_SIZE[1], runs=2,
                                    warmup=1, depth=2, protocol=QUICK, measure_peak=False))
    assert report["placement"]["unplaced"] == 0 and report["placement"]["own"] > 0.8 * len(report["layers"])
    graph, _ = build_deploy_graph("segnext_t")
    modules = {name.removeprefix("model.") for name, _ in graph.named_modules()}
    for layer in report["layers"]:
        assert ".".join(layer["scope"]) in modules, layer
    assert {r["module"].split(".")[0] for r in report["modules"]} == {"backbone", "decode_head"}
    from segdeploy.models.complexity import measure

    torch_flops = 2e9 * measure("segnext_t", *CI_SIZE)["gmacs"]
    assert report["flops"]["unresolved"] == 0
    assert report["flops"]["total"] == pytest.approx(torch_flops, rel=0.01)


def test_in_module_takes_a_module_and_its_children_only():
    from segdeploy.export.module_paths import in_module

    assert in_module("/model/decode_head/freqfusions.2/content_encoder/Conv", "decode_head.freqfusions")
    assert in_module("/model/decode_head/freqfusions.2/Mul_61", "decode_head.freqfusions.2")
    assert not in_module("/model/decode_head/freqfusions_extra/Mul", "decode_head.freqfusions")
    assert not in_module("/model/decode_head/align/Conv", "decode_head.freqfusions")
    assert not in_module("ReorderInput_token_12", "decode_head")
