"""segdeploy fixtures: train (or find in the cache) the accuracy fixtures and print their validation mIoU."""
from __future__ import annotations

from segdeploy.commands import common
from segdeploy.console import print_table
from segdeploy.errors import InputError
from segdeploy.training.fixtures import (
    FIXTURES,
    QUICK_FIXTURE,
    QUICK_OUTPUT,
    default_cache_dir,
    make_fixture,
    place,
    resolve,
)

EXAMPLE = """examples:
  segdeploy fixtures --quick                  # cgrseg_t on 8 classes, a couple of minutes: artifacts/quick/
  segdeploy fixtures                          # every fixture (cached ones are reused)
  segdeploy fixtures --model cgrseg_t,segnext_t_synth16 --cache-dir /tmp/fixtures
  segdeploy eval --model cgrseg_t --checkpoint ~/.cache/segdeploy/fixtures/cgrseg_t_synth16-<key>/checkpoint.pth \\
      --data ~/.cache/segdeploy/fixtures/datasets/synth16-clean-<key>

Each fixture trains one T variant on the synthetic dataset on the CPU (seeded, 2 threads, minutes to a quarter of an
hour each) and is cached under a key of its recipe and the versions of the dataset generator and the trainer.
--quick trains the small one (cgrseg_t on 8 classes at 256x256) and copies its checkpoint and dataset to
artifacts/quick/ (--output), then prints the INT8 export and the eval to run with them."""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("fixtures", help="train the accuracy fixtures (cached) and print their mIoU",
                              description=__doc__, epilog=EXAMPLE,
                              formatter_class=common.HelpFormatter)
    p.add_argument("--model",
                   help="all (default), or a comma-separated list of fixture or model names; fixtures: "
                        + ", ".join(FIXTURES))
    p.add_argument("--quick", action="store_true",
                   help=f"the quick fixture only ({QUICK_FIXTURE.name}: {QUICK_FIXTURE.model} on "
                        f"{QUICK_FIXTURE.data.num_classes} synthetic classes, a couple of minutes on two cores), its "
                        "checkpoint and dataset copied to --output")
    p.add_argument("--output", metavar="DIR", help=f"--quick: where the copies go (default {QUICK_OUTPUT})")
    p.add_argument("--cache-dir", help="fixture cache (default ~/.cache/segdeploy/fixtures, or "
                                       "$SEGDEPLOY_CACHE/fixtures)")
    p.add_argument("--force", action="store_true", help="train again even when the cache has the fixture (and "
                                                        "overwrite --json)")
    common.add_json(p, "the fixtures' records (paths, scores, training time)")
    p.set_defaults(func=run)


def run(args) -> int:
    from segdeploy.evaluation.eval import evaluate_checkpoint

    if args.quick:
        return run_quick(args)
    if args.output:
        raise InputError("--output goes with --quick")
    recipes = resolve(args.model or "all")
    common.check_outputs(args.force, args.json)
    cache_dir = args.cache_dir or default_cache_dir()
    with common.status(f"fixtures in {cache_dir}") as say:
        made = [make_fixture(recipe, evaluate_checkpoint, cache_dir=cache_dir, force=args.force, log=say)
                for recipe in recipes]
    print_table(f"fixtures in {cache_dir}", ["fixture", "model", "classes", "val mIoU", "train s", "checkpoint"],
                [[f.name, f.model, f.num_classes, f"{f.miou:.2f}", f.record.get("train_seconds", "-"), f.checkpoint]
                 for f in made])
    if args.json:
        records = [{"name": f.name, "model": f.model, "checkpoint": f.checkpoint, "dataset": f.dataset_dir,
                    "miou": f.miou, "record": f.record} for f in made]
        written = common.write_json(args.json, records, args.force)
        if written:
            print(f"wrote {written}")
    return 0


def run_quick(args) -> int:
    """The quick fixture, trained (or found in the cache), copied where commands can name it, and what to run next."""
    from segdeploy.evaluation.eval import evaluate_checkpoint

    if args.model:
        raise InputError(f"--quick trains one fixture ({QUICK_FIXTURE.name}); leave out --model")
    output = args.output or QUICK_OUTPUT
    common.check_outputs(args.force, args.json)
    cache_dir = args.cache_dir or default_cache_dir()
    with common.status(f"the quick fixture {QUICK_FIXTURE.name}") as say:
        fixture = make_fixture(QUICK_FIXTURE, evaluate_checkpoint, cache_dir=cache_dir, force=args.force, log=say)
        checkpoint, dataset, kept = place(fixture, output, force=args.force)
    trained = fixture.record.get("train_seconds", "-")
    print_table(f"the quick fixture (cached in {cache_dir})", ["fixture", "model", "classes", "val mIoU", "train s",
                                                               "checkpoint", "dataset"],
                [[fixture.name, fixture.model, fixture.num_classes, f"{fixture.miou:.2f}", trained, checkpoint,
                  dataset]])
    print(("kept" if kept else "wrote") + f" {checkpoint} and {dataset}")
    height, width = QUICK_FIXTURE.data.height, QUICK_FIXTURE.data.width
    print(f"next: INT8 calibrated on its training split, judged on its validation split, then scored:\n"
          f"  segdeploy export --model {fixture.model} --checkpoint {checkpoint} --size {height}x{width} "
          f"--precision int8 --calib {dataset} --eval-data {dataset}\n"
          f"  segdeploy eval artifacts/{fixture.model}_{height}x{width}_int8_cpu.onnx --data {dataset}")
    if args.json:
        written = common.write_json(args.json, [{"name": fixture.name, "model": fixture.model, "checkpoint": checkpoint,
                                                 "dataset": dataset, "miou": fixture.miou, "record": fixture.record}],
                                    args.force)
        if written:
            print(f"wrote {written}")
    return 0
