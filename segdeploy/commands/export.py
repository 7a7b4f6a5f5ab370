"""segdeploy export: a registered model -> a verified, self-describing artifact (ONNX + manifest), and from it a
TensorRT engine (or a build bundle for the target) or a Triton model repository."""
from __future__ import annotations

from segdeploy import flavours
from segdeploy.artifact.formats import FORMATS, require_exportable
from segdeploy.commands import common
from segdeploy.commands.build_engine import print_engine_result
from segdeploy.commands.export_options import (
    accuracy_evaluator,
    add_engine_arguments,
    add_precision_arguments,
    export_request,
)
from segdeploy.commands.export_report import precision_line, print_summary
from segdeploy.export.run import Report, run_export
from segdeploy.export.trace import DEFAULT_OPSET, MAX_OPSET
from segdeploy.runtimes.fastest import export_advice

EXAMPLES = """examples:
  segdeploy export --model cgrseg_t                                  # artifacts/cgrseg_t_512x512.onnx
  segdeploy export --model segnext_t --size 512x1024 --dynamic        # batch 1-4, H and W 256-1024
  segdeploy export --model offseg_t --outputs mask --preprocess       # uint8 BGR image in, uint8 labels out
  segdeploy export --model cgrseg_t --checkpoint cgrseg_t_ade.pth --output cgrseg_t.onnx --force
  segdeploy export --model cgrseg_t --fmt trt --dynamic               # engine here, else a bundle for the target
  segdeploy export --model cgrseg_t --precision fp16                  # float16 with float32 islands
  segdeploy export --model cgrseg_t --checkpoint ck.pth --precision int8 --calib data/ --eval-data data/
                                                                      # INT8 for ONNX Runtime (cpu flavour)
  segdeploy export --model cgrseg_t --checkpoint ck.pth --precision int8 --calib data/ --target openvino
                                                                      # INT8 for OpenVINO (symmetric, float32 elsewhere)
  segdeploy export --model cgrseg_t --checkpoint ck.pth --precision int8 --calib data/ --eval-data data/ \\
      --max-drop 1                                                    # mixed precision: at most 1 mIoU point lost
  segdeploy export --model cgrseg_t --checkpoint ck.pth --fmt trt --precision int8 --calib data/
                                                                      # TensorRT Q/DQ, float16 elsewhere
  segdeploy export --model cgrseg_t --fmt triton --output repo/       # Triton model repository (ONNX Runtime)
  segdeploy export --fmt trt --from-onnx artifacts/cgrseg_t_512x512.onnx

An export whose artifact exists already (the same model, weights, size and options, checked against its manifest) is
reused, so --fmt trt and --fmt triton after an ONNX export build on that ONNX; --force exports again."""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("export", help="export a model to a verified, self-describing artifact",
                              description="Trace a registered model to ONNX (standard ops only), simplify it, verify "
                                          "it against PyTorch and write it with its manifest (embedded and as a "
                                          "JSON sidecar); --fmt trt and triton build on that artifact. Nothing is "
                                          "written unless every step succeeds. Exit 0: written or reused; 1: the "
                                          "graph is out of tolerance (nothing written); 2: bad input.",
                              epilog=EXAMPLES, formatter_class=common.HelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    common.add_model(what, required=False, help_text="registered model")
    what.add_argument("--from-onnx", metavar="FILE",
                      help="--fmt trt/triton: build from this ONNX artifact (its manifest says the model, size and "
                           "precision) instead of exporting one")
    p.add_argument("--fmt", default="onnx", choices=sorted(FORMATS), help="artifact format (default onnx)")
    common.add_checkpoint(p)
    common.add_size(p, help_text="traced input size, height x width")
    p.add_argument("--batch", type=common.positive_int, default=1, help="traced batch size (default 1)")
    p.add_argument("--dynamic", action="store_true",
                   help="dynamic batch (1-4) and H, W (multiples of 32, 256-1024), traced at --batch/--size")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset, 17-{MAX_OPSET} (default {DEFAULT_OPSET}: the newest TensorRT 10 reads; GELU "
                        "stays one node)")
    p.add_argument("--no-simplify", dest="simplify", action="store_false", help="skip the simplifier (onnxslim)")
    p.add_argument("--outputs", default="logits", choices=("logits", "mask"),
                   help="logits: class scores at the head's stride; mask: labels at the input size, argmax in the "
                        "graph (uint8 up to 255 classes)")
    p.add_argument("--preprocess", action="store_true",
                   help="the graph takes uint8 NHWC BGR images (OpenCV's layout) and normalises them itself")
    p.add_argument("--output", metavar="PATH",
                   help="onnx: the artifact (default artifacts/<model>_<H>x<W>[_dynamic][_mask][_uint8].onnx); trt: "
                        "the engine (the ONNX goes beside it); triton: the repository folder (default "
                        "artifacts/triton)")
    p.add_argument("--force", action="store_true",
                   help="export (and build) again even when the artifact exists, overwriting it and its sidecar (and "
                        "the engine or repository); without it an existing artifact is reused when it is this export "
                        "and refused when it is another")
    p.add_argument("--no-validate", dest="validate", action="store_false",
                   help="skip the comparison with PyTorch (the manifest then says so, and every command that reads "
                        "the artifact warns)")
    common.add_threads(p)
    add_precision_arguments(p)
    add_engine_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    require_exportable(args.fmt)
    request = export_request(args)
    run_export(request, verify=verifier(args.threads) if args.validate and not args.from_onnx else None,
               make_evaluator=lambda: accuracy_evaluator(args, request.height, request.width),
               report=Printer(request.fmt, request.model, args.threads))
    return 0


def verifier(threads):
    """export's comparison of the graph with PyTorch, at --threads."""
    from segdeploy.evaluation.validate import verify_graph

    def verify(graph, proto, shapes, **options):
        return verify_graph(graph, proto, shapes, threads=threads, **options)

    return verify


class Printer(Report):
    """What export prints as it goes: progress on stderr, the artifact's summary, the engine's table, lines."""

    def __init__(self, fmt: str, model: str | None, threads: int | None):
        self.fmt, self.model, self.threads = fmt, model, threads

    def status(self, message: str):
        return common.status(message)

    def line(self, text: str) -> None:
        print(text)

    def source(self, path: str, manifest) -> None:
        print(f"building on {path}: {manifest.model.name}, {manifest.profile.describe()}, "
              f"{precision_line(manifest.precision)}")

    def onnx(self, path: str, manifest) -> None:
        print_summary(path, manifest)
        if self.fmt == "onnx":
            p = manifest.precision
            for line in export_advice(self.model, flavours.label(p.mode, p.flavour), self.threads):
                print(line)

    def engine(self, result) -> None:
        print_engine_result(result)
