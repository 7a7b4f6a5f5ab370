"""segdeploy info MODEL: everything the registry knows about one variant."""
from __future__ import annotations

import json

from segdeploy.models import get_spec
from segdeploy.models.complexity import measure


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("info", help="show one model's metadata, options and paper figures")
    p.add_argument("model")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=run)


def describe(name: str) -> dict:
    spec = get_spec(name)
    m = measure(name)
    paper = spec.paper
    return {
        "model": spec.name, "family": spec.family, "variant": spec.variant, "num_classes": spec.num_classes,
        "input": {"default_size": list(spec.input_size), "size_multiple": spec.size_multiple,
                  "channel_order": spec.channel_order, "mean": list(spec.mean), "std": list(spec.std),
                  "layout": "NCHW float32"},
        "output": {"logits_stride": spec.output_stride, "align_corners": spec.align_corners},
        "params": m["params"], "params_backbone": m["params_backbone"], "gmacs_512": round(m["gmacs"], 3),
        "paper": {"params_m": paper.params_m, "gflops_512": paper.flops_g_512, "miou_ade": paper.miou_ade,
                  "throughput": list(paper.throughput), "source": paper.source},
        "options": spec.options, "source_config": spec.source_config, "notes": spec.notes,
        "classes": list(spec.class_names()[:5]) + ["..."],
    }


def run(args) -> int:
    info = describe(args.model)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    width = max(len(k) for k in info)
    for key, value in info.items():
        print(f"{key:<{width}}  {value if not isinstance(value, (dict, list)) else json.dumps(value)}")
    return 0
