"""Where a manifest lives: the JSON sidecar ``<artifact>.json``, the ONNX ``metadata_props`` entry
(:data:`manifest.ONNX_METADATA_KEY`), and JSON read from files nobody vouches for.
"""
from __future__ import annotations

import json
import os

from segdeploy.artifact.manifest import ONNX_METADATA_KEY, Manifest
from segdeploy.artifact.manifest_schema import LEGACY_METADATA_KEY, check_document, check_finite
from segdeploy.files.untrusted_json import parse_untrusted_json, read_untrusted_json


def sidecar_path(artifact: str | os.PathLike) -> str:
    return os.path.splitext(os.fspath(artifact))[0] + ".json"


def embed(model_proto, manifest: Manifest):
    """Put ``manifest`` into an ONNX model's metadata_props (replacing segdeploy's entries, keeping foreign ones)."""
    keep = [(p.key, p.value) for p in model_proto.metadata_props
            if p.key != ONNX_METADATA_KEY and p.key not in _LEGACY_KEYS]
    del model_proto.metadata_props[:]
    check_finite(manifest.to_dict(), "the manifest")
    for key, value in [*keep, (ONNX_METADATA_KEY, json.dumps(manifest.to_dict(), sort_keys=True, allow_nan=False))]:
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = key, value
    return model_proto


_LEGACY_KEYS = frozenset({LEGACY_METADATA_KEY, "format", "model", "family", "variant", "num_classes", "class_names",
                          "palette", "input", "output", "dynamic", "dynamic_axes", "input_profile", "preprocessing",
                          "opset", "export_options", "graph", "weights", "graph_sha256", "tool_versions",
                          "validation"})


def embedded(model_proto, source: str = "the ONNX model") -> Manifest | None:
    """The manifest inside an ONNX model's metadata_props, or None when it carries none."""
    props = {p.key: p.value for p in model_proto.metadata_props}
    if ONNX_METADATA_KEY in props:
        data = parse_json(props[ONNX_METADATA_KEY], f"{source}: its embedded manifest")
        return Manifest.from_dict(data, f"{source} (embedded manifest)")
    if LEGACY_METADATA_KEY in props:
        check_document({LEGACY_METADATA_KEY: props[LEGACY_METADATA_KEY]}, source)
    return None


# A manifest is a few tens of kB (150 class names and colours); anything near this is not one.
MAX_MANIFEST_BYTES = 16 << 20


def parse_json(raw: bytes | str, source: str, what: str = "a manifest"):
    """JSON from bytes nobody vouches for, as one ArtifactError line whatever is wrong with them (untrusted_json.py's
    parse_untrusted_json): not UTF-8, not JSON, NaN/Infinity, nesting too deep, integers too long to convert, or
    too large to be ``what``."""
    return parse_untrusted_json(raw, source, what, MAX_MANIFEST_BYTES)


def read_json_file(path: str | os.PathLike, what: str = "a manifest"):
    """The JSON document in the file at ``path``, read as :func:`parse_json` reads bytes."""
    return read_untrusted_json(path, what, MAX_MANIFEST_BYTES)


def read_sidecar(path: str | os.PathLike) -> Manifest:
    path = os.fspath(path)
    return Manifest.from_dict(read_json_file(path), path)
