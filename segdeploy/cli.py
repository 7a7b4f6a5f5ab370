"""The segdeploy command line: only dispatch. Each command lives in segdeploy/commands/<name>.py, whose
``add_parser(subparsers)`` sets ``func``; ``func(args)`` returns the exit code. User errors (SegdeployError) are
one line and exit 2 (1 where a graph is out of tolerance); argparse's own errors too."""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys

from segdeploy import __version__
from segdeploy.commands.common import HelpFormatter
from segdeploy.errors import SegdeployError

COMMANDS = ("list", "info", "doctor", "export", "validate", "eval", "predict", "bench", "profile", "dataset",
            "fixtures", "lint_trt", "build_engine")


DESCRIPTION = ("Export, validate, evaluate and benchmark efficient semantic-segmentation models (CGRSeg, SegNeXt, "
               "LRFormer, OffSeg) as verified ONNX artifacts.")
EPILOG = """examples:
  segdeploy list
  segdeploy export --model cgrseg_t --fmt onnx --size 512x512
  segdeploy validate artifacts/cgrseg_t_512x512.onnx --images tests/data/images
  segdeploy export --model cgrseg_t --fmt trt --size 512x512      # builds on (reuses) that ONNX export
  segdeploy fixtures --quick                                       # trained weights to try INT8 and eval on
  segdeploy bench --model cgrseg_t --backend torch,onnxruntime
  segdeploy predict --model cgrseg_t --source photo.jpg --output mask.png

'segdeploy COMMAND --help' shows a command's options and examples."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors as one line and exit 2 (its default prints the whole usage first)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="segdeploy", description=DESCRIPTION, epilog=EPILOG, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"segdeploy {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(f"segdeploy.commands.{name}").add_parser(subparsers)
    return parser


class Terminated(BaseException):
    """SIGTERM, raised where the process is, so that writers roll back and clean up as they do on Ctrl-C (Python's
    default for SIGTERM is to die on the spot, leaving whatever was half done)."""


@contextlib.contextmanager
def _terminate_cleanly():
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _warnings_as_notes(command: str):
    """Library warnings (torch, ONNX, OpenCV bindings) are not the user's business: they are dropped, unless
    SEGDEPLOY_DEBUG is set; segdeploy's own warnings are one line each on stderr, each said once per command (an
    artifact read by two layers warns once)."""
    import warnings

    said = set()

    def show(message, category, filename, lineno, file=None, line=None):
        if os.environ.get("SEGDEPLOY_DEBUG"):
            sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))
        elif os.sep + "segdeploy" + os.sep in filename and one_line(message) not in said:
            said.add(one_line(message))
            print(f"segdeploy {command}: warning: {one_line(message)}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show
        yield


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # usage errors (one line, see _Parser), --help, --version: their code, returned
        return exc.code if isinstance(exc.code, int) else 2
    try:
        with _terminate_cleanly(), _warnings_as_notes(args.command):
            return int(args.func(args) or 0)
    except SegdeployError as exc:  # bad input: 2; out of tolerance (ToleranceError): 1
        print(f"segdeploy {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # output piped into head & co.
        return 0
    except KeyboardInterrupt:
        print(f"segdeploy {args.command}: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print(f"segdeploy {args.command}: terminated", file=sys.stderr)
        return 143
    except MemoryError:
        print(f"segdeploy {args.command}: error: out of memory (the input is larger than this machine can take; "
              "try a smaller size or batch)", file=sys.stderr)
        return 2
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
