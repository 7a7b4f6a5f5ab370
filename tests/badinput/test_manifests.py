"""Manifests that are malformed (bytes that are not a manifest, as sidecar or embedded) or lying (schema-valid but
not describing the graph or the model): every reader refuses them with one line naming the problem."""
from __future__ import annotations

import json

import pytest

from hostile import (
    MALFORMED_MANIFESTS,
    MANIFEST_LIES,
    PHOTO,
    Tree,
    assert_unchanged,
    lie,
    malformed_manifest,
    manifest_document,
    run_cli,
    write_with_manifest,
)

COMMANDS = {
    "info": lambda p: ("info", p),
    "validate": lambda p: ("validate", p, "--n", "1"),
    "predict": lambda p: ("predict", "--artifact", p, "--source", PHOTO, "--backend", "onnxruntime"),
    "bench": lambda p: ("bench", "--artifact", p, "--backend", "onnxruntime", "--warmup-s", "0", "--min-s", "0",
                        "--min-iters", "1", "--no-peak"),
}


def _utf8(raw: bytes | None) -> bool:
    try:
        raw is None or raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# ONNX metadata values are UTF-8 strings: bytes that are not can only reach a reader as a sidecar
@pytest.mark.parametrize("name, where", [(name, where) for name in sorted(MALFORMED_MANIFESTS)
                                         for where in ("sidecar", "embedded")
                                         if where == "sidecar" or _utf8(MALFORMED_MANIFESTS[name])])
def test_malformed_manifests_are_one_line(artifact, workdir, capfd, name, where):
    raw = malformed_manifest(name, manifest_document(artifact))
    path = write_with_manifest(artifact, workdir / "a.onnx", None, raw=raw, embed=where == "embedded",
                               sidecar=where == "sidecar")
    before = Tree.of(workdir)
    for command in ("info", "validate"):
        run_cli(capfd, *COMMANDS[command](path)).refused()
    if where == "sidecar":  # the sidecar on its own, as info reads it
        run_cli(capfd, "info", path.with_suffix(".json")).refused()
    assert_unchanged(before, workdir)


@pytest.mark.parametrize("name", ["nested 100000 deep", "a 5000-digit integer", "NaN", "not UTF-8", "empty"])
def test_malformed_manifests_reach_predict_and_bench_as_one_line(artifact, workdir, capfd, name):
    raw = malformed_manifest(name, manifest_document(artifact))
    path = write_with_manifest(artifact, workdir / "a.onnx", None, raw=raw, embed=False)
    for command in ("predict", "bench"):
        run_cli(capfd, *COMMANDS[command](path)).refused()


EXPECTED = {  # what each lie is caught by, in the refusal's words
    "19 classes on a 150-class graph": "dimension 1",
    "false mean": "mean",
    "false std": "std",
    "BGR for an RGB model": "channel order",
    "align_corners": "align_corners",
    "nmf_rank=1e8": "nmf_rank",
    "nmf_seed=-5": "nmf_seed",
    "unknown option": "depth",
    "another model's name": "cgrseg",
    "another variant": "variant",
    "input renamed": "inputs",
    "input dtype": "uint8",
    "input size": "dimension 2",
    "output renamed": "outputs",
    "profile wider than the graph": "profile",
    "fp16 on an fp32 graph": "fp16",
    "int8 on an fp32 graph": "int8",
    "engine facts on an ONNX file": "engine",
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("name", sorted(MANIFEST_LIES))
def test_lying_manifests_are_refused(artifact, workdir, capfd, name, command):
    document = lie(manifest_document(artifact), MANIFEST_LIES[name])
    path = write_with_manifest(artifact, workdir / "a.onnx", document)
    before = Tree.of(workdir)
    run_cli(capfd, *COMMANDS[command](path)).refused(EXPECTED[name])
    assert_unchanged(before, workdir)


def test_lying_sidecar_alone_is_refused_by_info(artifact, workdir, capfd):
    """A sidecar read on its own has no graph to be checked against, but still the registry."""
    document = lie(manifest_document(artifact), MANIFEST_LIES["false mean"])
    side = workdir / "m.json"
    side.write_text(json.dumps(document))
    run_cli(capfd, "info", side).refused("mean")


def test_a_manifest_of_an_unknown_model_is_shown_not_trusted_for_validation(artifact, workdir, capfd):
    """A model this segdeploy does not know (an artifact of a newer release) can be inspected and run, but not
    validated: there is no reference for it."""
    document = lie(manifest_document(artifact), lambda d: d["model"].__setitem__("name", "segnext_xl"))
    path = write_with_manifest(artifact, workdir / "a.onnx", document)
    outcome = run_cli(capfd, "info", path)
    assert outcome.code == 0 and "segnext_xl" in outcome.out, outcome.describe()
    run_cli(capfd, "validate", path, "--n", "1").refused("unknown model 'segnext_xl'")
