"""segdeploy info MODEL|ARTIFACT: everything the registry knows about one variant, or what an artifact (engine,
ONNX file, manifest) says about itself, read without TensorRT."""
from __future__ import annotations

import json
import os

from segdeploy import tensorrt_host
from segdeploy.artifact import formats, read_manifest
from segdeploy.artifact.engine_header import compatibility_problem
from segdeploy.artifact.onnx_file import graph_edited, load_onnx
from segdeploy.commands import common
from segdeploy.console import print_table
from segdeploy.errors import ArtifactError

EXAMPLES = """examples:
  segdeploy info cgrseg_t
  segdeploy info artifacts/cgrseg_t_512x512.onnx
  segdeploy info model.engine --json -"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("info", help="show one model's metadata, options and paper figures, or an artifact's "
                                           "manifest (x.engine, x.onnx, x.json; no TensorRT needed)",
                              epilog=EXAMPLES, formatter_class=common.HelpFormatter)
    p.add_argument("model", metavar="MODEL|ARTIFACT",
                   help="a registered model name, or the path of an engine, ONNX artifact or manifest")
    common.add_json(p, "the information")
    common.add_force(p, "--json")
    p.set_defaults(func=run)


def describe(name: str) -> dict:
    from segdeploy.models import get_spec
    from segdeploy.models.complexity import measure

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


ARTIFACT_SUFFIXES = (*formats.ARTIFACT_SUFFIXES, formats.MANIFEST_SUFFIX)


def is_artifact(name: str) -> bool:
    return os.path.exists(name) or name.lower().endswith(ARTIFACT_SUFFIXES)


def run(args) -> int:
    common.check_outputs(args.force, args.json, inputs=[args.model] if is_artifact(args.model) else [])
    if is_artifact(args.model):
        return print_artifact(args.model, args.json, args.force)
    info = describe(args.model)
    if args.json:
        written = common.write_json(args.json, info, args.force)
        if written:
            print(f"wrote {written}")
        return 0
    width = max(len(k) for k in info)
    for key, value in info.items():
        print(f"{key:<{width}}  {value if not isinstance(value, (dict, list)) else json.dumps(value)}")
    return 0


# ---------------------------------------------------------------------------------------------------------------
# Artifacts: the manifest, from an engine's header, an ONNX file or a sidecar, without TensorRT


def _shape(tensor) -> str:
    return f"{tensor.name} {tensor.dtype} {tensor.layout} {list(tensor.shape)}"


def artifact_rows(manifest) -> list[list[str]]:
    m = manifest
    names = m.model.class_names
    rows = [["format", m.format], ["model", f"{m.model.name} ({m.model.family} {m.model.variant})"],
            ["classes", f"{m.num_classes}: {', '.join(names[:5])}{', ...' if len(names) > 5 else ''}"],
            ["precision", m.precision.mode + (f" ({m.precision.flavour})" if m.precision.flavour else "")]]
    rows += [[f"input {i}", _shape(t)] for i, t in enumerate(m.inputs)]
    rows += [[f"output {i}", _shape(t) + (f" ({t.kind}, stride {t.stride})" if t.kind else "")]
             for i, t in enumerate(m.outputs)]
    rows.append(["profile", m.profile.describe()])
    p = m.preprocessing
    rows.append(["preprocessing", ("in the graph" if p.in_graph else "outside the graph") +
                 f": {p.channel_order}, mean {p.mean}, std {p.std}, multiple of {p.size_multiple}"])
    rows.append(["weights", f"{m.weights.source} sha256 {m.weights.sha256[:12]}"])
    e = m.engine
    if e is not None:
        rows += [["TensorRT", f"{e.tensorrt_version} ({e.builder}, "
                              f"{'strongly typed' if e.strongly_typed else 'weakly typed'})"],
                 ["GPU", f"{e.gpu_name} (compute capability {e.compute_capability})"],
                 ["compatibility", f"version-compatible {'yes' if e.version_compatible else 'no'}, hardware "
                                   f"{e.hardware_compatibility}"],
                 ["DLA", "no" if e.dla_core is None else f"core {e.dla_core}"
                  + (" with GPU fallback" if e.gpu_fallback else "")],
                 ["ONNX sha256", e.onnx_sha256]]
        for i, profile in enumerate(e.profiles):
            for name, r in profile.items():
                rows.append([f"engine profile {i}", f"{name} {r['min']} .. {r['opt']} .. {r['max']}"])
        rows.append(["runs here", runs_here(e)])
    return rows


def runs_here(engine) -> str:
    """Whether this machine's TensorRT and GPU can load the engine, found without importing TensorRT."""
    install = tensorrt_host.find_tensorrt()
    if not install.installed:
        return "unknown: no TensorRT here"
    gpu = tensorrt_host.gpu_info(0)
    if gpu is None:
        return f"unknown: TensorRT {install.version} but no GPU found"
    problem = compatibility_problem(engine, install.version, gpu.compute_capability)
    return f"no: {problem}" if problem else f"yes (TensorRT {install.version}, {gpu.name})"


def print_artifact(path: str, json_path: str | None = None, force: bool = False) -> int:
    if os.path.isdir(path):
        raise ArtifactError(f"{path} is a folder; info reads an engine, an ONNX artifact or a manifest .json")
    proto = None
    if formats.is_onnx_name(path):
        proto = load_onnx(path)
    manifest = read_manifest(path, proto, required=False)
    if manifest is not None:
        from segdeploy.models.facts import check_manifest

        check_manifest(manifest, path)
    if manifest is None:
        size = os.path.getsize(path)
        if json_path:
            written = common.write_json(json_path, {"path": path, "manifest": None, "bytes": size}, force)
        else:
            written = None
            print(f"{path}: {size / 2**20:.1f} MiB, no segdeploy manifest (a bare TensorRT plan from trtexec, or a "
                  "foreign ONNX file); the runner loads such engines with a warning")
    elif json_path:
        written = common.write_json(json_path, manifest.to_dict(), force)
    else:
        written = None
        rows = artifact_rows(manifest)
        if proto is not None:
            rows.append(["graph", "DIFFERS from the sha256 its manifest records: edited or damaged since export (run "
                                  "segdeploy validate on it)" if graph_edited(proto, manifest) else
                         f"matches its manifest (sha256 {manifest.graph_sha256[:12]})"])
        print_table(path, ["", "value"], rows)
    if written:
        print(f"wrote {written}")
    return 0
