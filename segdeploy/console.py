"""Terminal output: rich tables when rich is installed, plain aligned text otherwise."""
from __future__ import annotations

import sys

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
