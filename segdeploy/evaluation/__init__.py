"""Judging artifacts: compare.py (comparators, tolerances per precision), validate.py (an artifact against its
PyTorch reference), locate.py (the first diverging node), feeds.py, reference.py, and bench/ (speed and memory)."""
