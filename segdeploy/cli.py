"""The segdeploy command line: only dispatch. Each command lives in segdeploy/commands/<name>.py, whose
``add_parser(subparsers)`` sets ``func``; ``func(args)`` returns the exit code. User errors (SegdeployError) are
one line and exit 2; argparse's own errors too."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from segdeploy import __version__
from segdeploy.errors import SegdeployError

COMMANDS = ("list", "info", "doctor", "export", "validate", "eval", "predict", "bench", "dataset", "fixtures",
            "lint_trt", "build_engine")


DESCRIPTION = ("Export, validate, evaluate and benchmark efficient semantic-segmentation models (CGRSeg, SegNeXt, "
               "LRFormer, OffSeg) as verified ONNX artifacts.")
EPILOG = """examples:
  segdeploy list
  segdeploy export --model cgrseg_t --fmt onnx --size 512x512
  segdeploy validate artifacts/cgrseg_t_512x512.onnx --images tests/data/images
  segdeploy bench --model cgrseg_t --backend torch,onnxruntime
  segdeploy predict --model cgrseg_t --source photo.jpg --output mask.png

'segdeploy COMMAND --help' shows a command's options and examples."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors as one line and exit 2 (its default prints the whole usage first)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    from segdeploy.commands.common import HelpFormatter

    parser = _Parser(prog="segdeploy", description=DESCRIPTION, epilog=EPILOG, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"segdeploy {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(f"segdeploy.commands.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # usage errors (2) and --help/--version (0) end here, as an exit code
        return exc.code if isinstance(exc.code, int) else 0
    try:
        return int(args.func(args) or 0)
    except SegdeployError as exc:
        print(f"segdeploy {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into head & co.
        return 0
    except KeyboardInterrupt:
        print(f"segdeploy {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line by default, the traceback on request
        if os.environ.get("SEGDEPLOY_DEBUG"):
            raise
        print(f"segdeploy {args.command}: internal error: {type(exc).__name__}: {one_line(exc)} "
              "(set SEGDEPLOY_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


def one_line(exc: BaseException, limit: int = 400) -> str:
    """An error message as one line without terminal colour codes, however the library below phrased it."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", str(exc))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


if __name__ == "__main__":
    raise SystemExit(main())
