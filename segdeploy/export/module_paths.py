"""The PyTorch module a traced node came from, read from its name.

The exporter (torch.onnx's TorchScript exporter, which segdeploy uses) names every node after the module calls it
was traced in: ``/model/backbone/network.0/network.0.0/mlp/fc1/Conv`` is the Conv of ``fc1`` in the MLP of block
``network.0.0`` of the backbone. Plain Python: the profiler reads these names without loading onnx.
"""
from __future__ import annotations

MODEL_WRAPPER = "model"  # DeployGraph's segmentor attribute: the root of every segdeploy artifact's module paths


def module_path(node_name: str) -> tuple[str, ...] | None:
    """The PyTorch module path a node name records, as levels (``/model/backbone/network.0/network.0.0/mlp/fc1/
    Conv`` -> ``('backbone', 'network.0', '0', 'mlp', 'fc1')``); None for a name without one. The exporter writes a
    child of a level as ``<parent level>.<name>``, and DeployGraph's wrapper level is dropped."""
    if not node_name.startswith("/"):
        return None
    levels = [level for level in node_name.split("/")[1:-1] if level]
    out, previous = [], None
    for level in levels:
        if previous is not None and level.startswith(previous + "."):
            out.append(level[len(previous) + 1:])
        else:
            out.append(level)
        previous = level
    if out and out[0] == MODEL_WRAPPER:
        out = out[1:]
    return tuple(out)


def in_module(node_name: str, module: str) -> bool:
    """Whether the node was traced inside ``module`` (a dotted path, ``decode_head.freqfusions``), or one of its
    children."""
    path = module_path(node_name)
    dotted = ".".join(path) if path else ""
    return bool(path) and (dotted == module or dotted.startswith(module + "."))
