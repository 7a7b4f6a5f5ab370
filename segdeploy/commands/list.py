"""segdeploy list: the registered models with measured parameters next to the papers' figures; GMACs on request
(counting them runs a forward pass of every model, about a minute for all 14; the counts are cached)."""
from __future__ import annotations

from segdeploy.commands import common
from segdeploy.console import print_table


def _fmt(value, spec="{:.1f}"):
    return "-" if value is None else spec.format(value)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("list", help="list models with params (and GMACs with --flops), measured vs paper",
                              epilog="examples:\n  segdeploy list\n  segdeploy list --family segnext --flops --size "
                                     "512x1024\n  segdeploy list --json models.json",
                              formatter_class=common.HelpFormatter)
    p.add_argument("--family", help="only this family (an unknown one is answered with the registered families)")
    p.add_argument("--flops", action="store_true", help="also count GMACs at --size (slow the first time, then cached)")
    common.add_size(p, help_text="input size for --flops")
    common.add_json(p, "the table")
    common.add_force(p, "--json")
    p.set_defaults(func=run)


def run(args) -> int:
    from segdeploy.models import get_spec, list_models
    from segdeploy.models.complexity import measure

    common.check_outputs(args.force, args.json)
    height, width = common.parse_size(args.size)
    names = list_models(args.family)
    if not names:
        families = dict.fromkeys(get_spec(name).family for name in list_models())
        raise common.InputError(f"no family {args.family!r}; families: {', '.join(families)}")
    rows, records = [], []
    with common.status("counting GMACs" if args.flops else "measuring parameters") as say:
        for name in names:
            say(f"{'counting GMACs of' if args.flops else 'measuring'} {name}")
            spec = get_spec(name)
            paper = spec.paper
            m = measure(name, height, width, with_macs=args.flops, cached=True)
            records.append({"model": name, "family": spec.family, "params_m": m["params"] / 1e6,
                            "params_m_paper": paper.params_m, "gmacs": m["gmacs"],
                            "gflops_paper": paper.flops_g_512, "miou_paper": paper.miou_ade,
                            "input": [height, width]})
            rows.append([name, spec.family, f"{m['params'] / 1e6:.2f}", _fmt(paper.params_m), _fmt(m["gmacs"]),
                         _fmt(paper.flops_g_512), _fmt(paper.miou_ade)])
    title = "segdeploy models" + (f" (GMACs at {height}x{width}: conv/linear/matmul MACs; papers count conv/linear "
                                  "MACs as 'GFLOPs' at 512x512)" if args.flops else " (GMACs: pass --flops)")
    print_table(title, ["model", "family", "params M", "paper M", "GMACs", "paper GFLOPs", "paper mIoU"], rows)
    written = common.write_json(args.json, records, args.force)
    if written:
        print(f"wrote {written}")
    return 0
