"""segdeploy predict: segment an image, a folder or glob of images, or a video, with a model or an artifact.

A model runs, by default, on the backend segdeploy bench recorded as the fastest for it on this CPU, else on the
fastest usable CPU backend (OpenVINO when installed, then ONNX Runtime, then PyTorch), and says which and why; for
an artifact backend it is exported once, as one dynamic graph kept in the shared export cache, that takes images of
any shape (as eval does). One image prints its class histogram and, with ``--output FILE``, writes
its colour mask; many images and videos write into ``--output DIR`` (or a video file) with a progress bar and a
latency summary.
"""
from __future__ import annotations

import itertools
import os
import time

from segdeploy import preprocess
from segdeploy.commands import common
from segdeploy.console import ProgressBar
from segdeploy.errors import InputError
from segdeploy.export.cache import DEFAULT_CACHE_DIR
from segdeploy.files.destinations import make_parents, remove_made
from segdeploy.media import (
    VideoOut,
    check_image_output,
    label_png,
    overlay,
    resolve_source,
    video_frames,
    video_shortfall,
    write_image,
)

EXAMPLES = """examples:
  segdeploy predict --model cgrseg_t --source photo.jpg --output mask.png
  segdeploy predict --model cgrseg_t --checkpoint ckpt.pth --source photos/ --output masks/ --overlay --labels
  segdeploy predict --artifact artifacts/cgrseg_t_512x512_dynamic.onnx --source 'frames/*.jpg' --output out/
  segdeploy predict --model segnext_t --source clip.mp4 --output clip_masks.mp4 --overlay"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("predict", help="segment images or a video (fastest CPU backend by default)",
                              description=__doc__.split("\n\n")[0], epilog=EXAMPLES,
                              formatter_class=common.HelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", metavar="NAME", help=f"registered model ({common.MODEL_NAMES_HINT})")
    what.add_argument("--artifact", metavar="FILE", help="an artifact segdeploy exported (preprocessing from its "
                                                         "manifest)")
    p.add_argument("--source", "--image", dest="source", required=True, metavar="IMAGE|DIR|GLOB|VIDEO",
                   help="an image, a folder of images, a quoted glob, or a video")
    common.add_checkpoint(p)
    common.add_backend(p, "backend (default: the fastest that segdeploy bench recorded for the model on this CPU, "
                          "else the fastest usable CPU backend)")
    common.add_size(p, default=None, help_text="network input size (default: the test resize policy)")
    p.add_argument("--output", metavar="FILE|DIR",
                   help="one image: the colour mask PNG; images: a folder; video: the output video (.mp4/.avi)")
    p.add_argument("--overlay", action="store_true", help="blend the mask over the image (images: *_overlay.jpg; "
                                                          "video: overlay frames instead of the bare mask)")
    p.add_argument("--alpha", type=common.finite_float(0, 1), default=0.5,
                   help="overlay opacity of the mask, 0-1 (default 0.5)")
    p.add_argument("--labels", action="store_true", help="also write raw class-index PNGs (*_labels.png)")
    common.add_threads(p)
    p.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR, help=f"the export cache (default {DEFAULT_CACHE_DIR})")
    p.add_argument("--no-simplify", dest="simplify", action="store_false", help="export without the simplifier")
    common.add_force(p, "existing outputs")
    p.add_argument("--top", type=common.positive_int, default=8, help="classes to list for one image (default 8)")
    p.set_defaults(func=run)


def run(args) -> int:
    import numpy as np

    if not 0.0 <= args.alpha <= 1.0:
        raise InputError(f"--alpha must be between 0 and 1, not {args.alpha}")
    source = resolve_source(args.source)
    size = common.parse_size(args.size)
    first = None  # an image of the first input's size (decoded only when its header does not tell the size)
    if source.kind == "image":
        if args.output:
            check_image_output(args.output)
        common.check_outputs(args.force, args.output, inputs=[source.paths[0]])
        dims = preprocess.image_dimensions(source.paths[0])
        if dims:
            preprocess.check_image_size(*dims, source.paths[0])
        first = np.empty((*dims, 0), np.uint8) if dims else _decode(source.paths[0])[0]
    elif source.kind == "video":
        if args.output:
            VideoOut.check(args.output)
        frames, info = video_frames(source.paths[0])
        common.check_outputs(args.force, args.output, inputs=[source.paths[0]])
        preprocess.check_image_size(info["height"], info["width"], source.paths[0])
        first = np.empty((info["height"], info["width"], 0), np.uint8)
    elif args.output and os.path.isfile(args.output):
        raise InputError(f"--output {args.output} is a file; many images need a folder")
    from segdeploy.evaluation.segment import open_segmenter  # PyTorch and the runtimes: after the cheap checks
    from segdeploy.evaluation.validate import verify_graph

    with common.status("loading" + (f" {args.model}" if args.model else f" {args.artifact}")) as say:
        segmenter = open_segmenter(model=args.model, checkpoint=args.checkpoint, artifact=args.artifact,
                                   backend=args.backend, size=size, threads=args.threads, cache_dir=args.cache_dir,
                                   simplify=args.simplify, verify=verify_graph, progress=say)
    if segmenter.backend_reason:
        print(f"backend {segmenter.backend_reason}")
    if args.checkpoint is None and args.model:
        print("note: no --checkpoint given; using the deterministic golden-recipe weights, so the masks show the "
              "pipeline works, not what is in the images")
    note = ResizeNote(segmenter, args.artifact)
    with segmenter:
        if source.kind == "image":
            segmenter.check_image(*first.shape[:2], source.paths[0])
            image, decode_ms = _decode(source.paths[0])  # again if the header had no size: timed as a user's call
            return _one_image(args, segmenter, source.paths[0], image, decode_ms, note)
        if source.kind == "video":
            segmenter.check_image(*first.shape[:2], source.paths[0])
            return _video(args, segmenter, source.paths[0], frames, info, note)
        return _images(args, segmenter, source.paths, note)


def _decode(path):
    start = time.perf_counter()
    image = preprocess.read_image(path)
    return image, (time.perf_counter() - start) * 1e3


def _colour(segmenter, labels, stages: dict):
    start = time.perf_counter()
    colour = segmenter.colour(labels)
    stages["mask"] = (time.perf_counter() - start) * 1e3
    return colour


def _split_line(samples: list[dict]) -> str:
    from segdeploy.evaluation.segment import split_text, stage_split

    return split_text(stage_split(samples))


class ResizeNote:
    """Says once, at the first image it applies to, that a static artifact squeezes images to its own size."""

    def __init__(self, segmenter, artifact: str | None):
        profile = segmenter.profile
        self.size = (profile.height.opt, profile.width.opt) if artifact and profile is not None and \
            profile.static else None
        self.artifact = artifact

    def __call__(self, image_size) -> None:
        if self.size is None or tuple(image_size) == self.size:
            return
        h, w = self.size
        print(f"note: {os.path.basename(self.artifact)} is a static {h}x{w} artifact: every image is resized to "
              f"{h}x{w} (HxW; its aspect ratio is not kept) and the mask back to the image's size; an artifact "
              "exported with --dynamic keeps the aspect ratio")
        self.size = None


def _one_image(args, segmenter, path, image, decode_ms: float, note) -> int:
    import numpy as np

    note(image.shape[:2])
    result = segmenter(image)
    mask = result.labels
    h, w = result.network_size
    stages = {"decode": decode_ms, **result.stages_ms}
    colour = _colour(segmenter, mask, stages) if args.output else None
    print(f"{segmenter.description}: image {image.shape[0]}x{image.shape[1]} -> input {h}x{w} (HxW) in "
          f"{result.latency_ms:.0f} ms; {len(np.unique(mask))} classes in the mask")
    print(_split_line([stages]))
    for name, share in preprocess.class_histogram(mask, segmenter.class_names, args.top):
        print(f"  {share:6.2f}%  {name}")
    if args.output:
        write_image(args.output, colour, args.force)
        print(f"wrote {args.output}")
        stem = os.path.splitext(args.output)[0]
        if args.overlay:
            print(f"wrote {write_image(stem + '_overlay.jpg', _overlay(args, image, mask, segmenter), args.force)}")
        if args.labels:
            print(f"wrote {write_image(stem + '_labels.png', label_png(mask), args.force)}")
    return 0


def _overlay(args, image, mask, segmenter):
    return overlay(image, preprocess.colorize(mask, segmenter.palette), args.alpha)


def _summary(latencies: list[float], wall_s: float, count: int, unit: str) -> str:
    import numpy as np

    a = np.asarray(latencies)
    return (f"{count} {unit if count != 1 else unit[:-1]} in {wall_s:.1f} s ({count / wall_s:.2f}/s end to end); "
            f"network latency p50 {np.percentile(a, 50):.1f} ms, p90 {np.percentile(a, 90):.1f} ms, "
            f"mean {a.mean():.1f} ms")


def _images(args, segmenter, paths, note) -> int:
    out_dir = args.output
    made = []
    if out_dir:
        planned = []
        for path in paths:
            stem = os.path.join(out_dir, os.path.splitext(os.path.basename(path))[0])
            planned += [stem + "_mask.png"] + ([stem + "_overlay.jpg"] if args.overlay else []) + \
                ([stem + "_labels.png"] if args.labels else [])
        common.check_outputs(args.force, *planned, inputs=paths)
        made = make_parents(os.path.abspath(out_dir))
    try:
        return _segment_images(args, segmenter, paths, out_dir, note)
    finally:
        remove_made(made)  # only where still empty: a run that failed before its first mask leaves no folder


def _segment_images(args, segmenter, paths, out_dir, note) -> int:
    latencies, samples, start = [], [], time.perf_counter()
    with ProgressBar("segmenting", len(paths), "images") as bar:
        for i, path in enumerate(paths):
            dims = preprocess.image_dimensions(path)
            if dims:
                segmenter.check_image(*dims, path)
            image, decode_ms = _decode(path)
            note(image.shape[:2])
            result = segmenter(image)
            latencies.append(result.latency_ms)
            samples.append({"decode": decode_ms, **result.stages_ms})
            if out_dir:
                stem = os.path.join(out_dir, os.path.splitext(os.path.basename(path))[0])
                write_image(stem + "_mask.png", _colour(segmenter, result.labels, samples[-1]), args.force)
                if args.overlay:
                    write_image(stem + "_overlay.jpg", _overlay(args, image, result.labels, segmenter), args.force)
                if args.labels:
                    write_image(stem + "_labels.png", label_png(result.labels), args.force)
            bar.update(i + 1, f"{(i + 1) / (time.perf_counter() - start):.2f} img/s")
    print(f"{segmenter.description}: " + _summary(latencies, time.perf_counter() - start, len(paths), "images"))
    print(_split_line(samples))
    if out_dir:
        print(f"wrote {len(paths)} masks into {out_dir}")
    return 0


def _video(args, segmenter, path, frames, info, note) -> int:
    out = VideoOut(args.output, info["fps"], (info["height"], info["width"]), args.force) if args.output else None
    latencies, samples, start, ok = [], [], time.perf_counter(), False
    frames = iter(frames)
    try:
        with ProgressBar("segmenting", info["frames"] or None, "frames") as bar:
            for i in itertools.count():
                decode_start = time.perf_counter()
                frame = next(frames, None)
                if frame is None:
                    break
                decode_ms = (time.perf_counter() - decode_start) * 1e3
                note(frame.shape[:2])
                result = segmenter(frame)
                latencies.append(result.latency_ms)
                samples.append({"decode": decode_ms, **result.stages_ms})
                if out is not None:
                    colour = _colour(segmenter, result.labels, samples[-1])
                    out.write(overlay(frame, colour, args.alpha) if args.overlay else colour)
                bar.update(i + 1, f"{(i + 1) / (time.perf_counter() - start):.2f} fps")
        lost = video_shortfall(path, info, len(latencies))
        ok = bool(latencies) and lost is None
    finally:
        if out is not None:
            out.close(ok)
    if not latencies:
        raise InputError(f"{path} has no frames OpenCV can decode")
    if lost:
        raise InputError(f"{lost}; nothing was written")
    print(f"{segmenter.description}: " + _summary(latencies, time.perf_counter() - start, len(latencies), "frames"))
    print(_split_line(samples))
    if out is not None:
        print(f"wrote {args.output} ({out.frames} frames)")
    return 0
