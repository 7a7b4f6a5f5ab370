"""Property-based fuzzing (Hypothesis) of everything segdeploy reads from bytes it does not control: checkpoints,
manifests (bytes and JSON, as sidecars, embedded copies and engine headers), engine files. The property: reading
either succeeds or raises segdeploy's one-line error for that input (CheckpointError / ArtifactError), never any
other exception, and never runs code. The default profile runs a few hundred examples per target; the slow cases
run thousands, and the CLI on fuzzed sidecars and checkpoints end to end."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostile import edit_json, json_paths, run_cli, small_checkpoint_bytes
from manifests import SHA, sample_manifest
from segdeploy.artifact import EngineInfo
from segdeploy.artifact.engine_header import pack, read_header, split
from segdeploy.artifact.manifest import Manifest
from segdeploy.artifact.manifest_store import parse_json, read_sidecar
from segdeploy.errors import ArtifactError, CheckpointError
from segdeploy.models.checkpoints import read_state_dict
from segdeploy.models.facts import check_manifest

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])
SLOW = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])

ZIP_CHECKPOINT = small_checkpoint_bytes()
LEGACY_CHECKPOINT = small_checkpoint_bytes(legacy=True)


@st.composite
def mutated(draw, original: bytes):
    """``original`` with a few of: bytes overwritten, inserted, deleted, or the file cut short."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["overwrite", "insert", "delete", "truncate"]))
        if kind == "overwrite":
            data[at:at + 1] = bytes([draw(st.integers(0, 255))])
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 64))]
        else:
            del data[at:]
    return bytes(data)


checkpoint_bytes = st.one_of(mutated(ZIP_CHECKPOINT), mutated(LEGACY_CHECKPOINT), st.binary(max_size=512))


def _read_checkpoint(tmp_path, data: bytes):
    path = tmp_path / "c.pth"
    path.write_bytes(data)
    try:
        state = read_state_dict(path)
    except CheckpointError:
        return
    assert isinstance(state, dict) and state


@FAST
@given(data=checkpoint_bytes)
def test_checkpoint_bytes(tmp_path, data):
    _read_checkpoint(tmp_path, data)


@pytest.mark.slow
@SLOW
@given(data=checkpoint_bytes)
def test_checkpoint_bytes_thoroughly(tmp_path, data):
    _read_checkpoint(tmp_path, data)


# ---------------------------------------------------------------------------------------------------------------
# Manifests

DOCUMENT = sample_manifest().to_dict()
DOCUMENT_BYTES = json.dumps(DOCUMENT).encode()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)


PATHS = [p for p in json_paths(DOCUMENT) if p]


@st.composite
def edited_documents(draw):
    """The sample manifest with one to three fields replaced by arbitrary JSON, or removed."""
    return edit_json(draw, DOCUMENT, PATHS, json_values)


def _from_document(document):
    try:
        manifest = Manifest.from_dict(document, "fuzzed")
    except ArtifactError:
        return
    check_manifest(manifest, "fuzzed")


@FAST
@given(document=edited_documents())
def test_manifest_documents(document):
    try:
        _from_document(document)
    except ArtifactError:
        pass


manifest_bytes = st.one_of(mutated(DOCUMENT_BYTES), st.binary(max_size=256),
                           json_values.map(lambda v: json.dumps(v).encode()))


def _read_sidecar(tmp_path, data: bytes):
    path = tmp_path / "m.json"
    path.write_bytes(data)
    try:
        read_sidecar(path)
    except ArtifactError:
        pass
    try:
        parse_json(data, "fuzzed")
    except ArtifactError:
        pass


@FAST
@given(data=manifest_bytes)
def test_manifest_bytes(tmp_path, data):
    _read_sidecar(tmp_path, data)


@pytest.mark.slow
@SLOW
@given(data=manifest_bytes)
def test_manifest_bytes_thoroughly(tmp_path, data):
    _read_sidecar(tmp_path, data)


# ---------------------------------------------------------------------------------------------------------------
# Engine files

ENGINE = pack(sample_manifest().replace(format="engine", engine=EngineInfo(
    tensorrt_version="10.3.0", gpu_name="Orin", compute_capability="8.7", onnx_sha256=SHA, builder="trtexec")),
    b"ftrt" + bytes(range(256)))
engine_bytes = st.one_of(mutated(ENGINE), st.binary(max_size=64),
                         st.builds(lambda n, body: n.to_bytes(4, "little") + body, st.integers(0, 2**32 - 1),
                                   st.binary(max_size=64)))


def _read_engine(tmp_path, data: bytes):
    try:
        split(data, "fuzzed")
    except ArtifactError:
        pass
    path = tmp_path / "m.engine"
    path.write_bytes(data)
    try:
        read_header(path)
    except ArtifactError:
        pass


@FAST
@given(data=engine_bytes)
def test_engine_bytes(tmp_path, data):
    _read_engine(tmp_path, data)


@pytest.mark.slow
@SLOW
@given(data=engine_bytes)
def test_engine_bytes_thoroughly(tmp_path, data):
    _read_engine(tmp_path, data)


# ---------------------------------------------------------------------------------------------------------------
# End to end: the CLI's contract on fuzzed files


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=manifest_bytes)
def test_info_on_fuzzed_sidecars(tmp_path, capfd, data):
    path = tmp_path / "m.json"
    path.write_bytes(data)
    outcome = run_cli(capfd, "info", path)
    if outcome.code != 0:
        outcome.refused()


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(mutated(ZIP_CHECKPOINT), mutated(LEGACY_CHECKPOINT)))
def test_export_on_fuzzed_checkpoints(tmp_path, capfd, data):
    path = tmp_path / "c.pth"
    path.write_bytes(data)
    outcome = run_cli(capfd, "export", "--model", "segnext_t", "--size", "64", "--checkpoint", path, "--output",
                      tmp_path / "x.onnx", "--no-validate", "--force")
    outcome.refused()  # a fragment of a 3-tensor checkpoint never fits SegNeXt
    assert not (tmp_path / "x.onnx").exists()
