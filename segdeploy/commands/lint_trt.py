"""segdeploy lint-trt ONNX: check an ONNX graph against a TensorRT release's parser limits, on the CPU."""
from __future__ import annotations

import json

from segdeploy.commands import common
from segdeploy.console import print_table

EXAMPLES = """examples:
  segdeploy lint-trt artifacts/cgrseg_t_512x512.onnx                # against JetPack 6's TensorRT 10.3
  segdeploy lint-trt model.onnx --trt-version 11 --json findings.json"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("lint-trt", help="check an ONNX file against TensorRT's ONNX parser limits (no GPU "
                                               "needed); exit 1 when a node would fail to build",
                              epilog=EXAMPLES, formatter_class=common.HelpFormatter)
    p.add_argument("onnx", help="any ONNX file (segdeploy's or not)")
    p.add_argument("--trt-version", default="10.3",
                   help="the TensorRT release to check against: 10.3 (JetPack 6), 10.x or 11[.y] (default 10.3)")
    common.add_json(p, "the findings")
    common.add_force(p, "--json")
    p.set_defaults(func=run)


def run(args) -> int:
    from segdeploy.export.tensorrt.lint import errors, findings_json, lint_file

    common.check_outputs(args.force, args.json, inputs=[args.onnx])
    findings = lint_file(args.onnx, args.trt_version)
    if args.json:
        written = common.write_json(args.json, json.loads(findings_json(findings)), args.force)
        if written:
            print(f"wrote {written}")
    elif findings:
        print_table(f"{args.onnx} for TensorRT {args.trt_version}", ["severity", "node", "op", "rule", "finding"],
                    [[f.severity, f.node, f.op, f.rule, f.message] for f in findings])
    n_errors = len(errors(findings))
    n_warnings = len(findings) - n_errors
    if args.json != "-":
        print(f"{n_errors} error{'s' * (n_errors != 1)}, {n_warnings} warning{'s' * (n_warnings != 1)} "
              f"(TensorRT {args.trt_version})")
    return 1 if n_errors else 0
