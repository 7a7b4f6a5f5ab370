"""The manifest of a freshly exported ONNX graph: everything a runtime, a TensorRT builder or the C++ library needs
to use the artifact without the Python model (see segdeploy.artifact.manifest)."""
from __future__ import annotations

from segdeploy.artifact import manifest as mf
from segdeploy.artifact.onnx_file import graph_sha256
from segdeploy.hostinfo import tool_versions
from segdeploy.models.deploy import export_hazards
from segdeploy.preprocess import RESIZE_POLICY, TEST_SCALE

# Inputs a dynamic artifact promises to take: TensorRT's optimisation profile, validate's and bench's ranges.
DYNAMIC_BATCH = (1, 4)
DYNAMIC_SIZE = (256, 1024)
EXPORTER = "torch.onnx TorchScript (dynamo=False)"


def profile_for(spec, batch: int, height: int, width: int, dynamic: bool) -> mf.Profile:
    if not dynamic:
        return mf.Profile(mf.Range(batch, batch, batch), mf.Range(height, height, height),
                          mf.Range(width, width, width), spec.size_multiple)
    lo, hi = DYNAMIC_SIZE
    return mf.Profile(mf.Range(DYNAMIC_BATCH[0], batch, DYNAMIC_BATCH[1]), mf.Range(lo, height, hi),
                      mf.Range(lo, width, hi), spec.size_multiple)


def _strided(r: mf.Range, stride: int) -> tuple[int, int, int]:
    return tuple(-(-v // stride) for v in (r.min, r.opt, r.max))


def io_table(graph, profile: mf.Profile, dynamic: bool) -> tuple[list[mf.TensorSpec], list[mf.TensorSpec]]:
    """The input and output of a DeployGraph, with their dynamic axes' ranges taken from ``profile``."""
    spec = graph.spec
    b, h, w = profile.batch, profile.height, profile.width
    dims = {"batch": b, "height": h, "width": w}
    if graph.normalize is not None:
        names, layout, channel_order = ["batch", "height", "width", 3], "NHWC", "BGR"
    else:
        names, layout, channel_order = ["batch", 3, "height", "width"], "NCHW", spec.channel_order
    tensor_in = mf.TensorSpec(graph.input_name, graph.input_dtype, layout,
                              [n if dynamic or isinstance(n, int) else dims[n].opt for n in names],
                              channel_order=channel_order, kind="image")
    if dynamic:
        tensor_in.dynamic_axes = [mf.Axis(i, n, dims[n].min, dims[n].opt, dims[n].max)
                                  for i, n in enumerate(names) if isinstance(n, str)]

    if graph.to_mask is not None:
        out_names = [("batch", (b.min, b.opt, b.max)), ("height", (h.min, h.opt, h.max)),
                     ("width", (w.min, w.opt, w.max))]
        tensor_out = mf.TensorSpec(graph.output_name, graph.output_dtype, "NHW", [], kind="mask", stride=1,
                                   semantics="class index per input pixel: logits bilinearly resized to the input "
                                             f"size (align_corners={spec.align_corners}), then argmax over classes")
    else:
        stride = spec.output_stride
        out_names = [("batch", (b.min, b.opt, b.max)), (graph.num_classes, None),
                     (f"height/{stride}", _strided(h, stride)), (f"width/{stride}", _strided(w, stride))]
        tensor_out = mf.TensorSpec(graph.output_name, graph.output_dtype, "NCHW", [], kind="logits", stride=stride,
                                   semantics=f"class logits at 1/{stride} of the input size, before the resize to "
                                             f"the input size; mask = argmax over classes after a bilinear resize "
                                             f"(align_corners={spec.align_corners})")
    for i, (name, ranges) in enumerate(out_names):
        if ranges is None:
            tensor_out.shape.append(name)
        elif dynamic:
            tensor_out.shape.append(name)
            tensor_out.dynamic_axes.append(mf.Axis(i, name, *ranges))
        else:
            tensor_out.shape.append(ranges[1])
    return [tensor_in], [tensor_out]


def describe(graph, model_proto, *, batch: int, height: int, width: int, dynamic: bool, opset: int, simplify: bool,
             weights: dict, reports: list, validation: dict, precision: mf.Precision | None = None) -> mf.Manifest:
    spec = graph.spec
    k = graph.num_classes
    dataset = weights.get("dataset_meta") or {}
    class_names = dataset.get("classes") if dataset.get("classes") and len(dataset["classes"]) == k else None
    palette = dataset.get("palette") if class_names and dataset.get("palette") else None
    profile = profile_for(spec, batch, height, width, dynamic)
    inputs, outputs = io_table(graph, profile, dynamic)
    by_name = {r.name: r for r in reports}
    return mf.Manifest(
        model=mf.ModelInfo(spec.name, spec.family, spec.variant, k,
                           list(class_names or spec.class_names(k)),
                           [list(c) for c in (palette or spec.palette(k))]),
        weights=mf.Weights(weights["source"], weights["sha256"], weights.get("file"), weights.get("seed"),
                           weights.get("note", "")),
        precision=precision or mf.Precision(),
        inputs=inputs, outputs=outputs, profile=profile,
        preprocessing=mf.Preprocessing(
            in_graph=graph.normalize is not None, mean=list(spec.mean), std=list(spec.std),
            channel_order=spec.channel_order, size_multiple=spec.size_multiple, align_corners=spec.align_corners,
            resize=mf.Resize("fit", list(TEST_SCALE), spec.size_multiple, "bilinear"),
            description=RESIZE_POLICY + ("" if dynamic else f"; this static artifact takes {height}x{width}: resize "
                                                               "images to that size")),
        export=mf.ExportInfo(
            opset=opset, exporter=EXPORTER, dynamic=dynamic, outputs=graph.output_kind,
            preprocess=graph.normalize is not None, simplify=simplify,
            simplifier=by_name["simplify"].tool if "simplify" in by_name else None,
            model_options=dict(weights["options"]), hazards=export_hazards(spec, weights["options"]),
            passes=[r.as_dict() for r in reports], nodes=len(model_proto.graph.node),
            nodes_traced=by_name["trace"].nodes_after, initializers=len(model_proto.graph.initializer)),
        graph_sha256=graph_sha256(model_proto), tool_versions=tool_versions(), validation=dict(validation))
