"""The CLI end to end: tables, real images, and one clear line with a non-zero exit on bad input."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np

from goldens import IMAGES
from hostile import answer_lines
from segdeploy import models
from segdeploy.cli import main

IMAGE = str(IMAGES / "grace_hopper.jpg")


def run_cli(*args):
    proc = subprocess.run([sys.executable, "-m", "segdeploy", *args], capture_output=True, text=True)
    return proc.returncode, proc.stdout, proc.stderr


def test_list_prints_every_model_with_paper_figures(capsys, tmp_path):
    out_json = tmp_path / "list.json"
    assert main(["list", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    for name in models.list_models():
        assert name in out
    records = json.loads(out_json.read_text())
    t = next(r for r in records if r["model"] == "segnext_t")
    assert abs(t["params_m"] - 4.263414) < 1e-6 and t["params_m_paper"] == 4.3


def test_list_counts_macs_on_request_and_caches_them(capsys, tmp_path, monkeypatch):
    from segdeploy.models.complexity import measure

    monkeypatch.setenv("SEGDEPLOY_CACHE", str(tmp_path))
    assert main(["list", "--family", "segnext", "--flops", "--size", "256", "--json", str(tmp_path / "l.json")]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "segnext_t" in line)
    expected = measure("segnext_t", 256, 256)["gmacs"]  # about a quarter of 6.4 at 512x512 (paper: 6.6)
    assert f"{expected:.1f}" in row and 1.4 < expected < 1.8
    cache = json.loads((tmp_path / "complexity.json").read_text())
    assert any("|segnext_t|256x256|macs" in key for key in cache)
    assert main(["list", "--family", "segnext", "--flops", "--size", "256"]) == 0
    assert row in capsys.readouterr().out  # the same figures from the cache


def test_info_json(capsys):
    assert main(["info", "segnext_t", "--json", "-"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == 4263414 and info["input"]["channel_order"] == "RGB"


def test_help_shows_examples_and_no_developer_notes(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "dispatch" not in out and "segdeploy/commands" not in out
    from segdeploy.cli import COMMANDS

    for command in COMMANDS:
        name = command.replace("_", "-")
        assert main([name, "--help"]) == 0
        out = capsys.readouterr().out
        assert "examples:" in out, name
        assert ".py" not in out, name  # no pointers into the source
        if name == "export":  # --model says where the names are (listing them would build every model first)
            assert "`segdeploy list` names them" in out
            # a continued example stays two lines, as a shell reads it
            assert "--eval-data data/ \\\n      --max-drop 1" in out


def test_predict_on_a_real_image_agrees_across_backends(tmp_path):
    masks = {}
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / f"mask_{backend}.png"
        code, stdout, stderr = run_cli("predict", "--model", "segnext_t", "--image", IMAGE, "--output", str(out),
                                       "--backend", backend, "--cache-dir", str(tmp_path / "cache"))
        assert code == 0, stderr
        assert f"segnext_t (recipe weights) on {backend}" in stdout and "classes in the mask" in stdout
        masks[backend] = cv2.imread(str(out))
    image = cv2.imread(IMAGE)
    assert masks["torch"].shape == image.shape
    assert len(np.unique(masks["torch"].reshape(-1, 3), axis=0)) > 1
    agreement = (masks["torch"] == masks["onnxruntime"]).all(axis=2).mean()
    assert agreement >= 0.999
    cached = [p.name for p in (tmp_path / "cache").glob("*.onnx")]
    assert len(cached) == 1 and cached[0].startswith("segnext_t_512x512_dynamic_")
    # a photo of another shape runs on the same dynamic export: no new export per shape
    other = tmp_path / "other.jpg"
    cv2.imwrite(str(other), cv2.resize(image, (320, 240)))
    code, stdout, stderr = run_cli("predict", "--model", "segnext_t", "--image", str(other), "--backend", "onnxruntime",
                                   "--cache-dir", str(tmp_path / "cache"))
    assert code == 0 and "image 240x320 -> input" in stdout, stderr
    assert [p.name for p in (tmp_path / "cache").glob("*.onnx")] == cached and "tracing" not in stderr
    code, _, stderr = run_cli("predict", "--model", "segnext_t", "--image", IMAGE, "--backend", "torch",
                              "--output", str(tmp_path / "mask_torch.png"))
    assert code == 2 and "exists; pass --force" in stderr


def test_bad_inputs_give_one_line_and_exit_2(tmp_path):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image")
    bad_ckpt = tmp_path / "bad.pth"
    bad_ckpt.write_bytes(b"\x00" * 100)
    cases = [
        (("info", "segnext_x"), "unknown model 'segnext_x'"),
        (("predict", "--model", "segnext_t", "--image", str(junk)), "cannot decode image"),
        (("predict", "--model", "segnext_t", "--image", str(tmp_path / "none.jpg")), "source not found"),
        (("predict", "--model", "segnext_t", "--image", IMAGE, "--checkpoint", str(bad_ckpt)), "truncated"),
        (("predict", "--model", "segnext_t", "--image", IMAGE, "--size", "big"), "--size takes HxW or N"),
        (("predict", "--model", "segnext_t", "--image", IMAGE, "--backend", "tpu"), "unknown backend 'tpu'"),
        (("predict", "--model", "segnext_t", "--image", IMAGE, "--backend", "tensorrt"), "runs engines"),
        (("export", "--model", "segnext_t", "--bogus"), "unrecognized arguments: --bogus"),
        (("export",), "one of the arguments --model --from-onnx is required"),
        (("bogus",), "invalid choice: 'bogus'"),
    ]
    for args, expected in cases:
        code, _, stderr = run_cli(*args)
        assert code == 2, args
        assert expected in stderr, (args, stderr)
        assert len(answer_lines(stderr)) == 1, stderr


def test_artifacts_are_written_with_ordinary_permissions(tmp_path):
    import os

    from segdeploy.files.atomic import write_text_atomic

    path = tmp_path / "report.json"
    write_text_atomic(path, "{}\n")
    mask = os.umask(0)
    os.umask(mask)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~mask)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
