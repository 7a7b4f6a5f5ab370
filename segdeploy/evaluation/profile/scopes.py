"""From a backend's layer back to the PyTorch module that made it.

The exporter (torch.onnx's TorchScript exporter, which segdeploy uses) names every node after the module calls it
was traced in: ``/model/backbone/network.0/network.0.0/mlp/fc1/Conv`` is the Conv of ``fc1`` in the MLP of block
``network.0.0`` of the backbone. Each level is the attribute path of the called module relative to the module
that called it (a Sequential's child ``0`` inside ``network.0`` is written ``network.0.0``); a module called twice
in one forward gets ``_1``, ``_2`` on its later calls. onnxslim keeps those names, and so do the runtimes: ONNX
Runtime appends to the node's last component (``Conv_output_0_nchwc``), OpenVINO to the path (``Conv/WithoutBiases``)
and lists the nodes it fused into a layer, TensorRT joins fused node names with " + ".

A layer is placed in the **scope** (the module path, a tuple of levels, ``()`` being the whole graph) that every
node it computes shares; a layer the backend added itself (a layout reorder, a copy) and that names no node is
placed beside its nearest neighbour that is placed. Every layer lands in exactly one scope.
"""
from __future__ import annotations

from collections.abc import Iterable

from segdeploy.export.module_paths import module_path
from segdeploy.runtimes.base import LayerTime

Scope = tuple[str, ...]
NEIGHBOUR_HOPS = 8


def scope_of(node_name: str) -> Scope | None:
    """The module scope a node name records, None for a name without one (``ReorderInput_token_12``)."""
    return module_path(node_name)


def scope_text(scope: Scope) -> str:
    return ".".join(scope) if scope else "(graph)"


def common_scope(scopes: Iterable[Scope]) -> Scope | None:
    scopes = list(scopes)
    if not scopes:
        return None
    first = scopes[0]
    length = 0
    while length < len(first) and all(len(s) > length and s[length] == first[length] for s in scopes):
        length += 1
    return first[:length]


class ScopeResolver:
    """Places layers in module scopes, knowing the node names of the artifact's ONNX graph (an empty set for a
    foreign graph or an engine alone: names are then read as they are)."""

    def __init__(self, graph_node_names: Iterable[str] = ()):
        self.known = {name: scope_of(name) for name in graph_node_names}

    def resolve(self, name: str) -> Scope | None:
        """The scope of one name a backend reports: a graph node's, a node's with the backend's suffix on its path
        (``.../Conv/WithoutBiases``), one with a prefix (``input_abcd_acdb_/model/...``), or read from the name."""
        if name in self.known:
            return self.known[name]
        if self.known:
            for start in [0] + [i for i, c in enumerate(name) if c == "/" and i > 0]:
                candidate = name[start:]
                while candidate:
                    if candidate in self.known:
                        return self.known[candidate]
                    candidate = candidate.rpartition("/")[0]
        if name.startswith("/"):
            return scope_of(name)
        return None

    def own_scope(self, layer: LayerTime) -> Scope | None:
        """The scope shared by the nodes a layer names, None when it names none."""
        return common_scope(s for s in (self.resolve(name) for name in layer.sources or (layer.name,))
                            if s is not None)

    def place(self, layers: list[LayerTime]) -> list[tuple[Scope, str]]:
        """(scope, how it was found) for every layer, in order: "own" (the nodes it computes), "neighbour" (a layer
        or node next to it, up to NEIGHBOUR_HOPS away) or "unplaced" (the whole graph)."""
        own = {layer.name: self.own_scope(layer) for layer in layers}
        by_name = {layer.name: layer for layer in layers}
        placed = []
        for layer in layers:
            if own[layer.name] is not None:
                placed.append((own[layer.name], "own"))
                continue
            found = self._nearest(layer, own, by_name)
            placed.append((found, "neighbour") if found is not None else ((), "unplaced"))
        return placed

    def _nearest(self, layer: LayerTime, own: dict, by_name: dict) -> Scope | None:
        seen, frontier = {layer.name}, list(layer.neighbours)
        for _ in range(NEIGHBOUR_HOPS):
            following = []
            for name in frontier:
                if name in seen:
                    continue
                seen.add(name)
                scope = own.get(name) if name in own else self.resolve(name)
                if scope is not None:
                    return scope
                if name in by_name:
                    following.extend(by_name[name].neighbours)
            if not following:
                return None
            frontier = following
        return None
