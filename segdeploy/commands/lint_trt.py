"""segdeploy lint-trt ONNX: check an ONNX graph against a TensorRT release's parser limits, on the CPU."""
from __future__ import annotations

from segdeploy.console import print_table


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("lint-trt", help="check an ONNX file against TensorRT's ONNX parser limits (no GPU "
                                               "needed); exit 1 when a node would fail to build")
    p.add_argument("onnx", help="any ONNX file (segdeploy's or not)")
    p.add_argument("--trt-version", default="10.3",
                   help="the TensorRT release to check against: 10.3 (JetPack 6), 10.x or 11[.y] (default 10.3)")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from segdeploy.export.tensorrt.lint import errors, findings_json, lint_file

    findings = lint_file(args.onnx, args.trt_version)
    if args.json:
        print(findings_json(findings))
    elif findings:
        print_table(f"{args.onnx} for TensorRT {args.trt_version}", ["severity", "node", "op", "rule", "finding"],
                    [[f.severity, f.node, f.op, f.rule, f.message] for f in findings])
    n_errors = len(errors(findings))
    n_warnings = len(findings) - n_errors
    if not args.json:
        print(f"{n_errors} error{'s' * (n_errors != 1)}, {n_warnings} warning{'s' * (n_warnings != 1)} "
              f"(TensorRT {args.trt_version})")
    return 1 if n_errors else 0
