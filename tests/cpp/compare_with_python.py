"""C++ against Python on one artifact: run segdeploy-infer on the photos in tests/data (and rescaled copies of them
at awkward sizes, which exercise the resize policy of dynamic artifacts), run the same artifact through Python's
preprocessing and ONNX Runtime, and compare the network inputs, the logits and the masks.

Passes when the inputs are equal, the logits agree to --logits-atol (the same ONNX Runtime version on both sides)
and the masks agree on at least --min-agreement of the pixels. Run by CTest (cpp/tests/CMakeLists.txt).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

import cv2
import numpy as np
import onnxruntime as ort

from segdeploy import preprocess
from segdeploy.artifact import read_manifest

# (height, width) of extra test images made from each photo: portrait, panorama, small (upscaled), odd sizes
EXTRA_SIZES = "517x333,240x1000,97x131"


def make_images(photos: list[str], folder: str, sizes: list[tuple[int, int]]) -> list[str]:
    os.makedirs(folder, exist_ok=True)
    paths = []
    for photo in photos:
        image = preprocess.read_image(photo)
        stem = os.path.splitext(os.path.basename(photo))[0]
        path = os.path.join(folder, os.path.basename(photo))
        cv2.imwrite(path, image) if photo.lower().endswith(".png") else _copy(photo, path)
        paths.append(path)
        for h, w in sizes:
            path = os.path.join(folder, f"{stem}_{h}x{w}.png")
            cv2.imwrite(path, cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA))
            paths.append(path)
    return paths


def _copy(src: str, dst: str) -> None:
    with open(src, "rb") as f, open(dst, "wb") as g:
        g.write(f.read())


def network_size(manifest, height: int, width: int) -> tuple[int, int, int]:
    profile = manifest.profile
    if profile.static:
        return profile.opt
    resize = manifest.preprocessing.resize
    h, w = preprocess.fit_size(height, width, scale=tuple(resize.scale), multiple=resize.round_to)
    return (profile.batch.min, int(np.clip(h, profile.height.min, profile.height.max)),
            int(np.clip(w, profile.width.min, profile.width.max)))


def python_reference(session, manifest, image: np.ndarray):
    """(input, output, mask) the Python way."""
    batch, h, w = network_size(manifest, *image.shape[:2])
    spec = manifest.input
    if spec.dtype == "uint8":
        x = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
        if spec.channel_order == "RGB":
            x = x[:, :, ::-1]
        x = np.ascontiguousarray(x[None])
    else:
        x = preprocess.prepare(image, manifest.preprocessing, (h, w))
    x = np.repeat(x, batch, axis=0)
    out = session.run([manifest.output.name], {spec.name: x})[0]
    if manifest.output.kind == "mask":
        mask = cv2.resize(out[0].astype(np.uint16), (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
    else:
        mask = preprocess.logits_to_mask(out, image.shape[:2], manifest.preprocessing.align_corners)[0]
    return x, out, mask


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--infer", required=True, help="the segdeploy-infer binary")
    p.add_argument("--artifact", required=True)
    p.add_argument("--images", required=True, help="folder of photos")
    p.add_argument("--work", required=True, help="scratch folder")
    p.add_argument("--sizes", default=EXTRA_SIZES,
                   help=f"HxW of rescaled copies of each photo to test too, comma-separated (default {EXTRA_SIZES})")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--logits-atol", type=float, default=1e-5)
    p.add_argument("--min-agreement", type=float, default=0.9999)
    args = p.parse_args()

    photos = sorted(os.path.join(args.images, f) for f in os.listdir(args.images)
                    if f.lower().endswith((".jpg", ".jpeg", ".png")))
    images_dir, out_dir = os.path.join(args.work, "images"), os.path.join(args.work, "cpp")
    sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes.split(",") if size]
    images = make_images(photos, images_dir, sizes)
    run = subprocess.run([args.infer, args.artifact, images_dir, "-o", out_dir, "--save-tensors", "--force",
                          "--threads", str(args.threads)], capture_output=True, text=True)
    print(run.stdout, end="")
    if run.returncode != 0:
        print(f"segdeploy-infer exited {run.returncode}: {run.stderr.strip()}")
        return 1

    manifest = read_manifest(args.artifact)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(args.artifact, options, providers=["CPUExecutionProvider"])

    failures = 0
    for path in images:
        stem = os.path.splitext(os.path.basename(path))[0]
        x, out, mask = python_reference(session, manifest, preprocess.read_image(path))
        cpp_x = np.load(os.path.join(out_dir, f"{stem}_input.npy"))
        cpp_mask = cv2.imread(os.path.join(out_dir, f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        problems = []
        if cpp_x.shape != x.shape or cpp_x.dtype != x.dtype:
            problems.append(f"input {cpp_x.dtype}{cpp_x.shape} vs {x.dtype}{x.shape}")
            input_diff = float("nan")
        else:
            input_diff = float(np.abs(cpp_x.astype(np.float64) - x.astype(np.float64)).max())
            if input_diff > 0:
                problems.append(f"inputs differ by up to {input_diff:.3g}")
        line = f"{os.path.basename(path)}: input {'x'.join(map(str, x.shape))} max |diff| {input_diff:.3g}"
        if manifest.output.kind != "mask":
            cpp_logits = np.load(os.path.join(out_dir, f"{stem}_logits.npy"))
            logits_diff = float(np.abs(cpp_logits - out).max()) if cpp_logits.shape == out.shape else float("inf")
            line += f", logits max |diff| {logits_diff:.3g}"
            if not logits_diff <= args.logits_atol:
                problems.append(f"logits differ by {logits_diff:.3g} > {args.logits_atol:g}")
        agreement = float((cpp_mask == mask).mean()) if cpp_mask is not None and cpp_mask.shape == mask.shape else 0.0
        line += f", mask agreement {100 * agreement:.4f}%"
        if agreement < args.min_agreement:
            problems.append(f"mask agreement {100 * agreement:.4f}% < {100 * args.min_agreement:.2f}%")
        print(line + ("" if not problems else "  FAIL: " + "; ".join(problems)))
        failures += bool(problems)
    print(f"{len(images) - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
