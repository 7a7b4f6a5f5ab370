"""Accuracy fixtures: T variants trained on the synthetic dataset, so precision and runtime checks run on weights
whose predictions are trained and confident (the recipe weights' logits are near ties across 150 classes).

A fixture is a recipe (model, dataset config, training config). Its checkpoint is cached under
``<cache>/<name>-<hash>/`` where the hash covers the recipe and the versions of the dataset generator and the trainer,
so a changed recipe is re-made and an unchanged one is reused. The synthetic dataset a recipe trains on is cached
next to it (``<cache>/datasets/``) and shared between recipes with the same dataset config.

Checkpoints use mmseg's layout, ``{"meta": {"dataset_meta": {"classes", "palette"}, "fixture": {...}},
"state_dict": {...}}``, so ``segdeploy.models.create(model, checkpoint=path)`` and ``--checkpoint`` load them.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

from segdeploy import __version__, backends
from segdeploy.datasets import open_dataset
from segdeploy.datasets.synthetic import GENERATOR_VERSION, STYLES, SynthConfig, dataset_meta, write_dataset
from segdeploy.errors import InputError
from segdeploy.files.atomic import folder_holds, write_bytes_atomic, write_folder_atomic, write_text_atomic
from segdeploy.files.destinations import user_cache_dir
from segdeploy.files.locking import folder_lock
from segdeploy.training.trainer import TrainConfig, train

TRAINER_VERSION = 1
CHECKPOINT_FILE = "checkpoint.pth"
RECORD_FILE = "fixture.json"


@dataclass(frozen=True)
class FixtureRecipe:
    name: str
    model: str
    data: SynthConfig
    train: TrainConfig
    purpose: str

    def key(self) -> str:
        """Hash of everything the checkpoint depends on: the recipe and the versions of the dataset generator and
        the trainer (bumped when they change), not segdeploy's release number, which moves without them."""
        payload = {"model": self.model, "data": asdict(self.data), "train": self.train.as_dict(),
                   "style": asdict(STYLES[self.data.style]), "generator": GENERATOR_VERSION,
                   "trainer": TRAINER_VERSION}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


CLEAN16 = SynthConfig(num_classes=16, train=400, val=100, height=512, width=512, seed=0, style="clean")
NOISY24 = SynthConfig(num_classes=24, train=200, val=50, height=512, width=512, seed=0, style="noisy")
# The small fixture the test suite trains for itself (once per cache): few classes, small crops, minutes.
TINY8 = SynthConfig(num_classes=8, train=96, val=12, height=256, width=256, seed=0, style="clean")

_CONFIDENT = "confident T fixture: trained, well-separated predictions on 16 texture classes"
# One recipe for the four T variants: 250 iterations of 8 crops of 128x128, a few minutes per variant on 2 quiet
# cores (sized for a shared machine; more iterations buy more mIoU); the low-margin one stops early on hard scenes.
_T_TRAINING = TrainConfig(iterations=250, batch=8, crop=128, lr=2e-3, warmup=20)
FIXTURES: dict[str, FixtureRecipe] = {r.name: r for r in (
    FixtureRecipe("cgrseg_t_synth16", "cgrseg_t", CLEAN16, _T_TRAINING, _CONFIDENT),
    FixtureRecipe("segnext_t_synth16", "segnext_t", CLEAN16, _T_TRAINING, _CONFIDENT),
    FixtureRecipe("lrformer_t_synth16", "lrformer_t", CLEAN16, _T_TRAINING, _CONFIDENT),
    FixtureRecipe("offseg_t_synth16", "offseg_t", CLEAN16, _T_TRAINING, _CONFIDENT),
    # 160 iterations on the noisy style reach about 41% mIoU (80: 36%; the hard style reached 26% after 150)
    FixtureRecipe("cgrseg_t_lowmargin", "cgrseg_t", NOISY24, replace(_T_TRAINING, iterations=160),
                  "low-margin fixture: briefly trained on noisy, cluttered scenes of 24 classes (about 40% mIoU), "
                  "where a lossy graph loses points"),
)}
# The quick fixture (`segdeploy fixtures --quick`): trained weights and a labelled dataset in a couple of minutes on
# two cores (the training itself about 20 s), for a first INT8 export and eval; the test suite trains the same.
QUICK_FIXTURE = FixtureRecipe("cgrseg_t_tiny8", "cgrseg_t", TINY8,
                              TrainConfig(iterations=80, batch=8, crop=128, lr=3e-3, warmup=10),
                              "the quick fixture (and the test suite's): small and quick to train")
TEST_FIXTURE = QUICK_FIXTURE
# where `segdeploy fixtures --quick` puts a copy of its checkpoint and dataset, under names that do not change
QUICK_OUTPUT = os.path.join("artifacts", "quick")
DEFAULT_FIXTURES = tuple(FIXTURES)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} logical cores"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def default_cache_dir() -> str:
    return user_cache_dir("fixtures")


def get_recipe(name: str) -> FixtureRecipe:
    if name == TEST_FIXTURE.name:
        return TEST_FIXTURE
    if name not in FIXTURES:
        raise InputError(f"unknown fixture {name!r}; fixtures: {', '.join(FIXTURES)}")
    return FIXTURES[name]


def resolve(selection: str) -> list[FixtureRecipe]:
    """``all``, or a comma-separated list of fixture names or model names (a model name picks its fixtures)."""
    if selection == "all":
        return list(FIXTURES.values())
    picked: list[FixtureRecipe] = []
    for item in (s.strip() for s in selection.split(",") if s.strip()):
        matches = [r for r in FIXTURES.values() if r.model == item] or [get_recipe(item)]
        picked += [r for r in matches if r not in picked]
    if not picked:
        raise InputError("--model names no fixture")
    return picked


@dataclass
class Fixture:
    """A made fixture: where its checkpoint and dataset are, and how it scored."""
    name: str
    model: str
    checkpoint: str
    dataset_dir: str
    num_classes: int
    miou: float
    record: dict

    @property
    def val_split(self) -> str:
        return "validation"


def dataset_dir(config: SynthConfig, cache_dir: str) -> str:
    key = hashlib.sha256(json.dumps({**asdict(config), "generator": GENERATOR_VERSION,
                                     "style": asdict(STYLES[config.style])}, sort_keys=True).encode()).hexdigest()
    return os.path.join(cache_dir, "datasets", f"synth{config.num_classes}-{config.style}-{key[:12]}")


def ensure_dataset(config: SynthConfig, cache_dir: str, log: Callable[[str], None] | None = None) -> str:
    path = dataset_dir(config, cache_dir)
    if not os.path.isfile(os.path.join(path, "dataset.json")):
        if log is not None:
            log(f"making the synthetic dataset ({config.num_classes} classes, {config.style}, {config.train}+"
                f"{config.val} images of {config.height}x{config.width}) in {path}")
        write_dataset(path, config, force=True)
    return path


def fixture_dir(recipe: FixtureRecipe, cache_dir: str) -> str:
    return os.path.join(cache_dir, f"{recipe.name}-{recipe.key()}")


def load_fixture(recipe: FixtureRecipe, cache_dir: str) -> Fixture | None:
    folder = fixture_dir(recipe, cache_dir)
    record_path = os.path.join(folder, RECORD_FILE)
    checkpoint = os.path.join(folder, CHECKPOINT_FILE)
    if not (os.path.isfile(record_path) and os.path.isfile(checkpoint)):
        return None
    try:
        with open(record_path, encoding="utf-8") as f:
            record = json.load(f)
        miou = record["val"]["miou"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None  # a damaged record: the fixture is made again, as if it were missing
    if not isinstance(miou, (int, float)) or isinstance(miou, bool) or not 0 <= miou <= 100:
        return None
    data = dataset_dir(recipe.data, cache_dir)
    if not os.path.isfile(os.path.join(data, "dataset.json")):
        ensure_dataset(recipe.data, cache_dir)  # the checkpoint is still good; its dataset was cleaned away
    return Fixture(recipe.name, recipe.model, checkpoint, data, recipe.data.num_classes, miou, record)


def _checkpoint_bytes(state_dict: dict, meta: dict) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save({"meta": meta, "state_dict": state_dict}, buffer)
    return buffer.getvalue()


# evaluate(checkpoint_path, model_name, dataset_dir) -> {"miou", "macc", "aacc", "images", ...}: the dataset
# evaluation lives a layer above training, so it is handed in (segdeploy.evaluation.eval.evaluate_checkpoint).
Evaluator = Callable[[str, str, str], dict]


def make_fixture(recipe: FixtureRecipe, evaluate: Evaluator, *, cache_dir: str | None = None, force: bool = False,
                 log: Callable[[str], None] | None = print) -> Fixture:
    """The fixture's checkpoint from the cache, or trained, scored and cached now. One process makes it at a time
    (the cache folder's lock): another asking meanwhile (a parallel test worker) waits, then reuses it."""
    cache_dir = cache_dir or default_cache_dir()
    if not force:
        found = load_fixture(recipe, cache_dir)
        if found is not None:
            return found
    os.makedirs(cache_dir, exist_ok=True)
    with folder_lock(cache_dir):
        found = None if force else load_fixture(recipe, cache_dir)
        return found or _make(recipe, evaluate, cache_dir, log)


def _make(recipe: FixtureRecipe, evaluate: Evaluator, cache_dir: str, log: Callable[[str], None] | None) -> Fixture:
    import torch

    data = ensure_dataset(recipe.data, cache_dir, log)
    if log is not None:
        log(f"training {recipe.name}: {recipe.model}, {recipe.train.iterations} iterations of batch "
            f"{recipe.train.batch} at {recipe.train.crop}x{recipe.train.crop}, {recipe.train.threads} threads")
    result = train(recipe.model, open_dataset(data, "ade20k", split="training"), recipe.train, log=log)
    folder = fixture_dir(recipe, cache_dir)
    os.makedirs(folder, exist_ok=True)
    checkpoint = os.path.join(folder, CHECKPOINT_FILE)
    meta_data = dataset_meta(recipe.data)
    dataset_record = {"classes": meta_data["classes"], "palette": meta_data["palette"]}
    fixture = {"name": recipe.name, "model": recipe.model, "key": recipe.key(), "purpose": recipe.purpose,
               "data": asdict(recipe.data), "train": recipe.train.as_dict(), "segdeploy": __version__,
               backends.TORCH: str(torch.__version__), "cpu": cpu_model(),
               "train_seconds": round(result.seconds, 1), "final_loss": round(result.final_loss, 4),
               "made": time.strftime("%Y-%m-%dT%H:%M:%S")}
    state = {k: v.detach().clone() for k, v in result.model.state_dict().items()}
    # written first without the score, so the evaluation loads exactly what users will load
    write_bytes_atomic(checkpoint, _checkpoint_bytes(state, {"dataset_meta": dataset_record, "fixture": fixture}),
                       force=True)
    scores = evaluate(checkpoint, recipe.model, data)
    fixture["val"] = {k: scores[k] for k in ("miou", "macc", "aacc", "images") if k in scores}
    write_bytes_atomic(checkpoint, _checkpoint_bytes(state, {"dataset_meta": dataset_record, "fixture": fixture}),
                       force=True)
    write_text_atomic(os.path.join(folder, RECORD_FILE), json.dumps(fixture, indent=2) + "\n", force=True)
    if log is not None:
        log(f"{recipe.name}: validation mIoU {fixture['val']['miou']:.2f} after {result.seconds:.0f} s of training; "
            f"checkpoint {checkpoint}")
    return Fixture(recipe.name, recipe.model, checkpoint, data, recipe.data.num_classes, fixture["val"]["miou"],
                   fixture)


def place(fixture: Fixture, folder: str, force: bool = False) -> tuple[str, str, bool]:
    """Copy a fixture's checkpoint and dataset into ``folder`` as one unit (``<name>.pth`` and ``synth<K>/``), so
    that commands can name them; a folder that holds exactly them already is kept, any other is replaced only with
    ``force``. Returns (checkpoint, dataset folder, kept)."""
    data_name = f"synth{fixture.num_classes}"
    with open(fixture.checkpoint, "rb") as f:
        files = {f"{fixture.name}.pth": f.read()}
    for root, _, names in os.walk(fixture.dataset_dir):
        for name in sorted(names):
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                files[f"{data_name}/{os.path.relpath(path, fixture.dataset_dir).replace(os.sep, '/')}"] = f.read()
    kept = folder_holds(folder, files)
    if not kept:
        if os.path.exists(folder) and not force:
            raise InputError(f"{folder} exists and holds something else; pass --force to replace it, or choose "
                             "another --output")
        write_folder_atomic(folder, files, force=force)
    return os.path.join(folder, f"{fixture.name}.pth"), os.path.join(folder, data_name), kept


def with_iterations(recipe: FixtureRecipe, iterations: int) -> FixtureRecipe:
    return replace(recipe, train=replace(recipe.train, iterations=iterations))
