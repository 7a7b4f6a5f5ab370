"""segdeploy fixtures: train (or find in the cache) the accuracy fixtures and print their validation mIoU."""
from __future__ import annotations

from segdeploy.commands import common
from segdeploy.console import print_table

EXAMPLE = """examples:
  segdeploy fixtures                          # every fixture (cached ones are reused)
  segdeploy fixtures --model cgrseg_t,segnext_t_synth16 --cache-dir /tmp/fixtures
  segdeploy eval --model cgrseg_t --checkpoint ~/.cache/segdeploy/fixtures/cgrseg_t_synth16-<key>/checkpoint.pth \\
      --data ~/.cache/segdeploy/fixtures/datasets/synth16-clean-<key>

Each fixture trains one T variant on the synthetic dataset on the CPU (seeded, 2 threads, minutes to a quarter of an
hour each) and is cached under a key of its recipe and the versions of the dataset generator and the trainer."""


def add_parser(subparsers) -> None:
    from segdeploy.training.fixtures import FIXTURES

    p = subparsers.add_parser("fixtures", help="train the accuracy fixtures (cached) and print their mIoU",
                              description=__doc__, epilog=EXAMPLE,
                              formatter_class=common.HelpFormatter)
    p.add_argument("--model", default="all",
                   help="all (default), or a comma-separated list of fixture or model names; fixtures: "
                        + ", ".join(FIXTURES))
    p.add_argument("--cache-dir", help="fixture cache (default ~/.cache/segdeploy/fixtures, or "
                                       "$SEGDEPLOY_CACHE/fixtures)")
    p.add_argument("--force", action="store_true", help="train again even when the cache has the fixture (and "
                                                        "overwrite --json)")
    common.add_json(p, "the fixtures' records (paths, scores, training time)")
    p.set_defaults(func=run)


def run(args) -> int:
    from segdeploy.evaluation.eval import evaluate_checkpoint
    from segdeploy.training.fixtures import default_cache_dir, make_fixture, resolve

    recipes = resolve(args.model)
    common.check_outputs(args.force, args.json)
    cache_dir = args.cache_dir or default_cache_dir()
    made = [make_fixture(recipe, evaluate_checkpoint, cache_dir=cache_dir, force=args.force) for recipe in recipes]
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
