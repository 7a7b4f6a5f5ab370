"""Per-layer profiles folded onto the PyTorch module tree: scopes.py (from a backend's layer to its module),
flops.py (FLOPs per ONNX node), fold.py (module rows that add up), run.py (the profile of one artifact on one
backend), report.py (tables, Markdown, plot)."""
