"""segdeploy info MODEL|ARTIFACT: everything the registry knows about a variant, or everything an artifact's
manifest says (an ONNX file, its JSON sidecar, or an engine, read without TensorRT)."""
from __future__ import annotations

import os

from segdeploy.commands import common
from segdeploy.models import get_spec
from segdeploy.models.complexity import measure

EXAMPLES = """examples:
  segdeploy info cgrseg_t
  segdeploy info artifacts/cgrseg_t_512x512.onnx
  segdeploy info model.engine --json -"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("info", help="show a model's metadata, or an artifact's manifest",
                              epilog=EXAMPLES, formatter_class=common.HelpFormatter)
    p.add_argument("target", metavar="MODEL|ARTIFACT", help="a registered model name or an artifact path")
    common.add_json(p, "the information")
    common.add_force(p, "--json")
    p.set_defaults(func=run)


def describe_model(name: str) -> dict:
    spec = get_spec(name)
    m = measure(name, with_macs=False, cached=True)
    paper = spec.paper
    return {
        "model": spec.name, "family": spec.family, "variant": spec.variant, "num_classes": spec.num_classes,
        "input": {"default_size": list(spec.input_size), "size_multiple": spec.size_multiple,
                  "channel_order": spec.channel_order, "mean": list(spec.mean), "std": list(spec.std),
                  "layout": "NCHW float32"},
        "output": {"logits_stride": spec.output_stride, "align_corners": spec.align_corners},
        "params": m["params"], "params_backbone": m["params_backbone"],
        "paper": {"params_m": paper.params_m, "gflops_512": paper.flops_g_512, "miou_ade": paper.miou_ade,
                  "throughput": list(paper.throughput), "source": paper.source},
        "options": spec.options, "source_config": spec.source_config, "notes": spec.notes,
        "classes": list(spec.class_names()[:5]) + ["..."],
    }


def _tensor(t) -> str:
    ranges = "".join(f", {a.name} {a.min}-{a.max} (opt {a.opt})" for a in t.dynamic_axes)
    return f"{t.name} {t.dtype} {t.layout} {t.shape}{ranges}"


def manifest_lines(path: str, m) -> list[tuple[str, str]]:
    p = m.precision
    lines = [("artifact", f"{path} ({m.format}, manifest schema {m.schema_version})"),
             ("model", f"{m.model.name} ({m.model.family}-{m.model.variant}), {m.model.num_classes} classes: "
                       f"{', '.join(m.model.class_names[:6])}{', ...' if m.model.num_classes > 6 else ''}"),
             ("weights", f"{m.weights.source}" + (f" {m.weights.file}" if m.weights.file else "")
              + f", sha256 {m.weights.sha256[:12]}"),
             ("precision", p.mode + (f" ({p.flavour})" if p.flavour else "") + f", I/O {p.io_dtype}")]
    lines += [("input", _tensor(t)) for t in m.inputs] + [("output", _tensor(t)) for t in m.outputs]
    pre = m.preprocessing
    lines += [("profile", m.profile.describe()),
              ("preprocessing", ("in the graph (uint8 BGR NHWC in); " if pre.in_graph else "")
               + f"{pre.channel_order}, mean {pre.mean}, std {pre.std}; {pre.description}"),
              ("export", f"opset {m.export.opset}, {m.export.nodes} nodes, simplifier {m.export.simplifier or 'none'}, "
                         f"options {m.export.model_options or 'none'}"),
              ("validation", "skipped" if m.validation.get("skipped") else
               f"{'passed' if m.validation.get('passed') else 'FAILED'}: {m.validation.get('tolerance', '')}")]
    if m.engine is not None:
        e = m.engine
        lines += [("engine", f"TensorRT {e.tensorrt_version} on {e.gpu_name} (SM {e.compute_capability}), built "
                             f"by {e.builder}; version-compatible {e.version_compatible}, hardware compatibility "
                             f"{e.hardware_compatibility}" + (f", DLA core {e.dla_core}" if e.dla_core is not None
                                                              else ""))]
    return lines


def run(args) -> int:
    target = args.target
    common.check_outputs(args.force, args.json)
    if os.path.exists(target) or os.path.splitext(target)[1].lower() in (".onnx", ".json", ".engine", ".plan"):
        from segdeploy.artifact import read_manifest

        manifest = read_manifest(target)
        data = manifest.to_dict()
        if args.json != "-":
            width = 14
            for key, value in manifest_lines(target, manifest):
                print(f"{key:<{width}}  {value}")
    else:
        data = describe_model(target)
        if args.json != "-":
            width = max(len(k) for k in data)
            for key, value in data.items():
                print(f"{key:<{width}}  {value}")
    written = common.write_json(args.json, data, args.force)
    if written:
        print(f"wrote {written}")
    return 0
