"""segdeploy dataset synth: make the synthetic texture dataset (ADE20K layout) from a seed."""
from __future__ import annotations

import sys
import time

from segdeploy.commands import common
from segdeploy.datasets.synthetic import MAX_IMAGES, STYLES, SynthConfig, write_dataset

EXAMPLE = """examples:
  segdeploy dataset synth --out data/synth16 --classes 16 --train 400 --val 100 --size 512x512 --seed 0
  segdeploy eval --model cgrseg_t --checkpoint CKPT --data data/synth16"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("dataset", help="make datasets (the synthetic texture dataset)",
                              epilog=EXAMPLE, formatter_class=common.HelpFormatter)
    sub = p.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)
    s = sub.add_parser("synth", help="scenes of K texture classes with labels, train and validation splits",
                       description=__doc__, epilog=EXAMPLE, formatter_class=common.HelpFormatter)
    s.add_argument("--out", required=True, help="folder to write (images/, annotations/, dataset.json)")
    s.add_argument("--classes", type=int, default=16, help="number of classes K, 2-24 (default 16)")
    s.add_argument("--train", type=common.int_range(0, MAX_IMAGES), default=400, help="training images (default 400)")
    s.add_argument("--val", type=common.int_range(0, MAX_IMAGES), default=100, help="validation images (default 100)")
    common.add_size(s, help_text="image size")
    s.add_argument("--seed", type=common.int_range(0, 2**32 - 1), default=0)
    s.add_argument("--style", default="clean", choices=tuple(STYLES),
                   help="clean: well-separated classes; noisy: some blur, noise, jitter and clutter (the low-margin "
                        "fixture's); hard: the most of each")
    common.add_force(s, "--out if it is a dataset made by this command")
    s.set_defaults(func=run)


def run(args) -> int:
    height, width = common.parse_size(args.size)
    config = SynthConfig(num_classes=args.classes, train=args.train, val=args.val, height=height, width=width,
                         seed=args.seed, style=args.style)
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty():
            print(f"\r{done}/{total} images", end="" if done < total else "\n", file=sys.stderr, flush=True)

    write_dataset(args.out, config, force=args.force, progress=progress)
    print(f"wrote {args.out}: {config.num_classes} classes ({config.style}), {config.train} training and "
          f"{config.val} validation images of {height}x{width} in {time.perf_counter() - start:.1f} s (ADE20K "
          "layout; labels 1..K, read with reduce_zero_label)")
    return 0
