"""segdeploy fixtures: picks recipes by name, reuses the cache, and rejects unknown names with one line."""
from __future__ import annotations

import json

import pytest

from segdeploy.cli import main
from segdeploy.errors import InputError
from segdeploy.training.fixtures import FIXTURES, TEST_FIXTURE, resolve


def test_selection_by_fixture_or_model_name():
    assert [r.name for r in resolve("all")] == list(FIXTURES)
    assert [r.name for r in resolve("cgrseg_t")] == ["cgrseg_t_synth16", "cgrseg_t_lowmargin"]
    assert [r.name for r in resolve("segnext_t_synth16,offseg_t")] == ["segnext_t_synth16", "offseg_t_synth16"]
    assert {r.model for r in FIXTURES.values()} == {"cgrseg_t", "segnext_t", "lrformer_t", "offseg_t"}
    with pytest.raises(InputError, match="unknown fixture 'cgrseg_x'"):
        resolve("cgrseg_x")


def test_unknown_fixture_is_one_line_and_exit_2(capsys):
    assert main(["fixtures", "--model", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("segdeploy fixtures: error: unknown fixture 'nope'") and err.count("\n") == 1


def test_a_cached_fixture_is_reported_without_training_again(trained_fixture, capsys, tmp_path):
    record = tmp_path / "fixtures.json"
    assert main(["fixtures", "--model", TEST_FIXTURE.name, "--json", str(record)]) == 0
    out = capsys.readouterr().out
    assert TEST_FIXTURE.name in out and f"{trained_fixture.miou:.2f}" in out
    [entry] = json.loads(record.read_text())
    assert entry["checkpoint"] == trained_fixture.checkpoint and entry["record"]["key"] == TEST_FIXTURE.key()
