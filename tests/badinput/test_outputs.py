"""Outputs go where the user said and never onto an input (eval's reports included); outputs a command cannot
write are refused before the work; truncated videos are refused, not half-segmented; the export cache works from
a read-only working folder; a dataset's own JSON is data nobody vouches for."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from hostile import PHOTO, ROOT, Tree, assert_unchanged, cli_env, copy_artifact, run_cli, unshare_works


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A small labelled dataset (ADE20K layout, 4 classes, 64x64) with its dataset.json."""
    from segdeploy.datasets.synthetic import SynthConfig, write_dataset

    folder = tmp_path_factory.mktemp("eval_data") / "data"
    write_dataset(str(folder), SynthConfig(num_classes=4, train=1, val=2, height=64, width=64))
    return folder


def _copy_dataset(dataset, workdir):
    target = workdir / "data"
    shutil.copytree(dataset, target)
    return target


@pytest.mark.parametrize("flag", ["--json", "--md"])
@pytest.mark.parametrize("which", ["the model", "its sidecar", "a dataset image", "a dataset label",
                                   "dataset.json", "an image beyond --limit"])
def test_eval_never_writes_over_its_inputs(artifact, dataset, workdir, capfd, flag, which):
    """The issue: eval --json/--md could overwrite the model, its sidecar or a dataset image, even where info,
    validate and predict refuse, with --force."""
    path = copy_artifact(artifact, workdir)
    data = _copy_dataset(dataset, workdir)
    images = sorted((data / "images" / "validation").iterdir())
    labels = sorted((data / "annotations" / "validation").iterdir())
    target = {"the model": path, "its sidecar": path.with_suffix(".json"), "a dataset image": images[0],
              "a dataset label": labels[0], "dataset.json": data / "dataset.json",
              "an image beyond --limit": images[-1]}[which]
    before = Tree.of(workdir)
    run_cli(capfd, "eval", path, "--data", data, "--limit", "1", flag, target, "--force").refused(
        "input of this command")
    assert_unchanged(before, workdir)


def test_eval_reports_on_one_path_are_refused(artifact, dataset, workdir, capfd):
    path = copy_artifact(artifact, workdir)
    before = Tree.of(workdir)
    run_cli(capfd, "eval", path, "--data", dataset, "--json", "r.txt", "--md", "r.txt").refused("both name")
    assert_unchanged(before, workdir)


BAD_META = {
    "not JSON": b"{classes: [",
    "NaN": b'{"classes": ["a", "b"], "palette": [[NaN, 0, 0], [0, 0, 0]]}',
    "nested 100000 deep": b"[" * 100_000 + b"]" * 100_000,
    "classes not a list": b'{"classes": "abc"}',
    "palette colour out of range": b'{"classes": ["a", "b", "c", "d"], "palette": [[256, -1, 0], [0, 0, 0], '
                                   b'[0, 0, 0], [0, 0, 0]]}',
    "palette entries not lists": b'{"classes": ["a", "b", "c", "d"], "palette": [1, 2, 3, 4]}',
    "palette colours as text": b'{"classes": ["a", "b", "c", "d"], "palette": ["red", "red", "red", "red"]}',
    "not UTF-8": b'{"classes": ["caf\xe9"]}',
}


@pytest.mark.parametrize("name", sorted(BAD_META))
def test_a_hostile_dataset_json_is_one_line(artifact, dataset, workdir, capfd, name):
    path = copy_artifact(artifact, workdir)
    data = _copy_dataset(dataset, workdir)
    (data / "dataset.json").write_bytes(BAD_META[name])
    before = Tree.of(workdir)
    run_cli(capfd, "eval", path, "--data", data).refused("dataset.json")
    assert_unchanged(before, workdir)


# ---------------------------------------------------------------------------------------------------------------
# predict's outputs and inputs

PREDICT = ("predict", "--model", "segnext_t", "--backend", "torch", "--size", "64", "--source")


@pytest.mark.parametrize("output", ["mask.txt", "mask.onnx", "mask.mp4", "mask.json"])
def test_an_image_output_opencv_cannot_write_is_refused_before_inference(workdir, capfd, output):
    """The issue: predict --output mask.txt was an internal error (exit 1, an OpenCV encoder message) after the
    inference."""
    before = Tree.of(workdir)
    outcome = run_cli(capfd, *PREDICT, PHOTO, "--output", output)
    outcome.refused("writes images as")
    assert "segnext_t (recipe weights)" not in outcome.out  # refused before the model ran
    assert_unchanged(before, workdir)


@pytest.mark.parametrize("output", ["clip.txt", "clip.png", "clip.webm"])
def test_a_video_output_opencv_cannot_write_is_refused_before_inference(workdir, capfd, output):
    video = _video(workdir / "clip.avi", frames=4)
    before = Tree.of(workdir)
    run_cli(capfd, *PREDICT, video, "--output", output).refused("video file")
    assert_unchanged(before, workdir)


def _video(path, frames: int, size=(96, 128)):
    import cv2
    import numpy as np

    image = cv2.resize(cv2.imread(str(PHOTO)), (size[1], size[0]))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (size[1], size[0]))
    for shift in range(frames):
        writer.write(np.roll(image, 8 * shift, axis=1))
    writer.release()
    return path


def test_a_truncated_video_is_refused_not_half_segmented(workdir, capfd):
    """The issue: a truncated video silently gave partial results. Now it says how many frames it lost, and
    writes nothing."""
    whole = _video(workdir / "whole.avi", frames=12)
    data = whole.read_bytes()
    cut = workdir / "cut.avi"
    cut.write_bytes(data[: len(data) * 6 // 10])
    before = Tree.of(workdir)
    line = run_cli(capfd, *PREDICT, cut, "--output", "out.avi").refused("truncated or damaged")
    assert "of the 12 frames its container lists" in line
    assert_unchanged(before, workdir)
    outcome = run_cli(capfd, *PREDICT, whole, "--output", "out.avi")
    outcome.succeeded()
    assert "(12 frames)" in outcome.out


@pytest.mark.skipif(not unshare_works(), reason="needs unshare -rm and tmpfs mounts (user and mount namespaces), "
                                                 "which this machine does not allow")
def test_predict_works_from_a_read_only_folder(workdir):
    """The issue: predict --model could not run from a read-only folder (the default cache is ./artifacts/cache);
    it now falls back to the user's cache folder ($SEGDEPLOY_CACHE here)."""
    (workdir / "ro").mkdir()
    (workdir / "cache").mkdir()
    command = (f"{sys.executable} -m segdeploy predict --model segnext_t --backend onnxruntime --size 64 --source "
               f"{PHOTO}")
    script = f"mount -t tmpfs -o ro,size=1m tmpfs {workdir}/ro && cd {workdir}/ro && {command}"
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=600,
                          env=cli_env(SEGDEPLOY_CACHE=workdir / "cache"), cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert list((workdir / "cache" / "exports").glob("segnext_t_64x64_*.onnx"))


def test_a_given_cache_dir_is_never_second_guessed(workdir, capfd):
    (workdir / "afile").write_text("keep")
    before = Tree.of(workdir)
    run_cli(capfd, "predict", "--model", "segnext_t", "--backend", "onnxruntime", "--size", "64", "--source", PHOTO,
            "--cache-dir", "afile/cache").refused("afile")
    assert_unchanged(before, workdir)


def test_read_meta_returns_only_what_it_checked(dataset, workdir):
    from segdeploy.datasets.layouts import read_meta

    data = _copy_dataset(dataset, workdir)
    document = json.loads((data / "dataset.json").read_text())
    document["root"] = "/etc"  # a path in the file: never used
    (data / "dataset.json").write_text(json.dumps(document))
    assert set(read_meta(str(data))) == {"classes", "palette"}
