"""The manifest: one typed definition, validated against the shipped JSON Schema, refused clearly when foreign."""
from __future__ import annotations

import dataclasses
import json

import pytest

from manifests import sample_manifest
from segdeploy import flavours
from segdeploy.artifact import manifest as mf
from segdeploy.artifact import manifest_schema
from segdeploy.artifact.reader import read_manifest
from segdeploy.errors import ArtifactError


@pytest.mark.parametrize("dynamic", [False, True])
@pytest.mark.parametrize("outputs", ["logits", "mask"])
def test_round_trip_through_json(dynamic, outputs):
    m = sample_manifest(dynamic=dynamic, outputs=outputs)
    again = mf.Manifest.from_dict(json.loads(m.to_json()))
    assert again == m
    assert isinstance(again.inputs[0], mf.TensorSpec) and isinstance(again.profile.height, mf.Range)


def test_schema_names_every_dataclass_field():
    """The schema and the dataclasses are one definition written twice: they must list the same keys."""
    schema = manifest_schema.schema()
    assert set(schema["properties"]) == {f.name for f in dataclasses.fields(mf.Manifest)}
    nested = {"model": mf.ModelInfo, "weights": mf.Weights, "precision": mf.Precision, "profile": mf.Profile,
              "preprocessing": mf.Preprocessing, "export": mf.ExportInfo}
    for key, cls in nested.items():
        assert set(schema["properties"][key]["properties"]) == {f.name for f in dataclasses.fields(cls)}, key
    tensor = schema["properties"]["inputs"]["items"]["properties"]
    assert set(tensor) == {f.name for f in dataclasses.fields(mf.TensorSpec)}
    engine = schema["properties"]["engine"]["oneOf"][1]["properties"]
    assert set(engine) == {f.name for f in dataclasses.fields(mf.EngineInfo)}
    precision = schema["properties"]["precision"]["properties"]
    assert precision["mode"]["enum"] == list(mf.PRECISIONS)
    assert precision["flavour"]["enum"] == [*flavours.NAMES, None]


def _broken(edit):
    data = sample_manifest().to_dict()
    edit(data)
    return data


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.pop("model"), "'model' is a required property"),
    (lambda d: d["inputs"][0].update(dtype="float128"), "inputs/0/dtype"),
    (lambda d: d["preprocessing"].update(std=[1, 0, 1]), "preprocessing/std/1"),
    (lambda d: d.update(graph_sha256="abc"), "graph_sha256"),
    (lambda d: d["model"].update(class_names=["a"]), "1 class names for 4 classes"),
    (lambda d: d["model"].update(palette=d["model"]["palette"][:2]), "2 palette colours for 4 classes"),
    (lambda d: d["precision"].update(mode="int8"), "names its flavour"),
    (lambda d: d["outputs"][0]["shape"].__setitem__(1, 19), "19 channels for 4 classes"),
    (lambda d: d["profile"]["height"].update(min=2048), "min <= opt <= max"),
    (lambda d: d.update(surprise=1), "Additional properties"),
    (lambda d: d.update(format="engine"), "engine facts"),
])
def test_invalid_manifests_are_one_line(edit, message):
    with pytest.raises(ArtifactError) as info:
        mf.Manifest.from_dict(_broken(edit), "x.json")
    text = str(info.value)
    assert message in text and "\n" not in text and text.startswith("x.json")


def test_other_schema_versions_say_what_to_do():
    with pytest.raises(ArtifactError, match="newer segdeploy: upgrade"):
        mf.Manifest.from_dict(_broken(lambda d: d.update(schema_version=3)), "x.json")
    with pytest.raises(ArtifactError, match="export the artifact again"):
        mf.Manifest.from_dict(_broken(lambda d: d.update(schema_version=1)), "x.json")
    with pytest.raises(ArtifactError, match="segdeploy 0.1"):
        mf.Manifest.from_dict({"segdeploy_metadata_version": 1, "model": "cgrseg_t"}, "x.json")


@pytest.mark.parametrize("content", [b"", b"\xff\xfe", b"[1, 2]", b"{\"schema_version\": 2", b"null"])
def test_unreadable_sidecars_are_one_line(tmp_path, content):
    path = tmp_path / "x.json"
    path.write_bytes(content)
    with pytest.raises(ArtifactError) as info:
        read_manifest(path)
    assert "\n" not in str(info.value)


def test_profile_checks_shapes():
    profile = sample_manifest(dynamic=True).profile
    assert profile.check(2, 384, 640) is None
    assert "batch 5 outside 1-4" in profile.check(5, 384, 640)
    assert "not a multiple of 32" in profile.check(1, 300, 640)
    assert sample_manifest(dynamic=True).input.shapes() == {"min": [1, 3, 256, 256], "opt": [1, 3, 512, 512],
                                                            "max": [4, 3, 1024, 1024]}
