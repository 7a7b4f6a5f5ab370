"""Export as the CLI does (verified against PyTorch), for tests."""
from __future__ import annotations

from segdeploy.evaluation.validate import verify_graph
from segdeploy.export.onnx import export_onnx

CI_SIZE = (256, 320)


def verifier(threads: int = 2):
    return lambda graph, proto, shapes, **options: verify_graph(graph, proto, shapes, threads=threads, **options)


def export(name: str, path, *, verify: bool = True, **options):
    return export_onnx(name, path, verify=verifier() if verify else None, **options)
