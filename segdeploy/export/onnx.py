"""PyTorch -> ONNX: trace, check, simplify, validate, describe, write.

The TorchScript exporter (``torch.onnx.export(dynamo=False)``) is used on purpose: the families' export switches
are written for it (shape arithmetic traced into Shape/Gather ops), it takes ``dynamic_axes`` directly, and it is
fast (seconds, where the torch.export-based exporter took minutes on LRFormer and unrolled its pools into thousands
of Gathers, see spec/lrformer.md).

Export-time switches are ordinary builder options (``EXPORT_SWITCHES``); the artifact records which ones were used,
and validate rebuilds the PyTorch reference with the same ones.
"""
from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field

import onnx
import torch

from segdeploy import models
from segdeploy.errors import InputError, SegdeployError
from segdeploy.export import metadata as meta
from segdeploy.export.graph import DeployGraph
from segdeploy.export.simplify import MIN_OPSET, PassReport, check_standard_ops
from segdeploy.export.simplify import simplify as simplify_pass

# Inputs a dynamic artifact promises to take (validate and bench read this from the metadata).
DYNAMIC_PROFILE = {"batch": [1, 4], "height": [256, 1024], "width": [256, 1024], "multiple": 32}
# The second shape a dynamic artifact is validated at: another batch and aspect ratio than the traced one.
SECOND_VALIDATION_SHAPE = (2, 384, 640)
RECIPE_SEED = 0

# Builder options that put a family in its export form: option -> (value for static graphs, for dynamic graphs,
# the hazard it removes). Applied only to the families whose spec has the option.
EXPORT_SWITCHES = {
    "nmf_bases": ("fixed", "fixed",
                  "SegNeXt NMF: bases drawn once from a fixed seed and frozen (no RandomUniform), computed in float32"),
    "dynamic_shapes": (False, True,
                       "EfficientFormerV2 attention-bias tables resized with an exact bicubic Resize from the runtime "
                       "shape (dynamic) or folded to constants of the traced size (static); pyramid pools as "
                       "averaging matrices from the runtime shape (dynamic)"),
    "dynamic_pooling": (False, True,
                        "LRFormer adaptive pools as exact averaging-matrix MatMuls whose sizes come from the runtime "
                        "shape (dynamic) or are constants of the traced size (static)"),
}
# Hazards handled inside the model code whatever the options; recorded so the artifact says how.
MODEL_CODE_NOTES = {
    "segnext": ["NMF in float32 whatever the model dtype", "GroupNorm via InstanceNormalization at opset 17"],
    "cgrseg": ["RCA pools as means over one axis (ReduceMean)",
               "pyramid pools as exact averaging matrices (segdeploy.models.pooling)",
               "EfficientFormerV2 stride-2 kernel-1 AvgPool as a strided slice"],
    "lrformer": ["adaptive pools as exact averaging-matrix products (segdeploy.models.pooling)"],
    "offseg": ["CARAFE in standard ops (segdeploy.models.carafe), no mmcv custom op",
               "dilated unfold as shifted slices of a zero-padded map",
               "grid_sample as a gather-based bilinear sampler while exporting",
               "EfficientFormerV2 stride-2 kernel-1 AvgPool as a strided slice"],
}


@dataclass
class ExportResult:
    path: str
    sidecar_path: str
    metadata: dict
    reports: list[PassReport] = field(default_factory=list)


def export_options(spec: models.ModelSpec, dynamic: bool) -> dict:
    """The builder options that make ``spec``'s family exportable (static or dynamic)."""
    return {key: (dynamic_value if dynamic else static_value)
            for key, (static_value, dynamic_value, _) in EXPORT_SWITCHES.items() if key in spec.options}


def default_output_path(model_name: str, height: int, width: int, dynamic: bool = False, outputs: str = "logits",
                        preprocess: bool = False) -> str:
    suffix = ("_dynamic" if dynamic else "") + ("_mask" if outputs == "mask" else "") + ("_uint8" if preprocess
                                                                                         else "")
    return os.path.join("artifacts", f"{model_name}_{height}x{width}{suffix}.onnx")


def build_deploy_graph(model_name: str, *, checkpoint=None, dynamic: bool = False, outputs: str = "logits",
                       preprocess: bool = False, options: dict | None = None) -> tuple[DeployGraph, dict]:
    """The eager module that gets exported (and that validate runs as the reference), plus a weights record."""
    spec = models.get_spec(model_name)
    options = export_options(spec, dynamic) if options is None else dict(options)
    model = models.create(model_name, checkpoint=checkpoint, **options)
    if checkpoint is None:
        models.load_recipe_weights(model, seed=RECIPE_SEED)
        source = {"source": "recipe", "seed": RECIPE_SEED,
                  "note": "deterministic golden-recipe weights (segdeploy.recipe), not trained weights"}
    else:
        source = {"source": "checkpoint", "file": os.path.basename(os.fspath(checkpoint))}
    # eval() after loading, as the originals were run (no family keeps a stale cache: see the golden tests)
    model.eval()
    weights = {**source, "sha256": meta.state_dict_sha256(model), "options": options}
    return DeployGraph(model, outputs=outputs, preprocess=preprocess).eval(), weights


def check_export_shape(spec, batch: int, height: int, width: int, dynamic: bool) -> None:
    multiple = spec.size_multiple
    if batch < 1 or height < 1 or width < 1:
        raise InputError(f"batch, height and width must be positive, got {batch}x{height}x{width}")
    if height % multiple or width % multiple:
        raise InputError(f"{spec.name} takes sizes that are multiples of {multiple}, not {height}x{width}")
    if dynamic:
        lo_b, hi_b = DYNAMIC_PROFILE["batch"]
        lo, hi = DYNAMIC_PROFILE["height"]
        if not (lo_b <= batch <= hi_b and lo <= height <= hi and lo <= width <= hi):
            raise InputError(f"a dynamic export is traced inside its profile (batch {lo_b}-{hi_b}, H and W "
                             f"{lo}-{hi}); got {batch}x{height}x{width}")


def trace(graph: DeployGraph, batch: int, height: int, width: int, dynamic: bool = False,
          opset: int = 17) -> onnx.ModelProto:
    """Trace ``graph`` at (batch, height, width) into an ONNX model (static, or with dynamic batch/H/W axes)."""
    example = graph.example_input(batch, height, width)
    dynamic_axes = None
    if dynamic:
        spatial = {0: "batch", 1: "height", 2: "width"} if graph.normalize is not None else \
            {0: "batch", 2: "height", 3: "width"}
        out_axes = {0: "batch", 1: "height", 2: "width"} if graph.to_mask is not None else \
            {0: "batch", 2: "out_height", 3: "out_width"}
        dynamic_axes = {graph.input_name: spatial, graph.output_name: out_axes}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # TracerWarnings flag Python-side shape arithmetic, which the families route through tensors where it matters
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(graph, (example,), buffer, dynamo=False, opset_version=opset,
                              input_names=[graph.input_name], output_names=[graph.output_name],
                              dynamic_axes=dynamic_axes, do_constant_folding=True)
        except SegdeployError:
            raise
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise SegdeployError(f"the ONNX exporter failed on {graph.model.spec.name}: {type(exc).__name__}: "
                                 f"{first}") from None
    model = onnx.load_from_string(buffer.getvalue())
    model.producer_name = "segdeploy (torch.onnx TorchScript exporter)"
    return model


def build_onnx(graph: DeployGraph, batch: int, height: int, width: int, *, dynamic: bool = False, opset: int = 17,
               simplify: bool = True, simplifiers=("onnxsim", "onnxslim")) -> tuple[onnx.ModelProto,
                                                                                   list[PassReport]]:
    """trace -> check_standard_ops -> simplify (-> check again): the graph an artifact holds, minus metadata."""
    if opset < MIN_OPSET:
        raise InputError(f"opset {opset} is too old: at least {MIN_OPSET} is needed (LayerNormalization)")
    model = trace(graph, batch, height, width, dynamic, opset)
    reports = [PassReport("trace", 0, len(model.graph.node), f"torch {torch.__version__}")]
    model, report = check_standard_ops(model)
    reports.append(report)
    if simplify:
        model, report = simplify_pass(model, simplifiers)
        reports.append(report)
        model, report = check_standard_ops(model)  # a simplifier must not introduce contrib ops either
        reports.append(report)
    onnx.checker.check_model(model)
    return model, reports


def validation_shapes(batch: int, height: int, width: int, dynamic: bool) -> list[tuple[int, int, int]]:
    shapes = [(batch, height, width)]
    if dynamic and SECOND_VALIDATION_SHAPE not in shapes:
        shapes.append(SECOND_VALIDATION_SHAPE)
    elif dynamic:
        shapes.append((1, 512, 512))
    return shapes


def _describe(graph: DeployGraph, model_proto: onnx.ModelProto, *, batch, height, width, dynamic, opset,
              simplify, weights, reports, validation) -> dict:
    from segdeploy.preprocess import RESIZE_POLICY

    model = graph.model
    spec = model.spec
    shape = ("batch", "height", "width") if dynamic else (batch, height, width)
    input_info = graph.input_layout(*shape)
    output_info = graph.output_layout(*shape)
    axes = {}
    if dynamic:
        for tensor in (*model_proto.graph.input, *model_proto.graph.output):
            dims = tensor.type.tensor_type.shape.dim
            axes[tensor.name] = {str(i): d.dim_param for i, d in enumerate(dims) if d.dim_param}
    by_name = {r.name: r for r in reports}
    hazards = [note for key, (_, _, note) in EXPORT_SWITCHES.items() if key in weights["options"]]
    hazards += MODEL_CODE_NOTES.get(spec.family, [])
    return {
        "segdeploy_metadata_version": meta.METADATA_VERSION,
        "format": "onnx",
        "model": spec.name, "family": spec.family, "variant": spec.variant,
        "num_classes": model.num_classes,
        "class_names": list(spec.class_names(model.num_classes)),
        "palette": [list(c) for c in spec.palette(model.num_classes)],
        "input": input_info,
        "output": output_info,
        "dynamic": dynamic,
        "dynamic_axes": axes,
        "input_profile": ({**DYNAMIC_PROFILE, "opt": [batch, height, width]} if dynamic else
                          {"batch": [batch, batch], "height": [height, height], "width": [width, width],
                           "multiple": spec.size_multiple, "opt": [batch, height, width]}),
        "preprocessing": {
            "in_graph": graph.normalize is not None,
            "mean": list(spec.mean), "std": list(spec.std), "channel_order": spec.channel_order,
            "resize_policy": RESIZE_POLICY, "size_multiple": spec.size_multiple,
            "align_corners": spec.align_corners,
        },
        "opset": opset,
        "export_options": {"outputs": graph.output_kind, "preprocess": graph.normalize is not None,
                           "simplify": simplify, "model_options": weights["options"],
                           "nmf_bases": weights["options"].get("nmf_bases"),
                           "exporter": "torch.onnx TorchScript (dynamo=False)", "export_hazards": hazards},
        "graph": {"nodes": len(model_proto.graph.node),
                  "nodes_traced": by_name["trace"].nodes_after,
                  "simplifier": by_name["simplify"].tool if "simplify" in by_name else None,
                  "passes": [r.as_dict() for r in reports],
                  "initializers": len(model_proto.graph.initializer)},
        "weights": {k: v for k, v in weights.items() if k != "options"},
        "graph_sha256": meta.graph_sha256(model_proto),
        "tool_versions": meta.tool_versions(),
        "validation": validation,
    }


def export_onnx(model_name: str, output: str | os.PathLike | None = None, *, checkpoint=None, height: int = 512,
                width: int = 512, batch: int = 1, dynamic: bool = False, opset: int = 17, simplify: bool = True,
                outputs: str = "logits", preprocess: bool = False, force: bool = False,
                validate: bool = True, threads: int | None = None) -> ExportResult:
    """Export ``model_name`` to ONNX with a JSON sidecar; see the module docstring and README.

    Writes nothing unless every step (trace, op check, simplification, numerical validation against PyTorch)
    succeeded; both files are written atomically.
    """
    from segdeploy.io import check_writable, write_bytes_atomic, write_text_atomic

    spec = models.get_spec(model_name)
    check_export_shape(spec, batch, height, width, dynamic)
    path = os.fspath(output) if output is not None else default_output_path(model_name, height, width, dynamic,
                                                                            outputs, preprocess)
    if not path.endswith(".onnx"):
        raise InputError(f"an ONNX artifact's name must end in .onnx: {path}")
    side = meta.sidecar_path(path)
    check_writable(path, force)  # fail before minutes of work, not after
    check_writable(side, force)

    graph, weights = build_deploy_graph(model_name, checkpoint=checkpoint, dynamic=dynamic, outputs=outputs,
                                        preprocess=preprocess)
    model_proto, reports = build_onnx(graph, batch, height, width, dynamic=dynamic, opset=opset,
                                      simplify=simplify)

    validation = {"skipped": True}
    if validate:
        from segdeploy.validate import validate_graph

        report = validate_graph(graph, model_proto, validation_shapes(batch, height, width, dynamic),
                                threads=threads)
        validation = report.summary()
        if not report.passed:
            raise SegdeployError(f"{model_name}: the exported graph does not match PyTorch ({report.failure_line()}); "
                                 "nothing was written")

    metadata = _describe(graph, model_proto, batch=batch, height=height, width=width, dynamic=dynamic, opset=opset,
                         simplify=simplify, weights=weights, reports=reports, validation=validation)
    meta.embed(model_proto, metadata)
    write_bytes_atomic(path, model_proto.SerializeToString(deterministic=True), force=force)
    try:
        write_text_atomic(side, meta.to_json(metadata), force=force)
    except BaseException:
        os.unlink(path)  # an artifact without its sidecar is a partial artifact
        raise
    return ExportResult(path, side, metadata, reports)
