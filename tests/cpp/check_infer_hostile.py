"""segdeploy-infer against what a hostile user hands it: the checks Python makes, made by the C++ library too.
A tampered mean, a wrong graph hash, zeroed weights, a truncated JPEG and a truncated video are refused with one
`segdeploy-infer: error:` line and exit 2, leaving no output folder behind; a manifest that records a failed
validation runs with a warning. Run by CTest with the static export (python.infer_hostile)."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import cv2
import numpy as np
import onnx

from segdeploy.artifact.manifest import ONNX_METADATA_KEY
from segdeploy.artifact.manifest_store import sidecar_path


def run(binary: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=300)


def with_manifest(source: str, target: str, change) -> str:
    """A copy of ``source`` whose manifest (embedded and sidecar alike) ``change`` edited; the graph untouched."""
    model = onnx.load(source)
    props = {p.key: p for p in model.metadata_props}
    document = json.loads(props[ONNX_METADATA_KEY].value)
    change(document)
    props[ONNX_METADATA_KEY].value = json.dumps(document)
    onnx.save(model, target)
    with open(sidecar_path(target), "w") as f:
        json.dump(document, f)
    return target


def zeroed_weights(source: str, target: str) -> str:
    """4 kB of the file zeroed a third of the way in: it still parses and runs, computing something else."""
    data = bytearray(open(source, "rb").read())
    at = len(data) // 3
    data[at:at + 4096] = bytes(4096)
    with open(target, "wb") as f:
        f.write(data)
    shutil.copy(sidecar_path(source), sidecar_path(target))
    return target


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--infer", required=True)
    p.add_argument("--artifact", required=True, help="a static logits export")
    p.add_argument("--image", required=True)
    args = p.parse_args()
    results = []

    def check(name: str, proc: subprocess.CompletedProcess, code: int, fragment: str, out: str | None = None,
              stream: str = "stderr") -> None:
        text = getattr(proc, stream)
        ok = proc.returncode == code and fragment in text
        if ok and code == 2:
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            ok = len(lines) == 1 and lines[0].startswith("segdeploy-infer: error: ")
        if ok and out is not None and code == 2:
            ok = not os.path.exists(out)  # a failed run leaves no (empty) output folder
        results.append(ok)
        print(f"{'ok  ' if ok else 'FAIL'} {name}" + ("" if ok else f": exit {proc.returncode}, {text.strip()!r}"))

    with tempfile.TemporaryDirectory() as tmp:
        def out(name: str) -> str:
            return os.path.join(tmp, "out", name)

        check("the export itself (its graph hash, as C++ computes it, is Python's)",
              run(args.infer, args.artifact, args.image, "-o", out("good")), 0, "total", stream="stdout")
        mean = with_manifest(args.artifact, os.path.join(tmp, "mean.onnx"),
                             lambda d: d["preprocessing"].__setitem__("mean", [0.0, 0.0, 0.0]))
        check("a tampered mean", run(args.infer, mean, args.image, "-o", out("mean")), 2, "preprocessing mean",
              out("mean"))
        wrong = with_manifest(args.artifact, os.path.join(tmp, "wrong.onnx"),
                              lambda d: d.__setitem__("graph_sha256", "ab" * 32))
        check("a wrong graph hash", run(args.infer, wrong, args.image, "-o", out("wrong")), 2,
              "does not hash to what its manifest records", out("wrong"))
        anonymous = with_manifest(args.artifact, os.path.join(tmp, "anonymous.onnx"),
                                  lambda d: d["tool_versions"].pop("segdeploy"))
        check("a manifest naming no segdeploy release", run(args.infer, anonymous, args.image, "-o", out("anon")),
              2, "no segdeploy release", out("anon"))
        zeroed = zeroed_weights(args.artifact, os.path.join(tmp, "zeroed.onnx"))
        check("zeroed weights", run(args.infer, zeroed, args.image, "-o", out("zeroed")), 2, "does not hash",
              out("zeroed"))
        failed = with_manifest(args.artifact, os.path.join(tmp, "failed.onnx"),
                               lambda d: d["validation"].__setitem__("passed", False))
        proc = run(args.infer, failed, args.image, "-o", out("failed"))
        check("a recorded failed validation warns", proc, 0, "segdeploy-infer: warning:")

        data = open(args.image, "rb").read()
        for name, cut in (("a truncated JPEG", len(data) // 2), ("a JPEG without its last 100 bytes", -100)):
            path = os.path.join(tmp, "cut.jpg")
            with open(path, "wb") as f:
                f.write(data[:cut])
            check(name, run(args.infer, args.artifact, path, "-o", out("cut")), 2, "truncated or corrupt",
                  out("cut"))

        image = cv2.resize(cv2.imread(args.image), (160, 128))
        video = os.path.join(tmp, "clip.avi")
        writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 5, (160, 128))
        for shift in range(12):
            writer.write(np.roll(image, 10 * shift, axis=1))
        writer.release()
        clip = open(video, "rb").read()
        cut = os.path.join(tmp, "cut.avi")
        with open(cut, "wb") as f:
            f.write(clip[: len(clip) * 6 // 10])
        check("a truncated video", run(args.infer, args.artifact, cut, "-o", out("video")), 2,
              "truncated or damaged", out("video"))
        check("the whole video", run(args.infer, args.artifact, video, "-o", out("video")), 0, "12 frames",
              stream="stdout")

    failures = results.count(False)
    print(f"{len(results) - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
