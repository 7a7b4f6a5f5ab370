"""segdeploy predict: segment a real image and print the mask's class histogram.

Runs on the fastest CPU backend available by default (OpenVINO when installed, then ONNX Runtime, then PyTorch; see
``runtimes.registry.fastest_cpu_backend``). ONNX backends run a static export at the image's network input size,
made (and validated against PyTorch) on first use and cached under ``--cache-dir`` (``artifacts/predict/``).
"""
from __future__ import annotations

import hashlib
import os

import numpy as np

from segdeploy import models, preprocess
from segdeploy.errors import InputError
from segdeploy.runtimes.registry import BACKEND_INPUT, create_runner, fastest_cpu_backend


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("predict", help="segment an image (fastest CPU backend by default)")
    p.add_argument("--model", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--checkpoint", help="the authors' checkpoint (.pth); without it, the golden-recipe weights")
    p.add_argument("--backend", default="auto",
                   help="torch, onnxruntime or openvino; auto (default) picks the fastest usable CPU backend")
    p.add_argument("--cache-dir", default=os.path.join("artifacts", "predict"),
                   help="where ONNX backends keep their exports (default: artifacts/predict)")
    p.add_argument("--size", metavar="HxW", help="network input size (default: the mmseg test resize policy)")
    p.add_argument("--output", help="write the colour mask (PNG) here")
    p.add_argument("--force", action="store_true", help="overwrite --output if it exists")
    p.add_argument("--top", type=int, default=8, help="classes to list")
    p.set_defaults(func=run)


def parse_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError(f"--size must look like 512x512, not {text!r}") from None
    if h <= 0 or w <= 0:
        raise InputError(f"--size must be positive, not {text!r}")
    return h, w


def _weights_tag(checkpoint: str | None) -> str:
    if checkpoint is None:
        return "recipe"
    stat = os.stat(checkpoint)
    key = f"{os.path.abspath(checkpoint)}:{stat.st_size}:{stat.st_mtime_ns}"
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def cached_onnx(model: str, checkpoint: str | None, height: int, width: int, cache_dir: str) -> str:
    """A validated static export of ``model`` at this size, reused across calls with the same weights file."""
    from segdeploy.export.onnx import export_onnx

    path = os.path.join(cache_dir, f"{model}_{height}x{width}_{_weights_tag(checkpoint)}.onnx")
    if not os.path.isfile(path):
        print(f"exporting {model} at {height}x{width} to {path} (once; validated against PyTorch)")
        # opset 20 keeps GELU one node, which ONNX Runtime fuses (the bench exports the same way)
        export_onnx(model, path, checkpoint=checkpoint, height=height, width=width, opset=20, force=True)
    return path


def run(args) -> int:
    size = parse_size(args.size)
    if args.output and os.path.exists(args.output) and not args.force:
        raise InputError(f"{args.output} exists; pass --force to overwrite it")
    spec = models.get_spec(args.model)
    backend = fastest_cpu_backend() if args.backend == "auto" else args.backend
    if backend not in BACKEND_INPUT or backend == "tensorrt":
        raise InputError(f"--backend must be auto, torch, onnxruntime or openvino, not {args.backend!r}")
    image = preprocess.read_image(args.image)
    x = preprocess.prepare(image, spec, size)
    height, width = x.shape[2:]
    if BACKEND_INPUT[backend] == "model":
        runner = create_runner(backend, model=args.model, checkpoint=args.checkpoint)
    else:
        artifact = cached_onnx(args.model, args.checkpoint, height, width, args.cache_dir)
        runner = create_runner(backend, artifact=artifact)
    with runner:
        logits = runner.infer({runner.inputs()[0].name: x})[runner.outputs()[0].name]
        latency_ms = runner.last_timing.host_ms
    num_classes = logits.shape[1]
    if args.checkpoint is None:
        print("note: no --checkpoint given; using the deterministic golden-recipe weights, so the classes below "
              "show the pipeline works, not what is in the image")
    mask = preprocess.logits_to_mask(logits, image.shape[:2], spec.align_corners)[0]
    print(f"{args.model} on {backend}: image {image.shape[0]}x{image.shape[1]} -> input {height}x{width} -> "
          f"logits {logits.shape[2]}x{logits.shape[3]} (HxW) in {latency_ms:.0f} ms; {len(np.unique(mask))} classes "
          "in the mask")
    for name, share in preprocess.class_histogram(mask, spec.class_names(num_classes), args.top):
        print(f"  {share:6.2f}%  {name}")
    if args.output:
        import cv2

        from segdeploy.io import write_bytes_atomic

        ok, png = cv2.imencode(".png", preprocess.colorize(mask, spec.palette(num_classes)))
        write_bytes_atomic(args.output, png.tobytes(), force=args.force)
        print(f"wrote {args.output}")
    return 0
