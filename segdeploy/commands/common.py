"""One CLI vocabulary: the arguments several commands share are defined once, here, so a flag means the same thing
everywhere (trtexec/Ultralytics spirit): ``--model NAME``, ``--checkpoint FILE``, ``--size HxW``, ``--batch N``,
``--backend NAME``, ``--threads N``, ``--json FILE``, ``--force``. Progress for steps longer than a moment goes to
stderr, so stdout stays the command's result."""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time

from segdeploy.artifact.manifest_store import sidecar_path
from segdeploy.console import StepLines, log_line, stderr_is_terminal
from segdeploy.errors import InputError
from segdeploy.files.atomic import write_text_atomic
from segdeploy.files.destinations import check_destination
from segdeploy.runtimes.registry import BACKENDS

# Model names are not listed in --help: the registry builds every family (PyTorch) to know them, and --help must
# answer at once; an unknown name is refused with the list.
MODEL_NAMES_HINT = "`segdeploy list` names them, e.g. cgrseg_t"


def add_model(parser, required: bool = True, help_text: str = "registered model") -> None:
    parser.add_argument("--model", required=required, metavar="NAME", help=f"{help_text} ({MODEL_NAMES_HINT})")


def add_checkpoint(parser) -> None:
    parser.add_argument("--checkpoint", metavar="FILE",
                        help="the model's checkpoint (.pth, the authors' layout); default: the deterministic "
                             "golden-recipe weights (not trained: masks show the pipeline works, not the scene)")


def parse_size(text: str | None) -> tuple[int, int] | None:
    """"512" -> (512, 512); "512x1024" -> (512, 1024) (height x width)."""
    if text is None:
        return None
    parts = str(text).lower().replace("×", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise InputError(f"--size takes HxW or N (e.g. 512x1024 or 512), not {text!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) <= 0:
        raise InputError(f"--size takes a positive HxW or N (e.g. 512x1024 or 512), not {text!r}")
    return values[0], values[1]


def add_size(parser, default: str | None = "512x512", help_text: str = "network input size, height x width",
             repeat: bool = False) -> None:
    parser.add_argument("--size", metavar="HxW", default=None if repeat else default, action="append" if repeat
                        else "store", help=f"{help_text} (e.g. 512x1024, or 512 for square)"
                                           + (f"; default {default}" if default else ""))


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {value}")
    return value


def int_range(low: int, high: int | None = None):
    """An argparse type: an integer in [low, high] (no upper bound when ``high`` is None), refused at the parser."""
    span = f"{low} or more" if high is None else f"{low}-{high}"

    def parse(text: str) -> int:
        try:
            value = int(str(text).strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer {span}, not {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected an integer {span}, not {value}")
        return value

    parse.__name__ = f"integer {span}"
    return parse


def finite_float(low: float | None = None, high: float | None = None, *, above: bool = False):
    """An argparse type: a finite number (never nan or inf) in [low, high] (``above``: strictly above ``low``),
    refused at the parser."""
    if low is not None and high is not None:
        span = f"{'above ' if above else ''}{low:g} to {high:g}"
    elif low is not None:
        span = f"{'above' if above else 'at least'} {low:g}"
    else:
        span = f"at most {high:g}" if high is not None else ""

    def parse(text: str) -> float:
        try:
            value = float(str(text).strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number {span}, not {text!r}".replace("  ", " ")) from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number {span}, not {text!r}".replace("  ", " "))
        if (low is not None and (value < low or (above and value == low))) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected a number {span}, not {value:g}")
        return value

    parse.__name__ = f"number {span}".strip()
    return parse


def add_threads(parser) -> None:
    parser.add_argument("--threads", type=positive_int, metavar="N", help="CPU threads (default: all usable cores)")


def add_backend(parser, help_text: str, multiple: bool = False) -> None:
    names = ", ".join(BACKENDS)
    parser.add_argument("--backend", metavar="NAME[,NAME...]" if multiple else "NAME",
                        help=f"{help_text} ({names})")


def add_json(parser, what: str = "the full report") -> None:
    parser.add_argument("--json", metavar="FILE", help=f"write {what} as JSON to FILE ('-' for stdout)")


def add_force(parser, what: str = "existing output files") -> None:
    parser.add_argument("--force", action="store_true", help=f"overwrite {what}")


def names(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def check_outputs(force: bool, *paths, inputs=()) -> None:
    """Refuse now, before the work, any output that exists (without --force) or cannot be written, and any output
    that is one of the command's ``inputs`` or an input's manifest sidecar, even with --force: ``validate x.onnx
    --json x.onnx --force`` must not replace the artifact it validates with its report."""
    import os

    protected = {}
    for source in inputs:
        if source:
            for path in (source, sidecar_path(source)):
                if os.path.exists(path):
                    protected[os.path.realpath(path)] = source
    for path in paths:
        if path and path != "-":
            if os.path.realpath(path) in protected:
                source = protected[os.path.realpath(path)]
                what = "it" if os.path.realpath(source) == os.path.realpath(path) else "its manifest"
                raise InputError(f"{path} is an input of this command ({source}); writing there would replace "
                                 f"{what}: choose another output path")
            check_destination(path, force)


def write_json(path: str | None, data, force: bool) -> str | None:
    """Write ``data`` as JSON to ``path`` ('-': stdout); returns what was written, for the 'wrote' line."""
    if not path:
        return None
    text = json.dumps(data, indent=2, default=str) + "\n"
    if path == "-":
        sys.stdout.write(text)
        return None

    return write_text_atomic(path, text, force=force)


def progress_text(text: str, fraction: float | None = None, width: int = 24) -> str:
    """``text`` with a bar when the step knows how far it is: 'calibrating 12/32 [#########...............] 38%'."""
    if fraction is None:
        return text
    filled = int(round(max(0.0, min(1.0, fraction)) * width))
    return f"{text} [{'#' * filled}{'.' * (width - filled)}] {fraction:.0%}"


@contextlib.contextmanager
def status(message: str):
    """The progress of a step on stderr: a spinner on a terminal, timestamped lines elsewhere (logs, CI, pipes; see
    console.StepLines); yields a callback that updates its text, with a progress bar when given a fraction:
    ``say("tracing")``, ``say("calibrating 3/32", 3 / 32)``."""
    try:
        from rich.console import Console
    except ImportError:
        Console = None
    if Console is None or not stderr_is_terminal():
        log_line(message)
        yield StepLines(message)
        return
    console = Console(stderr=True)
    started = time.monotonic()

    def say(text, fraction=None, *_):
        elapsed = time.monotonic() - started
        spinner.update(progress_text(text, fraction) + (f"  {elapsed:.0f} s" if fraction is not None else ""))

    with console.status(message) as spinner:
        yield say


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples in a command's epilog as written."""
