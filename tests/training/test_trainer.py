"""The fixture trainer: schedule, augmentation, a short run that learns, and the cached checkpoint's layout."""
from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest
import torch

from segdeploy import models
from segdeploy.datasets import open_dataset
from segdeploy.datasets.synthetic import SynthConfig, write_dataset
from segdeploy.files.locking import folder_lock
from segdeploy.models.checkpoints import checkpoint_dataset_meta
from segdeploy.training import fixtures
from segdeploy.training.fixtures import FixtureRecipe, fixture_dir, make_fixture
from segdeploy.training.trainer import CropSampler, TrainConfig, learning_rate, train


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny") / "synth"
    write_dataset(root, SynthConfig(num_classes=4, train=4, val=2, height=64, width=96, seed=2))
    return root


def test_learning_rate_warms_up_then_decays_to_zero():
    config = TrainConfig(iterations=100, lr=1e-3, warmup=10)
    assert learning_rate(config, 0) == pytest.approx(1e-4)
    assert learning_rate(config, 9) == pytest.approx(1e-3)
    assert learning_rate(config, 10) == pytest.approx(1e-3)
    assert learning_rate(config, 55) == pytest.approx(0.5e-3)
    assert learning_rate(config, 99) < 2e-5


def test_crops_are_seeded_normalised_and_padded_with_the_ignore_index(tiny_data):
    spec = models.get_spec("cgrseg_t")
    dataset = open_dataset(tiny_data, split="training")
    draws = []
    for _ in range(2):
        sampler = CropSampler(dataset, spec, crop=160, scale_range=(0.2, 0.3), rng=np.random.default_rng(7))
        draws.append(sampler.batch(3))
    (x, y), (x2, y2) = draws
    assert x.shape == (3, 3, 160, 160) and x.dtype == torch.float32 and y.shape == (3, 160, 160)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    # the 64x96 images are first resized by the test policy (to 512x768), then scaled by 0.2-0.3: smaller than the
    # crop, so the rest is padding that the loss ignores
    assert (y == 255).any() and set(torch.unique(y).tolist()) <= {0, 1, 2, 3, 255}
    assert abs(float(x.permute(0, 2, 3, 1)[y != 255].mean())) < 3


def test_a_short_run_fits_the_training_images(tiny_data):
    dataset = open_dataset(tiny_data, split="training")
    config = TrainConfig(iterations=24, batch=2, crop=64, lr=3e-3, warmup=2, scale_range=(0.125, 0.125))
    result = train("cgrseg_t", dataset, config)
    assert result.iterations == 24 and len(result.losses) == 24 and np.isfinite(result.losses).all()
    assert np.mean(result.losses[-4:]) < 0.8 * np.mean(result.losses[:4])
    assert not result.model.training


def test_fixture_checkpoint_has_mmseg_layout_and_is_cached(tmp_path):
    recipe = FixtureRecipe("cgrseg_t_test", "cgrseg_t",
                           SynthConfig(num_classes=3, train=2, val=1, height=64, width=64, seed=1),
                           TrainConfig(iterations=2, batch=2, crop=64, warmup=1), "unit test")
    calls = []

    def fake_evaluate(checkpoint, model, data_dir):
        calls.append((checkpoint, model, data_dir))
        assert len(open_dataset(data_dir)) == 1
        return {"miou": 12.5, "macc": 20.0, "aacc": 30.0, "images": 1}

    fixture = make_fixture(recipe, fake_evaluate, cache_dir=str(tmp_path), log=None)
    assert fixture.miou == 12.5 and fixture.num_classes == 3 and calls == [(fixture.checkpoint, "cgrseg_t",
                                                                          fixture.dataset_dir)]
    raw = torch.load(fixture.checkpoint, weights_only=True)
    assert set(raw) == {"meta", "state_dict"}
    assert raw["meta"]["dataset_meta"]["classes"] == ["brick", "grass", "gravel"]
    assert raw["meta"]["fixture"]["val"]["miou"] == 12.5 and raw["meta"]["fixture"]["key"] == recipe.key()
    assert all(k.startswith(("backbone.", "decode_head.")) for k in raw["state_dict"])
    model = models.create("cgrseg_t", checkpoint=fixture.checkpoint)
    assert model.num_classes == 3
    assert checkpoint_dataset_meta(fixture.checkpoint)["classes"] == ["brick", "grass", "gravel"]
    # cached: no second training or evaluation; a changed recipe is another key and another folder
    assert make_fixture(recipe, fake_evaluate, cache_dir=str(tmp_path), log=None).checkpoint == fixture.checkpoint
    assert len(calls) == 1
    changed = replace(recipe, train=replace(recipe.train, lr=5e-4))
    assert changed.key() != recipe.key() and fixture_dir(changed, str(tmp_path)) != fixture_dir(recipe, str(tmp_path))
    make_fixture(recipe, fake_evaluate, cache_dir=str(tmp_path), force=True, log=None)
    assert len(calls) == 2


def test_a_fixture_being_made_is_waited_for_not_made_twice(tmp_path):
    """Parallel test workers ask for the same fixture: the second waits on the cache's lock, then reuses the first's."""
    recipe = FixtureRecipe("cgrseg_t_lock", "cgrseg_t", SynthConfig(num_classes=3, train=2, val=1, height=64,
                                                                     width=64, seed=1),
                           TrainConfig(iterations=1, batch=2, crop=64, warmup=1), "unit test")
    calls = []

    def fake_evaluate(checkpoint, model, data_dir):
        calls.append(checkpoint)
        return {"miou": 50.0, "macc": 50.0, "aacc": 50.0, "images": 1}

    results = []
    with folder_lock(str(tmp_path)):  # the first worker holds the lock while it makes the fixture
        second = threading.Thread(target=lambda: results.append(
            make_fixture(recipe, fake_evaluate, cache_dir=str(tmp_path), log=None)))
        second.start()
        second.join(timeout=2)
        assert second.is_alive() and not results  # waiting, not training a second copy
        first = fixtures._make(recipe, fake_evaluate, str(tmp_path), None)
    second.join(timeout=120)
    assert [r.checkpoint for r in results] == [first.checkpoint] and len(calls) == 1


def test_checkpoint_dataset_meta_is_none_without_mmseg_meta(tmp_path):
    raw = tmp_path / "raw.pth"
    torch.save({"decode_head.conv_seg.weight": torch.zeros(2, 1, 1, 1)}, raw)
    assert checkpoint_dataset_meta(raw) is None
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"meta": {"dataset_meta": {"classes": ["a", "b"], "palette": [[1, 2, 3]]}}, "state_dict": {}}, wrapped)
    assert checkpoint_dataset_meta(wrapped) == {"classes": ["a", "b"], "palette": None}  # wrong-length palette: dropped
