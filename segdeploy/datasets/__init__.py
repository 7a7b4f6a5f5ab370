"""Labelled datasets: the folder layouts segdeploy evaluates on (ADE20K, Cityscapes, image/mask pairs) and the
synthetic texture dataset it makes itself. Core layer: imports nothing of models, export or runtimes."""
from segdeploy.datasets.layouts import LAYOUTS, Dataset, Sample, open_dataset

__all__ = ["LAYOUTS", "Dataset", "Sample", "open_dataset"]
