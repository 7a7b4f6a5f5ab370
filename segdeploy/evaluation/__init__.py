"""Evaluation: segmentation metrics and dataset evaluation written once against the runner contract."""
