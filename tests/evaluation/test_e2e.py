"""bench --e2e: photo bytes to colour mask, stage by stage, for the host and the in-graph pipelines."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from goldens import IMAGES
from hostile import answer_lines
from segdeploy.cli import main
from segdeploy.evaluation.bench import e2e
from segdeploy.evaluation.bench.protocol import Protocol

PHOTO = cv2.imread(str(IMAGES / "grace_hopper.jpg"))


def test_the_default_photos_are_jpegs_at_camera_sizes():
    photos = e2e.default_photos()
    assert [(p.height, p.width) for p in photos] == list(e2e.CAMERA_SIZES)
    for photo in photos:
        assert photo.data.startswith(b"\xff\xd8") and e2e.decode(photo).shape == (photo.height, photo.width, 3)
    assert [p.data for p in e2e.default_photos()] == [p.data for p in photos]  # the same bytes every time


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    cv2.imwrite(str(folder / "a.jpg"), cv2.resize(PHOTO, (320, 256)))
    cv2.imwrite(str(folder / "b.png"), cv2.resize(PHOTO, (200, 300)))
    return folder


def test_each_stage_is_timed_for_both_pipelines(photos, tmp_path):
    request = e2e.E2ERequest(models=["segnext_t"], backends=["torch", "onnxruntime"], images=str(photos), threads=2,
                             protocol=Protocol(warmup_s=0.0, min_s=0.0, min_iters=2), cache_dir=str(tmp_path))
    report = e2e.run_e2e(request)
    # the model backend has no in-graph pipeline; ONNX Runtime runs both
    assert {(r["backend"], r["pipeline"]) for r in report["rows"]} == {("torch", "host"), ("onnxruntime", "host"),
                                                                       ("onnxruntime", "in-graph")}
    assert len(report["rows"]) == 3 * 2
    for row in report["rows"]:
        assert list(row["stages"]) == list(e2e.STAGES) and row["rounds"] == 2 == len(row["samples_ms"])
        assert sum(v["share"] for v in row["stages"].values()) == pytest.approx(1.0)
        assert all(v["p50_ms"] >= 0 for v in row["stages"].values()) and row["total_p50_ms"] > 0
        assert row["image"] in ([256, 320], [300, 200])
        # the network size follows the resize policy: short side to 512, each side a multiple of 32
        assert min(row["network"]) == 512 and all(side % 32 == 0 for side in row["network"])
        if row["pipeline"] == "in-graph":
            assert row["agreement_with_host"] > 90  # argmax at the network size, then a nearest resize
        else:
            assert row["agreement_with_host"] is None
    columns, rows = e2e.table_rows(report)
    assert len(rows) == 6 and "upsample/argmax" in columns
    assert "| segnext_t | onnxruntime | in-graph |" in e2e.to_markdown(report)


def test_bad_e2e_requests_are_one_line(photos, tmp_path, capsys):
    cases = [
        (["--model", "segnext_t", "--e2e", "--pipelines", "gpu"], "--pipelines takes host and/or in-graph"),
        (["--model", "segnext_t", "--e2e", "--artifact", str(tmp_path / "x.onnx")], "bench --e2e takes --model"),
        (["--e2e"], "needs --model"),
        (["--model", "segnext_t", "--e2e", "--batch", "2"], "batch 1"),
        (["--model", "segnext_t", "--e2e", "--images", str(tmp_path / "none")], "source not found"),
    ]
    for args, expected in cases:
        code = main(["bench", *args])
        err = capsys.readouterr().err
        assert code == 2 and expected in err, (args, err)
        assert len(answer_lines(err)) == 1, err  # progress lines aside


def test_predict_prints_the_same_split(capsys, tmp_path):
    code = main(["predict", "--model", "segnext_t", "--source", str(IMAGES / "grace_hopper.jpg"), "--backend",
                 "torch", "--output", str(tmp_path / "m.png")])
    out = capsys.readouterr().out
    assert code == 0
    line = next(line for line in out.splitlines() if line.startswith("end to end p50"))
    for stage in e2e.STAGES:
        assert e2e.STAGE_TEXT[stage] in line
    shares = [int(part.split("(")[1].split("%")[0]) for part in line.split(": ", 1)[1].split(", ")]
    assert abs(sum(shares) - 100) <= len(shares) and np.all(np.array(shares) >= 0)
