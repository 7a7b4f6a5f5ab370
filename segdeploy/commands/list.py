"""segdeploy list: the registered models, measured params/GMACs next to the papers' figures."""
from __future__ import annotations

import json

from segdeploy.console import print_table
from segdeploy.models import get_spec, list_models
from segdeploy.models.complexity import measure


def _fmt(value, spec="{:.1f}"):
    return "-" if value is None else spec.format(value)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("list", help="list models with params and GFLOPs, measured vs paper")
    p.add_argument("--family", help="only this family (segnext, cgrseg, lrformer, offseg)")
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--no-flops", action="store_true", help="skip the MAC count (faster)")
    p.add_argument("--json", metavar="FILE", help="also write the table as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    names = list_models(args.family)
    rows, records = [], []
    for name in names:
        spec = get_spec(name)
        paper = spec.paper
        m = measure(name, args.height, args.width, with_macs=not args.no_flops)
        records.append({"model": name, "family": spec.family, "params_m": m["params"] / 1e6,
                        "params_m_paper": paper.params_m, "gmacs": m["gmacs"], "gflops_paper": paper.flops_g_512,
                        "miou_paper": paper.miou_ade, "input": [args.height, args.width]})
        rows.append([name, spec.family, f"{m['params'] / 1e6:.2f}", _fmt(paper.params_m), _fmt(m["gmacs"]),
                     _fmt(paper.flops_g_512), _fmt(paper.miou_ade)])
    print_table(f"segdeploy models (GMACs at {args.height}x{args.width}: conv/linear/matmul MACs; papers count "
                "conv/linear MACs as 'GFLOPs')",
                ["model", "family", "params M", "paper M", "GMACs", "paper GFLOPs", "paper mIoU"], rows)
    if args.json:
        from segdeploy.io import write_text_atomic
        write_text_atomic(args.json, json.dumps(records, indent=2) + "\n", force=True)
    return 0
