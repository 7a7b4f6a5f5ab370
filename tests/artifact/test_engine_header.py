"""The engine file header: readable without TensorRT, refuses foreign engines before deserialization."""
from __future__ import annotations

import pytest

from manifests import SHA, sample_manifest
from segdeploy.artifact import EngineInfo, read_manifest
from segdeploy.artifact.engine_header import compatibility_problem, pack, read_header, split
from segdeploy.errors import ArtifactError

PLAN = b"ftrt" + bytes(range(256)) * 4  # TensorRT plans start with their own magic


def engine_manifest(**facts):
    info = EngineInfo(**{"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7",
                         "onnx_sha256": SHA, "builder": "trtexec", **facts})
    return sample_manifest().replace(format="engine", engine=info)


def test_header_round_trip(tmp_path):
    import hashlib

    data = pack(engine_manifest(), PLAN)
    manifest = engine_manifest(plan_sha256=hashlib.sha256(PLAN).hexdigest())  # pack records the plan's hash
    assert split(data) == (manifest, PLAN)
    path = tmp_path / "m.engine"
    path.write_bytes(data)
    read, offset = read_header(path)
    assert read == manifest and path.read_bytes()[offset:] == PLAN
    assert read_manifest(path).engine.compute_capability == "8.7"


def test_headerless_engines_are_recognised(tmp_path):
    path = tmp_path / "trtexec.engine"
    path.write_bytes(PLAN)
    assert read_header(path) == (None, 0)
    assert split(PLAN) == (None, PLAN)
    with pytest.raises(ArtifactError, match="no segdeploy header"):
        read_manifest(path)


@pytest.mark.parametrize("mangle, message", [
    (lambda d: d[:4] + b"{" + b"x" * (int.from_bytes(d[:4], "little") - 1) + d[4 + int.from_bytes(d[:4], "little"):],
     "corrupt"),
    (lambda d: d[:4 + int.from_bytes(d[:4], "little")], "truncated"),
    (lambda d: d[:3], "not an engine"),
])
def test_damaged_engines_are_one_line(tmp_path, mangle, message):
    path = tmp_path / "bad.engine"
    path.write_bytes(mangle(pack(engine_manifest(), PLAN)))
    with pytest.raises(ArtifactError, match=message):
        read_header(path)


@pytest.mark.parametrize("facts, trt, cc, problem", [
    ({}, "10.3.0", "8.7", None),
    ({}, "10.3.0.26", "8.7", None),
    ({}, "10.4.0", "8.7", "built by TensorRT 10.3.0"),
    ({"version_compatible": True}, "11.4.0", "8.7", None),
    ({"version_compatible": True}, "10.2.0", "8.7", "not on 10.2.0"),
    ({}, "10.3.0", "9.0", "compute capability 8.7"),
    ({"hardware_compatibility": "ampere_plus"}, "10.3.0", "9.0", None),
    ({"hardware_compatibility": "ampere_plus"}, "10.3.0", "7.5", "SM >= 8.0"),
    ({"hardware_compatibility": "same_compute_capability"}, "10.3.0", "8.6", "compute capability 8.7"),
])
def test_compatibility(facts, trt, cc, problem):
    found = compatibility_problem(engine_manifest(**facts).engine, trt, cc)
    assert (found is None) if problem is None else (problem in found)
