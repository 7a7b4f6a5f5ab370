"""bench --precision LIST --data: the command end to end on the trained test fixture (each precision exported,
calibrated on the dataset's training split, measured on its validation split), its table, JSON and Markdown, and the
refusals that come before any export."""
from __future__ import annotations

import json

from hostile import answer_lines
from segdeploy.cli import main
from segdeploy.evaluation.bench import precision as pb


def test_precision_comparison_end_to_end(trained_fixture, tmp_path, capsys, monkeypatch):
    report, md = tmp_path / "p.json", tmp_path / "p.md"
    argv = ["bench", "--model", trained_fixture.model, "--checkpoint", trained_fixture.checkpoint,
            "--precision", "fp32,fp16,int8", "--data", trained_fixture.dataset_dir, "--limit", "3",
            "--calib-count", "4", "--size", "256", "--backend", "onnxruntime", "--threads", "2",
            "--warmup-s", "0", "--min-s", "0", "--min-iters", "2", "--cache-dir", str(tmp_path / "cache")]
    code = main([*argv, "--json", str(report), "--md", str(md)])
    out = capsys.readouterr().out
    assert code == 0, out  # trained weights: every precision within its tolerance
    assert "int8 on this CPU:" in out and "recommendation:" in out
    data = json.loads(report.read_text())
    rows = {r["precision"]: r for r in data["rows"]}
    assert set(rows) == {"fp32", "fp16", "int8-cpu"} and all(r["status"] == "ok" for r in rows.values())
    assert rows["fp32"]["miou_delta"] == 0 and rows["fp16"]["agreement"] >= 99.5
    assert rows["int8-cpu"]["size_mb"] < rows["fp32"]["size_mb"] and rows["int8-cpu"]["p50_ms"] > 0
    assert all(r["within_tolerance"] for r in rows.values())
    assert "int8-cpu" in md.read_text() and "Recommendation:" in md.read_text()

    # the same comparison with the INT8 row out of tolerance: the table says so and the command exits 1
    lossy = dict(data, rows=[dict(r, within_tolerance=r["precision"] != "int8-cpu") for r in data["rows"]])
    monkeypatch.setattr(pb, "compare_precisions", lambda request, progress: lossy)
    assert main(argv) == 1
    assert "out of tolerance" in capsys.readouterr().out


def test_precision_comparison_refusals_come_first(tmp_path, capsys):
    cases = [
        (["--model", "cgrseg_t,segnext_t", "--precision", "fp32,int8"], "one --model"),
        (["--model", "cgrseg_t", "--precision", "fp32,int8", "--csv", str(tmp_path / "x.csv")], "--json, --md"),
        (["--model", "cgrseg_t", "--precision", "fp32,fp16", "--plot", str(tmp_path / "x.svg")], "PNG"),
    ]
    for extra, message in cases:
        code = main(["bench", *extra])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(answer_lines(err)) == 1, (extra, err)
    assert list(tmp_path.iterdir()) == []
