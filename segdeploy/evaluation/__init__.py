"""Judging artifacts and models: tolerances.py (per precision), compare.py (comparators), validate.py (an artifact
against its PyTorch reference), locate.py (the first diverging node), metrics.py and eval.py (mIoU on labelled
datasets), segment.py (image in, mask out, on any backend), feeds.py, reference.py, and bench/ (speed and memory)."""
