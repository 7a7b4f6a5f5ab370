"""SegNeXt specifics: the NMF bases modes, the NMF rank option and mmseg 1.x checkpoints."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from goldens import golden, logits_tolerance, recipe_model, run_public_case
from segdeploy import models
from segdeploy.models.segnext import NMF2D, draw_nmf_bases, to_mmseg1x_layout


def test_fixed_bases_equal_the_seeded_random_draw_of_batch_element_zero():
    fixed = NMF2D(256, 16, bases="fixed", seed=3).fixed_bases
    torch.manual_seed(3)
    random = draw_nmf_bases(2, 256, 16)
    torch.testing.assert_close(fixed[0], random[0], rtol=0, atol=0)
    assert not torch.equal(fixed[0], random[1])


def test_fixed_bases_are_not_in_the_state_dict_and_deterministic():
    a = models.create("segnext_t", nmf_bases="fixed")
    b = models.create("segnext_t", nmf_bases="fixed")
    assert list(a.state_dict()) == list(models.create("segnext_t").state_dict())
    models.load_recipe_weights(a)
    models.load_recipe_weights(b)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
        torch.testing.assert_close(a(x), a(x), rtol=0, atol=0)


def test_fixed_mode_reproduces_the_golden_for_batch_element_zero():
    g = golden("segnext_t")
    logits, _ = run_public_case(recipe_model("segnext_t", nmf_bases="fixed", nmf_seed=int(g["seed"])), g)
    err = float(np.abs(logits[0].numpy() - g["logits"][0]).max())
    assert err <= logits_tolerance(g["logits"])


def test_random_mode_draws_new_bases_every_forward():
    model = recipe_model("segnext_t")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.equal(model(x), model(x))


def test_nmf_runs_fewer_steps_in_training_mode():
    nmf = NMF2D(32, 4, bases="fixed")
    x = torch.rand(1, 32, 8, 8)
    eval_out = nmf.eval()(x)
    train_out = nmf.train()(x)
    assert not torch.equal(eval_out, train_out)


def test_nmf_rank_is_an_option():
    model = models.create("segnext_b", nmf_rank=16, nmf_bases="fixed")
    assert model.decode_head.hamburger.ham.rank == 16
    assert models.create("segnext_b").decode_head.hamburger.ham.rank == 64


def test_nmf_stays_float32_in_a_half_model():
    nmf = NMF2D(32, 4, bases="fixed").half()
    out = nmf(torch.rand(1, 32, 8, 8).half())
    assert out.dtype == torch.float16 and torch.isfinite(out).all()


@pytest.mark.parametrize("layout", ["0.x", "1.x"])
def test_checkpoint_layouts_round_trip(tmp_path, layout):
    source = recipe_model("segnext_t", nmf_bases="fixed")
    state = source.state_dict()
    if layout == "1.x":
        state = to_mmseg1x_layout(state)
        assert any(k.endswith("mlp.dwconv.weight") for k in state)
    path = tmp_path / f"segnext_t_{layout}.pth"
    torch.save({"meta": {"mmseg_version": layout}, "state_dict": state}, path)
    loaded = models.create("segnext_t", checkpoint=path, nmf_bases="fixed")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x), rtol=0, atol=0)
