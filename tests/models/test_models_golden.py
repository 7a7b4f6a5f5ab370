"""Every registered variant against its original implementation: layout, logits, mask, features, eval order."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from goldens import (
    assert_state_dict_layout,
    golden,
    golden_models,
    logits_tolerance,
    manifest,
    mask_agreement,
    recipe_model,
    run_public_case,
)
from segdeploy import models
from segdeploy.recipe import seeded_state_dict

MODELS = golden_models()


@pytest.mark.parametrize("name", MODELS)
def test_state_dict_matches_original(name):
    assert_state_dict_layout(models.create(name), name)


@pytest.mark.parametrize("name", MODELS)
def test_golden_logits_mask_and_features(name):
    g = golden(name)
    model = recipe_model(name, int(g["seed"]))
    logits, features = run_public_case(model, g)
    reference = g["logits"]
    assert logits.shape == reference.shape
    err = float(np.abs(logits.numpy() - reference).max())
    assert err <= logits_tolerance(reference), f"max|logits - golden| = {err:.3g}"
    agreement = mask_agreement(logits, g["mask"], manifest(name)["align_corners"])
    assert agreement >= 0.999, f"mask agreement {agreement:.5f}"
    assert len(features) == 4
    for i, feat in enumerate(features):
        assert list(feat.shape) == g[f"feat{i}_shape"].tolist()
        probe = g[f"feat{i}_probe"]
        np.testing.assert_allclose(feat[:, :8, :4, :4].numpy(), probe, rtol=1e-4,
                                   atol=1e-4 * max(1.0, float(np.abs(probe).max())))
        np.testing.assert_allclose(float(feat.double().mean()), float(g[f"feat{i}_mean"]), rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(float(feat.double().std()), float(g[f"feat{i}_std"]), rtol=1e-3)


@pytest.mark.parametrize("name", MODELS)
def test_eval_before_or_after_loading_gives_same_outputs(name):
    g = golden(name)
    spec = models.get_spec(name)
    state = seeded_state_dict(models.create(name), 0)
    x = torch.from_numpy(g["input_shape"].astype(np.int64)).tolist()
    x = torch.randn(*x, generator=torch.Generator().manual_seed(1))

    def run(model):
        with torch.no_grad():
            torch.manual_seed(0)
            return model(x)

    loaded_then_eval = spec.builder(num_classes=150, **spec.options).train()
    loaded_then_eval.load_state_dict(state)
    loaded_then_eval.eval()

    eval_then_loaded = spec.builder(num_classes=150, **spec.options).eval()
    run(eval_then_loaded)  # a forward before loading would fill any cache the original keeps
    eval_then_loaded.load_state_dict(state)

    torch.testing.assert_close(run(loaded_then_eval), run(eval_then_loaded), rtol=0, atol=0)
