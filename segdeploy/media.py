"""Where images come from and where masks go: one image, a folder, a glob or a video in; colour masks, overlays,
label PNGs and an output video out. Written atomically like every other output."""
from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from segdeploy.errors import InputError
from segdeploy.files.atomic import move_into_place, write_bytes_atomic
from segdeploy.files.destinations import check_destination, make_parents, remove_made
from segdeploy.preprocess import captured_c_stderr

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
VIDEO_OUTPUT_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v")
# Containers whose frame count is an index (exact); elsewhere it is the duration times the rate, give or take one.
EXACT_FRAME_COUNT = (".avi", ".mp4", ".mov", ".m4v")


def check_image_output(path: str, what: str = "--output") -> None:
    """Refuse, before any work, an image output OpenCV cannot encode (mask.txt), with one line."""
    import cv2

    suffix = os.path.splitext(path)[1].lower()
    if suffix and (suffix not in IMAGE_SUFFIXES or not cv2.haveImageWriter("x" + suffix)):
        raise InputError(f"{what} {path}: segdeploy writes images as {', '.join(IMAGE_SUFFIXES)}, not {suffix}")


def video_shortfall(path: str, info: dict, decoded: int) -> str | None:
    """Why a video that decoded ``decoded`` frames was cut short (truncated or damaged), or None: fewer frames than
    its container lists (allowing one for containers whose count is an estimate)."""
    listed = info.get("frames") or 0
    slack = 0 if os.path.splitext(path)[1].lower() in EXACT_FRAME_COUNT else 1
    if listed > 0 and decoded < listed - slack:
        return (f"{path} is truncated or damaged: OpenCV decoded {decoded} of the {listed} frames its container "
                f"lists ({listed - decoded} lost)")
    return None


@dataclass
class Source:
    kind: str  # "image" | "images" | "video"
    paths: list[str]


def resolve_source(text: str) -> Source:
    """An image file, a video file, a folder of images or a glob pattern; one clear line when it is none of them."""
    if os.path.isdir(text):
        paths = sorted(os.path.join(text, f) for f in os.listdir(text) if f.lower().endswith(IMAGE_SUFFIXES))
        if not paths:
            raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in the folder {text}")
        return Source("images", paths)
    if os.path.isfile(text):
        suffix = os.path.splitext(text)[1].lower()
        if suffix in VIDEO_SUFFIXES:
            return Source("video", [text])
        return Source("image", [text])
    if glob.has_magic(text):
        paths = sorted(p for p in glob.glob(text) if os.path.isfile(p) and p.lower().endswith(IMAGE_SUFFIXES))
        if not paths:
            raise InputError(f"no images match {text}")
        return Source("images", paths)
    raise InputError(f"source not found: {text} (give an image, a folder of images, a glob or a video)")


def video_frames(path: str) -> tuple[Iterator[np.ndarray], dict]:
    """The frames of a video (uint8 BGR) and its properties (fps, size, frame count as the container says)."""
    import cv2

    with captured_c_stderr() as said:  # FFmpeg's complaints about a damaged file are not segdeploy's output
        capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        said_line = next((line.split("]", 1)[-1].strip() for line in said.text.splitlines() if line.strip()), "")
        reason = f" ({said_line})" if said_line else ""
        raise InputError(f"cannot open video {path}: not a video OpenCV can read{reason}")
    info = {"fps": capture.get(cv2.CAP_PROP_FPS) or 25.0, "width": int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            "height": int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            "frames": int(capture.get(cv2.CAP_PROP_FRAME_COUNT))}

    def frames():
        try:
            while True:
                with captured_c_stderr():  # FFmpeg on a damaged frame: the shortfall is said once, by segdeploy
                    ok, frame = capture.read()
                if not ok:
                    return
                yield frame
        finally:
            capture.release()

    return frames(), info


def overlay(image_bgr: np.ndarray, colour_mask_bgr: np.ndarray, alpha: float = 0.5, rows: int = 256) -> np.ndarray:
    """The mask's colours blended over the image: (1 - alpha) * image + alpha * mask, rounded. Blended a band of
    ``rows`` at a time, so the float temporaries stay small whatever the image size (a whole 64 MP photo in float32
    would take 2.3 GB)."""
    out = np.empty_like(image_bgr)
    for start in range(0, image_bgr.shape[0], rows):
        band = slice(start, start + rows)
        blended = image_bgr[band].astype(np.float32) * (1.0 - alpha) + \
            colour_mask_bgr[band].astype(np.float32) * alpha
        out[band] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    return out


def encode(image: np.ndarray, suffix: str) -> bytes:
    import cv2

    ok, data = cv2.imencode(suffix, image)
    if not ok:
        raise InputError(f"OpenCV cannot encode a {suffix} image")
    return data.tobytes()


def write_image(path: str, image: np.ndarray, force: bool) -> str:
    return write_bytes_atomic(path, encode(image, os.path.splitext(path)[1].lower() or ".png"), force=force)


def label_png(labels: np.ndarray) -> np.ndarray:
    """Raw class indices as a PNG-able array: uint8 when they fit, uint16 otherwise."""
    return labels.astype(np.uint8 if labels.max(initial=0) <= 255 else np.uint16)


class VideoOut:
    """An output video written to a hidden temp file beside its destination and renamed into place on success, so a
    failed or interrupted run leaves no half-written video."""

    def __init__(self, path: str, fps: float, size: tuple[int, int], force: bool):
        import cv2

        check_destination(path, force)
        folder = os.path.dirname(os.path.abspath(path)) or "."
        self.made = make_parents(folder)
        suffix = os.path.splitext(path)[1].lower()
        # named like segdeploy.files' temp files (".<name>.<random>.tmp.<suffix>", the suffix picks the container), so
        # the next writer of this video removes what a killed run left
        self.path, self.force = path, force
        self.tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.urandom(6).hex()}.tmp{suffix}")
        fourcc = cv2.VideoWriter_fourcc(*("mp4v" if suffix in (".mp4", ".m4v", ".mov") else "MJPG"))
        self.writer = cv2.VideoWriter(self.tmp, fourcc, fps, (size[1], size[0]))
        if not self.writer.isOpened():
            self._remove()
            remove_made(self.made)
            raise InputError(f"OpenCV cannot write a {suffix} video (try .mp4 or .avi)")
        self.frames = 0

    @staticmethod
    def check(path: str) -> None:
        if os.path.splitext(path)[1].lower() not in VIDEO_OUTPUT_SUFFIXES:
            raise InputError(f"a video's --output is a video file ({', '.join(VIDEO_OUTPUT_SUFFIXES)}), not {path}")

    def write(self, frame: np.ndarray) -> None:
        self.writer.write(frame)
        self.frames += 1

    def _remove(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.tmp)

    def close(self, ok: bool) -> None:
        self.writer.release()
        if ok and self.frames:
            try:
                move_into_place(self.tmp, self.path, self.force)
            finally:
                self._remove()
        else:
            self._remove()
            remove_made(self.made)
