"""Checkpoint reading and strict loading: wrappers, prefixes, class count, and one clear error per failure."""
from __future__ import annotations

import pytest
import torch

from segdeploy import models
from segdeploy.errors import CheckpointError
from segdeploy.models.checkpoints import read_state_dict


@pytest.fixture(scope="module")
def tiny_state():
    return models.load_recipe_weights(models.create("segnext_t")).state_dict()


def test_raw_and_wrapped_and_module_prefixed(tmp_path, tiny_state):
    variants = {
        "raw": tiny_state,
        "model": {"model": tiny_state, "optimizer": {}},
        "ddp": {"state_dict": {f"module.{k}": v for k, v in tiny_state.items()}},
    }
    for label, obj in variants.items():
        path = tmp_path / f"{label}.pth"
        torch.save(obj, path)
        assert list(read_state_dict(path)) == list(tiny_state), label
        models.create("segnext_t", checkpoint=path)


def test_num_classes_is_inferred_from_the_classifier(tmp_path):
    state = models.create("segnext_t", num_classes=19).state_dict()
    path = tmp_path / "cityscapes.pth"
    torch.save({"state_dict": state}, path)
    model = models.create("segnext_t", checkpoint=path)
    assert model.num_classes == 19
    assert model(torch.zeros(1, 3, 64, 64)).shape[1] == 19
    with pytest.raises(CheckpointError, match="19 classes"):
        models.create("segnext_t", checkpoint=path, num_classes=150)


def test_truncated_file(tmp_path, tiny_state):
    path = tmp_path / "full.pth"
    torch.save(tiny_state, path)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated, corrupt or not a PyTorch file"):
        models.create("segnext_t", checkpoint=cut)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        models.create("segnext_t", checkpoint=tmp_path / "nope.pth")


def test_wrong_models_checkpoint_names_the_wrongly_shaped_key(tmp_path):
    path = tmp_path / "small.pth"
    torch.save(models.create("segnext_s").state_dict(), path)
    with pytest.raises(CheckpointError, match=r"does not fit segnext_t: .*wrongly shaped \(first: "
                                              r"backbone\.patch_embed1\.proj\.0\.weight"):
        models.create("segnext_t", checkpoint=path)


def test_missing_and_unexpected_keys_are_named(tmp_path, tiny_state):
    state = dict(tiny_state)
    del state["decode_head.align.gn.bias"]
    state["decode_head.extra.weight"] = torch.zeros(1)
    path = tmp_path / "edited.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        models.create("segnext_t", checkpoint=path)
    message = str(info.value)
    assert "1 missing (first: decode_head.align.gn.bias)" in message
    assert "1 unexpected (first: decode_head.extra.weight)" in message


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="not a state_dict"):
        models.create("segnext_t", checkpoint=path)
