"""Command line: parse, call the library, print. Each subcommand lives in segdeploy/commands/<name>.py and exposes
``add_parser(subparsers)``, which sets ``func`` on its parser; ``func(args)`` returns the exit code."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from segdeploy import __version__
from segdeploy.errors import SegdeployError

COMMANDS = ("list", "info", "predict", "export", "validate", "bench", "eval", "dataset", "fixtures", "doctor")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segdeploy", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"segdeploy {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"segdeploy.commands.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SegdeployError as exc:
        print(f"segdeploy {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into head & co.
        return 0
    except KeyboardInterrupt:
        print(f"segdeploy {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line by default, the traceback on request
        if os.environ.get("SEGDEPLOY_DEBUG"):
            raise
        print(f"segdeploy {args.command}: internal error: {type(exc).__name__}: {exc} "
              "(set SEGDEPLOY_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
