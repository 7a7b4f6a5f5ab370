"""segdeploy fixtures: picks recipes by name, reuses the cache, and rejects unknown names with one line."""
from __future__ import annotations

import json
import os

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


def test_the_quick_fixture_is_placed_where_commands_can_name_it(trained_fixture, capsys, tmp_path):
    import shlex

    from segdeploy.cli import build_parser
    from segdeploy.training.fixtures import QUICK_FIXTURE

    assert QUICK_FIXTURE is TEST_FIXTURE  # the suite trains the quick fixture: this run finds it in the cache
    out_dir = tmp_path / "quick"
    assert main(["fixtures", "--quick", "--output", str(out_dir)]) == 0
    out = capsys.readouterr().out
    checkpoint, dataset = out_dir / "cgrseg_t_tiny8.pth", out_dir / "synth8"
    assert checkpoint.read_bytes() == open(trained_fixture.checkpoint, "rb").read()
    assert (dataset / "dataset.json").is_file() and len(os.listdir(dataset / "images" / "validation")) == 12
    assert f"wrote {checkpoint} and {dataset}" in out and f"{trained_fixture.miou:.2f}" in out
    # what it says to run next names the copies and parses
    commands = [line.strip() for line in out.splitlines() if line.strip().startswith("segdeploy ")]
    assert len(commands) == 2
    assert commands[0] == (f"segdeploy export --model cgrseg_t --checkpoint {checkpoint} --size 256x256 --precision "
                           f"int8 --calib {dataset} --eval-data {dataset}")
    assert commands[1] == f"segdeploy eval artifacts/cgrseg_t_256x256_int8_cpu.onnx --data {dataset}"
    for line in commands:
        build_parser().parse_args(shlex.split(line)[1:])
    # again: kept as it is; changed: refused without --force
    assert main(["fixtures", "--quick", "--output", str(out_dir)]) == 0
    assert f"kept {checkpoint}" in capsys.readouterr().out
    (dataset / "extra.txt").write_text("mine")
    assert main(["fixtures", "--quick", "--output", str(out_dir)]) == 2
    assert "holds something else; pass --force" in capsys.readouterr().err
    assert main(["fixtures", "--quick", "--model", "segnext_t"]) == 2
    assert "leave out --model" in capsys.readouterr().err
