"""The synthetic dataset: deterministic from its seed, readable as ADE20K, every class present, CLI and errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from segdeploy.cli import main
from segdeploy.datasets import open_dataset
from segdeploy.datasets.synthetic import CLASSES, SynthConfig, class_names, scene, texture_tiles, write_dataset
from segdeploy.errors import InputError


def test_every_class_texture_ships_with_the_package():
    tiles = texture_tiles(len(CLASSES))
    assert len(tiles) == 24 and all(t.shape == (256, 256, 3) for t in tiles)
    # tinted copies of one crop differ in colour: the class is not told by texture alone
    means = np.array([t.reshape(-1, 3).mean(0) for t in tiles])
    assert len({tuple(np.round(m)) for m in means}) == 24


def test_scenes_are_deterministic_and_depend_on_seed_split_and_index():
    config = SynthConfig(num_classes=8, height=96, width=128, seed=3)
    image, label = scene(config, "training", 0)
    assert image.shape == (96, 128, 3) and image.dtype == np.uint8 and label.shape == (96, 128)
    assert label.min() >= 1 and label.max() <= 8
    again, again_label = scene(config, "training", 0)
    assert np.array_equal(image, again) and np.array_equal(label, again_label)
    for other in (scene(config, "training", 1), scene(config, "validation", 0),
                  scene(SynthConfig(num_classes=8, height=96, width=128, seed=4), "training", 0)):
        assert not np.array_equal(image, other[0])


def test_scenes_cover_every_class_and_mix_several_per_image():
    config = SynthConfig(num_classes=12, height=128, width=128)
    seen, per_image = set(), []
    for i in range(30):
        _, label = scene(config, "training", i)
        values = set(np.unique(label).tolist())
        seen |= values
        per_image.append(len(values))
    assert seen == set(range(1, 13))
    assert np.mean(per_image) >= 3


def test_written_dataset_reads_back_as_ade20k_with_its_classes(tmp_path):
    out = tmp_path / "synth"
    config = SynthConfig(num_classes=8, train=3, val=2, height=64, width=96, seed=1)
    write_dataset(out, config)
    val = open_dataset(out)
    assert val.layout == "ade20k" and val.num_classes == 8 and val.class_names == tuple(class_names(8))
    assert len(val) == 2 and len(open_dataset(out, split="training")) == 3
    image = val.read_image(val.samples[0])
    label = val.read_label(val.samples[0], image_shape=image.shape)
    _, expected = scene(config, "validation", 0)
    assert np.array_equal(label, expected.astype(np.int64) - 1)  # labels are lossless; reduce_zero_label applied
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["config"]["seed"] == 1 and meta["generator_version"] >= 1 and len(meta["palette"]) == 8
    with pytest.raises(InputError, match="exists; pass --force"):
        write_dataset(out, config)
    write_dataset(out, SynthConfig(num_classes=8, train=1, val=1, height=64, width=96), force=True)
    assert len(open_dataset(out)) == 1 and not list(tmp_path.glob(".synth.*"))


def test_force_never_replaces_a_folder_it_did_not_make(tmp_path):
    precious = tmp_path / "photos"
    precious.mkdir()
    (precious / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(InputError, match="not a synthetic dataset made by segdeploy"):
        write_dataset(precious, SynthConfig(num_classes=4, train=1, val=1, height=32, width=32), force=True)
    assert (precious / "holiday.jpg").exists()


def test_cli_makes_the_dataset_and_rejects_bad_arguments(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["dataset", "synth", "--out", str(out), "--classes", "6", "--train", "2", "--val", "1",
                 "--size", "64x64", "--seed", "5", "--style", "hard"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert len(open_dataset(out)) == 1
    for args, message in ((["--classes", "30"], "--classes must be between 2 and 24"),
                          (["--size", "big"], "--size takes HxW or N"),
                          (["--train", "0", "--val", "0"], "not both 0")):
        assert main(["dataset", "synth", "--out", str(tmp_path / "e"), *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("segdeploy dataset: error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "e").exists()
    assert main(["dataset", "synth", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert "examples:" in help_text and "segdeploy dataset synth --out" in help_text
