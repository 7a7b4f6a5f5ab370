"""segdeploy profile from the command line: the tables, the reports, and bad input in one line."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
from profile_graphs import SCOPED_FLOPS, scoped_graph

from hostile import answer_lines
from segdeploy.cli import main

FAST = ["--runs", "2", "--warmup", "1", "--min-s", "0", "--threads", "1", "--no-peak"]


def run(capsys, *args):
    code = main(["profile", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_profile_prints_modules_and_operators_and_writes_reports(tmp_path, capsys):
    graph = scoped_graph(tmp_path / "g.onnx")
    out_json, out_md = tmp_path / "p.json", tmp_path / "p.md"
    code, out, err = run(capsys, graph, "--backend", "onnxruntime", "--size", "32", "--depth", "1", *FAST,
                         "--json", str(out_json), "--md", str(out_md))
    assert code == 0, err
    assert "backbone" in out and "decode_head" in out and "by operator" in out and "Conv" in out
    assert "profiled layers add up to" in out
    report = json.loads(out_json.read_text())
    assert report["schema"] == "segdeploy.profile/1" and report["backend"] == "onnxruntime"
    assert {r["module"] for r in report["modules"]} == {"backbone", "decode_head"}
    assert report["flops"]["total"] == sum(SCOPED_FLOPS.values())
    assert "| backbone |" in out_md.read_text()
    # reports are not overwritten without --force, and the artifact is never an output
    code, _, err = run(capsys, graph, "--size", "32", *FAST, "--json", str(out_json))
    assert code == 2 and "exists; pass --force" in err
    code, _, err = run(capsys, graph, "--size", "32", *FAST, "--json", graph, "--force")
    assert code == 2 and "input of this command" in err


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="the plot extra is not installed")
def test_profile_plot(tmp_path, capsys):
    graph = scoped_graph(tmp_path / "g.onnx")
    code, out, err = run(capsys, graph, "--size", "32", *FAST, "--sort", "time", "--top", "2",
                         "--plot", str(tmp_path / "p.png"))
    assert code == 0, err
    assert (tmp_path / "p.png").read_bytes().startswith(b"\x89PNG")


def test_bad_input_is_one_line(tmp_path, capsys):
    graph = scoped_graph(tmp_path / "g.onnx")
    cases = [
        (("segnext_x",), "unknown model 'segnext_x'"),
        ((str(tmp_path / "none.onnx"),), "artifact not found"),
        ((graph, "--backend", "torch"), "runs model artifacts, not onnx"),
        ((graph, "--precision", "int8"), "runs the precision its graph carries"),
        (("segnext_t", "--backend", "torch"), "no per-layer profiler for a model"),
        (("segnext_t", "--precision", "int8"), "give --calib DIR"),
        (("segnext_t", "--size", "250"), "multiple of 32"),
        ((graph, "--depth", "-1"), "--depth takes 0"),
        ((graph, "--plot", str(tmp_path / "p.svg")), "--plot writes a PNG"),
    ]
    for args, expected in cases:
        code, _, err = run(capsys, *args)
        assert code == 2, (args, err)
        assert expected in err, (args, err)
        assert len(answer_lines(err)) == 1, err  # progress lines aside


def test_the_command_imports_no_heavy_library_at_start_up():
    code = ("import sys; import segdeploy.cli, segdeploy.commands.profile; "
            "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'openvino') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
