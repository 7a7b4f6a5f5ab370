"""How a bench row is named in tables and plots."""
from __future__ import annotations

import os


def row_names(row: dict) -> list[str]:
    backend = row["backend"] + (f" {row['layout']}" if row["layout"] != "nchw" else "") + \
        (" compiled" if row.get("compile") else "") + (" cuda-graphs" if row.get("cuda_graphs") else "") + \
        (f" {row['precision']}" if row["precision"] != "fp32" else "") + \
        (f" x{row['streams']} streams" if (row.get("streams") or 1) > 1 else "")
    return [row.get("model") or os.path.basename(row.get("artifact") or "-"), backend,
            f"{row['batch']}" + (" max" if row.get("max_batch") else "")]
