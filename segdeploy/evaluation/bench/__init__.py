"""Benchmarks written once against the runner contract. request.py (what to run), run.py (rows, the max-batch
sweep), protocol.py (timing), stats.py, memory.py, peak.py (the FP32 peak), papers.py (the papers' figures),
reports.py and plot.py (JSON, CSV, Markdown, tables, plot)."""
