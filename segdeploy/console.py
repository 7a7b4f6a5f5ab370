"""Terminal output: rich tables when rich is installed, plain aligned text otherwise; the progress of long steps."""
from __future__ import annotations

import sys
import time

# Where stdout is not a terminal (make, CI logs, pipes) rich would wrap tables at 80 columns; a log is read later
# and scrolled sideways, so give tables room instead of cutting model and backend names.
LOG_WIDTH = 200


def print_table(title: str | None, columns: list[str], rows: list[list], file=None) -> None:
    file = file or sys.stdout
    try:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table
    except ImportError:
        Console = None
    if Console is not None:
        console = Console(file=file)
        if not console.is_terminal:
            console = Console(file=file, width=LOG_WIDTH)
        table = Table(title=escape(title) if title else None)
        for i, col in enumerate(columns):
            # the first columns name the row (model, backend): never fold them
            table.add_column(escape(col), justify="left" if i == 0 else "right", no_wrap=i < 2)
        for row in rows:
            table.add_row(*[escape(str(c)) for c in row])  # cells are data, never markup ("[openvino]")
        console.print(table)
        return
    cells = [columns] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    if title:
        print(title, file=file)
    for r in cells:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))), file=file)


# ----------------------------------------------------------------------------------------------------------------
# Progress of long steps, on stderr (stdout stays the command's result): live on a terminal; in logs, CI and pipes,
# timestamped lines, so that a step of a minute is never a minute of silence.

LINE_EVERY = 0.1  # a counted step writes a line each time it passes another tenth
SECONDS_EVERY = 10.0  # a step that cannot say how far it is writes a line this often


def stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def log_line(text: str) -> None:
    """One progress line for a log: 'HH:MM:SS text', on stderr."""
    print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


class StepLines:
    """``say(text, fraction=None)`` for logs: a line for each new step; a step that knows how far it is (a fraction)
    at its start, every tenth and at its end."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.last_text = None
        self.next_fraction = None

    def __call__(self, text: str, fraction: float | None = None, *_) -> None:
        if fraction is None:
            self.next_fraction = None
            if text != self.last_text:
                self.last_text = text
                log_line(f"{self.prefix}: {text}")
            return
        if self.next_fraction is None or fraction < self.next_fraction - LINE_EVERY:  # a new counted step
            self.next_fraction = 0.0
        if fraction >= self.next_fraction or fraction >= 1.0:
            self.last_text = text
            log_line(f"{self.prefix}: {text} ({fraction:.0%})")
            while self.next_fraction <= fraction:
                self.next_fraction += LINE_EVERY
            if fraction >= 1.0:
                self.next_fraction = None


class ProgressBar:
    """A counted loop (images, frames): a live bar on a terminal; elsewhere a timestamped line every tenth of the
    total (every 10 s when the total is unknown) and at the end. ``update(done, note)``; ``note`` is shown beside
    the count (a rate, a running score)."""

    def __init__(self, label: str, total: int | None, unit: str = "images"):
        self.label, self.total, self.unit = label, total, unit
        self.live = None
        self._next = LINE_EVERY
        self._last_line = time.monotonic()
        self._done = 0
        if stderr_is_terminal():
            try:
                from rich.console import Console
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            except ImportError:
                return
            self.live = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[note]}"), TimeElapsedColumn(),
                                 console=Console(stderr=True), transient=True)
            self.task = self.live.add_task(label, total=total, note="")
            self.live.start()

    def update(self, done: int, note: str = "") -> None:
        self._done = done
        if self.live is not None:
            self.live.update(self.task, completed=done, note=note)
            return
        now = time.monotonic()
        if self.total:
            due = done / self.total >= self._next or done == self.total
            while self._next <= done / self.total:
                self._next += LINE_EVERY
        else:
            due = now - self._last_line >= SECONDS_EVERY
        if due:
            self._last_line = now
            count = f"{done}/{self.total}" if self.total else f"{done}"
            log_line(f"{self.label}: {count} {self.unit}" + (f", {note}" if note else ""))

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
