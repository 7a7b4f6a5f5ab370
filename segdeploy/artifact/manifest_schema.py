"""A manifest document checked before it becomes dataclasses: its schema version, finite numbers, the JSON Schema
shipped beside this module (``manifest.schema.json``), and the facts the schema cannot say (an int8 manifest
names its flavour, an engine manifest has its engine section...), each refused with one line.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import typing
from importlib import resources
from typing import Any

from segdeploy import __version__, flavours
from segdeploy.errors import ArtifactError

SCHEMA_VERSION = 2
# Untyped metadata written by segdeploy 0.1 (one metadata_props entry per key); recognised only to refuse it clearly.
LEGACY_METADATA_KEY = "segdeploy_metadata_version"
INT8_FLAVOURS = flavours.NAMES


@functools.lru_cache(maxsize=1)
def schema() -> dict:
    return json.loads(resources.files("segdeploy.artifact").joinpath("manifest.schema.json").read_text("utf-8"))


def check_document(data: Any, source: str = "manifest") -> None:
    """Raise ArtifactError with one line when ``data`` is not a manifest of this schema version."""
    if not isinstance(data, dict):
        raise ArtifactError(f"{source}: a manifest is a JSON object, not {type(data).__name__}")
    if LEGACY_METADATA_KEY in data and "schema_version" not in data:
        raise ArtifactError(f"{source} was written by segdeploy 0.1 (untyped metadata version "
                            f"{data[LEGACY_METADATA_KEY]!r}); this segdeploy reads manifest schema {SCHEMA_VERSION}: "
                            "export the artifact again")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        if isinstance(version, int) and version > SCHEMA_VERSION:
            hint = "it was written by a newer segdeploy: upgrade segdeploy to read it"
        else:
            hint = "export the artifact again with this segdeploy"
        raise ArtifactError(f"{source} has manifest schema_version {version!r}; segdeploy {__version__} reads "
                            f"schema {SCHEMA_VERSION}: {hint}")
    check_finite(data, source)
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: (len(e.absolute_path), list(map(str, e.path))))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(top level)"
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        raise ArtifactError(f"{source}: invalid manifest at {where}: {_short(first.message)}{more}")
    _check_consistency(data, source)


def check_finite(value, where: str) -> None:
    """Refuse NaN and Infinity anywhere in a document (Python's json writes them; JSON and every reader refuse)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ArtifactError(f"{where} holds {value!r}, which JSON cannot hold: refused rather than written")
    if isinstance(value, dict):
        for key, item in value.items():
            check_finite(item, f"{where}/{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_finite(item, f"{where}/{i}")


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _check_consistency(data: dict, source: str) -> None:
    """What a schema cannot say: the parts of one manifest must agree with each other."""
    model = data["model"]
    k = model["num_classes"]
    if len(model["class_names"]) != k:
        raise ArtifactError(f"{source}: {len(model['class_names'])} class names for {k} classes")
    if len(model["palette"]) != k:
        raise ArtifactError(f"{source}: {len(model['palette'])} palette colours for {k} classes")
    precision = data["precision"]
    if precision["mode"] == "int8" and precision.get("flavour") not in INT8_FLAVOURS:
        raise ArtifactError(f"{source}: an int8 manifest names its flavour ({', '.join(INT8_FLAVOURS)})")
    if precision["mode"] != "int8" and precision.get("flavour") is not None:
        raise ArtifactError(f"{source}: only int8 has a flavour, not {precision['mode']}")
    accuracy = precision.get("details", {}).get("accuracy")
    if accuracy is not None and not isinstance(accuracy.get(precision["mode"]), (int, float)):
        raise ArtifactError(f"{source}: its precision's accuracy has no {precision['mode']} score")
    for tensor in (*data["inputs"], *data["outputs"]):
        rank = len(tensor["shape"])
        for ax in tensor.get("dynamic_axes", []):
            if not 0 <= ax["axis"] < rank:
                raise ArtifactError(f"{source}: tensor {tensor['name']!r} has a dynamic axis {ax['axis']} but rank "
                                    f"{rank}")
            if not ax["min"] <= ax["opt"] <= ax["max"]:
                raise ArtifactError(f"{source}: tensor {tensor['name']!r} axis {ax['name']!r}: min <= opt <= max "
                                    f"does not hold ({ax['min']}, {ax['opt']}, {ax['max']})")
    for which in ("batch", "height", "width"):
        r = data["profile"][which]
        if not r["min"] <= r["opt"] <= r["max"]:
            raise ArtifactError(f"{source}: profile {which}: min <= opt <= max does not hold "
                                f"({r['min']}, {r['opt']}, {r['max']})")
    for tensor in data["outputs"]:
        if tensor.get("kind") == "logits" and isinstance(tensor["shape"][1], int) and tensor["shape"][1] != k:
            raise ArtifactError(f"{source}: output {tensor['name']!r} has {tensor['shape'][1]} channels for {k} "
                                "classes")
    if (data.get("format") == "engine") != (data.get("engine") is not None):
        raise ArtifactError(f"{source}: engine facts belong to (and only to) an engine's manifest")
    writer = data["tool_versions"].get("segdeploy")
    if not isinstance(writer, str) or not writer.strip():
        raise ArtifactError(f"{source}: its tool_versions name no segdeploy release, so nothing vouches for its "
                            "graph_sha256: not a manifest segdeploy wrote (export the artifact again)")


def build(cls, data: dict):
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        kwargs[f.name] = _convert(hints[f.name], data[f.name])
    return cls(**kwargs)


def _convert(hint, value):
    if value is None:
        return None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return build(hint, value)
    if origin is list and args and dataclasses.is_dataclass(args[0]):
        return [build(args[0], v) for v in value]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for arg in args:
            if dataclasses.is_dataclass(arg):
                return build(arg, value)
    return value
