"""segdeploy predict: one reference forward on a real image; prints the mask's class histogram."""
from __future__ import annotations

import os

import numpy as np
import torch

from segdeploy import models, preprocess
from segdeploy.errors import InputError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("predict", help="segment an image with the PyTorch reference model")
    p.add_argument("--model", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--checkpoint", help="the authors' checkpoint (.pth); without it, the golden-recipe weights")
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


def run(args) -> int:
    size = parse_size(args.size)
    if args.output and os.path.exists(args.output) and not args.force:
        raise InputError(f"{args.output} exists; pass --force to overwrite it")
    image = preprocess.read_image(args.image)
    model = models.create(args.model, checkpoint=args.checkpoint,
                          **({"nmf_bases": "fixed"} if "nmf_bases" in models.get_spec(args.model).options else {}))
    spec = model.spec
    if args.checkpoint is None:
        models.load_recipe_weights(model, seed=0)
        print("note: no --checkpoint given; using the deterministic golden-recipe weights, so the classes below "
              "show the pipeline works, not what is in the image")
    x = preprocess.prepare(image, spec, size)
    with torch.inference_mode():
        logits = model(torch.from_numpy(x)).numpy()
    mask = preprocess.logits_to_mask(logits, image.shape[:2], spec.align_corners)[0]
    print(f"{args.model}: image {image.shape[1]}x{image.shape[0]} -> input {x.shape[3]}x{x.shape[2]} -> "
          f"logits {logits.shape[3]}x{logits.shape[2]}; {len(np.unique(mask))} classes in the mask")
    for name, share in preprocess.class_histogram(mask, spec.class_names(model.num_classes), args.top):
        print(f"  {share:6.2f}%  {name}")
    if args.output:
        import cv2

        from segdeploy.io import write_bytes_atomic

        ok, png = cv2.imencode(".png", preprocess.colorize(mask, spec.palette(model.num_classes)))
        write_bytes_atomic(args.output, png.tobytes(), force=args.force)
        print(f"wrote {args.output}")
    return 0
