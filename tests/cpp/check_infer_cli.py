"""segdeploy-infer as a user meets it: bad input is one `segdeploy-infer: error:` line and exit code 2; images,
folders and videos write their outputs; existing outputs need --force. Run by CTest with the static export."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper

from segdeploy.artifact.manifest import ONNX_METADATA_KEY
from segdeploy.artifact.manifest_store import sidecar_path


def run(binary: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=300)


def tiny_onnx_with_manifest(path: str, document: dict) -> None:
    """A graph ONNX Runtime could load, carrying `document` as its manifest."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 2, 2])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 2, 2])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["input"], ["logits"])], "g", [x], [y]))
    entry = model.metadata_props.add()
    entry.key, entry.value = ONNX_METADATA_KEY, json.dumps(document)
    onnx.save(model, path)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--infer", required=True)
    p.add_argument("--artifact", required=True, help="a static logits export")
    p.add_argument("--image", required=True)
    args = p.parse_args()
    results = []

    def check(name: str, proc: subprocess.CompletedProcess, code: int, fragment: str, stream: str = "stderr") -> None:
        text = getattr(proc, stream)
        ok = proc.returncode == code and fragment in text
        if ok and code == 2:
            lines = [line for line in proc.stderr.splitlines() if line.startswith("segdeploy-infer: error: ")]
            ok = len(lines) == 1 and "Traceback" not in proc.stderr
        results.append(ok)
        print(f"{'ok  ' if ok else 'FAIL'} {name}" + ("" if ok else f": exit {proc.returncode}, {text.strip()!r}"))

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out")
        check("no arguments", run(args.infer), 2, "expected ARTIFACT")
        check("missing artifact", run(args.infer, os.path.join(tmp, "no.onnx"), args.image, "-o", out), 2,
              "artifact not found")
        check("missing input", run(args.infer, args.artifact, os.path.join(tmp, "no.jpg"), "-o", out), 2,
              "input not found")
        check("bad --threads", run(args.infer, args.artifact, args.image, "-o", out, "--threads", "two"), 2,
              "--threads must be a whole number")
        check("absent execution provider", run(args.infer, args.artifact, args.image, "-o", out, "--device", "cuda"),
              2, "CUDAExecutionProvider")
        text = os.path.join(tmp, "text.jpg")
        with open(text, "w") as f:
            f.write("not an image")
        check("unreadable image", run(args.infer, args.artifact, text, "-o", out), 2, "cannot decode image")

        with open(sidecar_path(args.artifact)) as f:
            document = json.load(f)
        newer = os.path.join(tmp, "newer.onnx")
        tiny_onnx_with_manifest(newer, {**document, "schema_version": 3})
        check("another schema version", run(args.infer, newer, args.image, "-o", out), 2,
              "manifest schema_version 3")

        first = run(args.infer, args.artifact, args.image, "-o", out, "--overlay")
        check("image", first, 0, "total", "stdout")
        stem = os.path.splitext(os.path.basename(args.image))[0]
        mask = cv2.imread(os.path.join(out, stem + ".png"), cv2.IMREAD_UNCHANGED)
        image = cv2.imread(args.image)
        results.append(mask is not None and mask.shape == image.shape[:2] and mask.dtype == np.uint8
                       and os.path.isfile(os.path.join(out, stem + "_overlay.jpg")))
        print(f"{'ok  ' if results[-1] else 'FAIL'} mask at the image's size and an overlay")
        check("existing output", run(args.infer, args.artifact, args.image, "-o", out), 2, "pass --force")
        check("--force", run(args.infer, args.artifact, args.image, "-o", out, "--force"), 0, "total", "stdout")

        video = os.path.join(tmp, "clip.avi")
        writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 5, (image.shape[1], image.shape[0]))
        for shift in range(3):
            writer.write(np.roll(image, 40 * shift, axis=1))
        writer.release()
        proc = run(args.infer, args.artifact, video, "-o", out, "--overlay")
        check("video", proc, 0, "3 frames: end to end", "stdout")
        capture = cv2.VideoCapture(os.path.join(out, "clip.avi"))
        frames = 0
        while capture.read()[0]:
            frames += 1
        results.append(frames == 3)
        print(f"{'ok  ' if frames == 3 else 'FAIL'} the output video has {frames} of 3 frames")

    failed = results.count(False)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
