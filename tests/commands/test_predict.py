"""predict on folders, globs and videos, from a model or an artifact: masks, overlays, label PNGs, an output video."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from exports import export
from goldens import IMAGES
from hostile import answer_lines
from segdeploy.cli import main
from segdeploy.media import resolve_source

PHOTO = cv2.imread(str(IMAGES / "grace_hopper.jpg"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Three photos of different sizes (a folder of mixed sizes needs the dynamic export)."""
    folder = tmp_path_factory.mktemp("photos")
    for name, size in (("a.jpg", (320, 256)), ("b.png", (200, 300)), ("c.jpg", (256, 256))):
        cv2.imwrite(str(folder / name), cv2.resize(PHOTO, size))
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (256, 192))
    for shift in range(4):
        writer.write(np.roll(cv2.resize(PHOTO, (256, 192)), 16 * shift, axis=1))
    writer.release()
    return path


def run(capsys, *args):
    code = main(["predict", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_folder_writes_masks_overlays_and_labels(photos, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "--model", "segnext_t", "--source", str(photos), "--backend", "torch",
                            "--output", str(out), "--overlay", "--labels")
    assert code == 0, err
    assert "3 images in" in stdout and "frames" not in stdout and "latency p50" in stdout
    names = sorted(os.listdir(out))
    assert names == sorted(f"{s}_{k}" for s in "abc" for k in ("mask.png", "overlay.jpg", "labels.png"))
    for stem, (w, h) in (("a", (320, 256)), ("b", (200, 300))):
        mask = cv2.imread(str(out / f"{stem}_mask.png"))
        labels = cv2.imread(str(out / f"{stem}_labels.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (h, w, 3) and labels.shape == (h, w) and labels.dtype == np.uint8
    # the same folder again refuses to overwrite, before running anything
    code, _, err = run(capsys, "--model", "segnext_t", "--source", str(photos), "--backend", "torch",
                       "--output", str(out))
    assert code == 2 and "exists; pass --force" in err


def test_a_glob_on_an_artifact_backend_uses_one_dynamic_export(photos, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run(capsys, "--model", "segnext_t", "--source", str(photos / "*.jpg"), "--backend", "onnxruntime",
                       "--output", str(out), "--cache-dir", str(tmp_path / "cache"))
    assert code == 0, err
    assert sorted(os.listdir(out)) == ["a_mask.png", "c_mask.png"]
    cached = [p for p in os.listdir(tmp_path / "cache") if p.endswith(".onnx")]
    assert len(cached) == 1 and "_dynamic_" in cached[0]


def test_an_artifact_segments_as_its_manifest_says(tmp_path, capsys):
    artifact = export("segnext_t", tmp_path / "m.onnx", height=256, width=256, outputs="mask", preprocess=True,
                      verify=False).path
    out = tmp_path / "mask.png"
    code, stdout, err = run(capsys, "--artifact", artifact, "--source", str(IMAGES / "grace_hopper.jpg"),
                            "--output", str(out))
    assert code == 0, err
    assert cv2.imread(str(out)).shape == PHOTO.shape and "m.onnx on " in stdout  # the fastest ONNX backend here
    # a static artifact squeezes the photo to its own size: it says so
    assert "m.onnx is a static 256x256 artifact: every image is resized to 256x256" in stdout


def test_a_static_artifact_says_once_that_it_resizes(photos, tmp_path, capsys):
    artifact = export("segnext_t", tmp_path / "s.onnx", height=256, width=256, verify=False).path
    code, stdout, err = run(capsys, "--artifact", artifact, "--source", str(photos), "--output", str(tmp_path / "o"))
    assert code == 0, err
    assert stdout.count("is a static 256x256 artifact") == 1  # three photos, two of another size: one note
    # an artifact exported without verification is used, with a warning, once
    assert err.count("was never compared with PyTorch") == 1 and "warning:" in err
    square = tmp_path / "square"
    square.mkdir()
    cv2.imwrite(str(square / "a.jpg"), cv2.resize(PHOTO, (256, 256)))
    code, stdout, _ = run(capsys, "--artifact", artifact, "--source", str(square / "a.jpg"))
    assert code == 0 and "is a static" not in stdout  # nothing to say: it is the artifact's size


def test_a_video_gives_a_video(video, tmp_path, capsys):
    out = tmp_path / "masks.avi"
    code, stdout, err = run(capsys, "--model", "segnext_t", "--source", str(video), "--backend", "torch",
                            "--output", str(out), "--overlay")
    assert code == 0, err
    assert "4 frames" in stdout and f"wrote {out} (4 frames)" in stdout
    capture = cv2.VideoCapture(str(out))
    frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, frame = capture.read()
    capture.release()
    assert frames == 4 and ok and frame.shape == (192, 256, 3)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temp file left behind


@pytest.mark.parametrize("source, message", [
    ("{tmp}/nowhere.jpg", "source not found"),
    ("{tmp}/*.png", "no images match"),
    ("{tmp}/empty", "no images"),
    ("{tmp}/bad.mp4", "cannot open video"),
])
def test_bad_sources_are_one_line(tmp_path, capsys, source, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    code, _, err = run(capsys, "--model", "segnext_t", "--source", source.format(tmp=tmp_path), "--backend", "torch")
    assert code == 2 and message in err and len(answer_lines(err)) == 1, err


def test_sources_resolve_by_kind(photos, video):
    assert resolve_source(str(photos)).kind == "images" and len(resolve_source(str(photos)).paths) == 3
    assert resolve_source(str(video)).kind == "video"
    assert resolve_source(str(photos / "a.jpg")).kind == "image"
