"""Judging artifacts and models: compare.py (comparators, tolerances per precision), validate.py (an artifact against
its PyTorch reference), locate.py (the first diverging node), metrics.py and eval.py (mIoU on labelled datasets),
segment.py (image in, mask out, on any backend), feeds.py, reference.py, and bench/ (speed and memory)."""
