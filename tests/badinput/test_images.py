"""Images and videos that are truncated, corrupt, empty, not images, or larger than OpenCV or this machine's memory
takes: predict and validate --images refuse them with one line (libjpeg's own complaints are not passed on)."""
from __future__ import annotations

import pytest

from hostile import PHOTO, Tree, assert_unchanged, copy_artifact, png_header_only, run_cli

PREDICT = ("predict", "--model", "segnext_t", "--backend", "torch", "--size", "64")


def _image(name: str) -> bytes:
    data = PHOTO.read_bytes()
    if name == "half a JPEG":
        return data[: len(data) // 2]
    if name == "a JPEG without its last 100 bytes":
        return data[:-100]
    if name == "empty":
        return b""
    if name == "text":
        return b"not an image\n" * 50
    if name == "a JPEG header only":
        return data[:600]
    if name == "half a PNG":
        import cv2
        import numpy as np

        ok, png = cv2.imencode(".png", np.full((64, 64, 3), 7, np.uint8))
        return png.tobytes()[:60]
    if name == "a PNG claiming 60000x60000":
        return png_header_only(60000, 60000)
    if name == "a PNG claiming 0x0":
        return png_header_only(0, 0)
    raise KeyError(name)


BAD = ("half a JPEG", "a JPEG without its last 100 bytes", "empty", "text", "a JPEG header only", "half a PNG",
       "a PNG claiming 60000x60000", "a PNG claiming 0x0")


@pytest.mark.parametrize("name", BAD)
def test_predict_refuses_bad_images(workdir, capfd, name):
    suffix = ".png" if "PNG" in name else ".jpg"
    image = workdir / f"bad{suffix}"
    image.write_bytes(_image(name))
    before = Tree.of(workdir)
    line = run_cli(capfd, *PREDICT, "--source", image, "--output", "mask.png").refused()
    assert "bad" in line
    assert_unchanged(before, workdir)


def test_truncated_jpeg_message_names_the_damage(workdir, capfd):
    (workdir / "half.jpg").write_bytes(_image("half a JPEG"))
    run_cli(capfd, *PREDICT, "--source", "half.jpg").refused("truncated or corrupt")


def test_a_bad_image_in_a_folder_stops_with_one_line(workdir, capfd):
    folder = workdir / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(PHOTO.read_bytes())
    (folder / "b.jpg").write_bytes(_image("half a JPEG"))
    run_cli(capfd, *PREDICT, "--source", folder, "--output", "masks").refused("b.jpg")
    # every mask written before the bad image is whole; none is half-written
    assert not [p for p in (workdir / "masks").glob(".*")] if (workdir / "masks").exists() else True


@pytest.mark.parametrize("name", ["text", "empty"])
def test_a_video_that_is_not_one(workdir, capfd, name):
    (workdir / "clip.mp4").write_bytes(_image(name))
    run_cli(capfd, *PREDICT, "--source", "clip.mp4", "--output", "out.mp4").refused()
    assert not (workdir / "out.mp4").exists()


def test_validate_images_folder_with_a_truncated_jpeg(artifact, workdir, capfd):
    path = copy_artifact(artifact, workdir)
    folder = workdir / "photos"
    folder.mkdir()
    (folder / "b.jpg").write_bytes(_image("half a JPEG"))
    run_cli(capfd, "validate", path, "--n", "0", "--images", folder).refused("truncated or corrupt")


@pytest.mark.parametrize("source", ["missing.jpg", "empty folder", "'nothing*.jpg'"])
def test_sources_that_are_not_there(workdir, capfd, source):
    if source == "empty folder":
        (workdir / "empty").mkdir()
        source = "empty"
    run_cli(capfd, *PREDICT, "--source", source.strip("'")).refused()
