"""Checkpoints that are corrupt, truncated, empty, foreign, hostile or hold weights no artifact should be made from:
one error line, exit 2, no code from the file runs, and nothing written."""
from __future__ import annotations

import pickle

import pytest
import torch

from hostile import PHOTO, Tree, assert_unchanged, hostile_checkpoints, run_cli, small_checkpoint_bytes
from segdeploy import models

EXPORT = ("export", "--model", "segnext_t", "--size", "256", "--output", "out.onnx", "--no-validate")


def _state(**changes):
    model = models.create("segnext_t")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state.update(changes)
    return state


def _bytes(name: str) -> bytes:
    if name == "text":
        return b"hello world, this is not a checkpoint\n" * 10
    if name == "NUL bytes":
        return bytes(100)
    if name == "empty":
        return b""
    if name == "random bytes":
        return bytes(range(256)) * 64
    if name == "half a zip archive":
        data = small_checkpoint_bytes()
        return data[: len(data) // 2]
    if name == "half a legacy file":
        data = small_checkpoint_bytes(legacy=True)
        return data[: len(data) // 2]
    if name == "a zip that is not torch's":
        import io
        import zipfile

        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as z:
            z.writestr("readme.txt", "hello")
        return buffer.getvalue()
    raise KeyError(name)


CORRUPT = ("text", "NUL bytes", "empty", "random bytes", "half a zip archive", "half a legacy file",
           "a zip that is not torch's")


@pytest.mark.parametrize("name", CORRUPT)
def test_corrupt_checkpoints(workdir, capfd, name):
    (workdir / "c.pth").write_bytes(_bytes(name))
    before = Tree.of(workdir)
    run_cli(capfd, *EXPORT, "--checkpoint", "c.pth").refused("checkpoint")
    assert_unchanged(before, workdir)


@pytest.mark.parametrize("name", ["os.system in a raw pickle", "os.system in a torch.save archive",
                                  "builtins.eval"])
def test_hostile_pickles_never_run(workdir, capfd, name):
    marker = workdir / "PWNED"
    (workdir / "c.pth").write_bytes(hostile_checkpoints(marker)[name])
    run_cli(capfd, *EXPORT, "--checkpoint", "c.pth").refused("checkpoint")
    assert not marker.exists()
    assert not (workdir / "out.onnx").exists()


def _saved(workdir, obj):
    path = workdir / "c.pth"
    torch.save(obj, path)
    return path


WRONG = {
    "another model's weights": (lambda: models.create("cgrseg_t").state_dict(), "does not fit"),
    "a missing key": (lambda: {k: v for i, (k, v) in enumerate(_state().items()) if i}, "missing"),
    "a wrongly shaped tensor": (lambda: _state(**{"backbone.patch_embed1.proj.0.weight": torch.zeros(1)}),
                                "wrongly shaped"),
    "NaN weights": (lambda: {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                             for k, v in _state().items()}, "non-finite"),
    "one inf": (lambda: _state(**{"decode_head.conv_seg.bias": torch.full((150,), float("inf"))}), "non-finite"),
    "complex weights": (lambda: {k: v.to(torch.complex64) if v.is_floating_point() else v
                                 for k, v in _state().items()}, "cannot take"),
    "70000 classes": (lambda: _state(**{"decode_head.conv_seg.weight": torch.zeros(70000, 1, 1, 1)}), "70000"),
    "a list": (lambda: [torch.zeros(2)], "not a state_dict"),
    "a bare tensor": (lambda: torch.zeros(3), "not a state_dict"),
    "no tensors": (lambda: {"epoch": 3, "meta": {"x": 1}}, "no tensors"),
}


@pytest.mark.parametrize("name", sorted(WRONG))
def test_checkpoints_that_do_not_fit(workdir, capfd, name):
    make, expected = WRONG[name]
    _saved(workdir, make())
    before = Tree.of(workdir)
    run_cli(capfd, *EXPORT, "--checkpoint", "c.pth").refused(expected)
    assert_unchanged(before, workdir)


@pytest.mark.parametrize("where", ["missing", "a folder"])
def test_checkpoint_paths(workdir, capfd, where):
    if where == "a folder":
        (workdir / "c.pth").mkdir()
    run_cli(capfd, *EXPORT, "--checkpoint", "c.pth").refused("checkpoint")


@pytest.mark.parametrize("command", ["predict", "validate", "bench"])
def test_other_commands_refuse_a_corrupt_checkpoint(artifact, workdir, capfd, command):
    (workdir / "c.pth").write_bytes(_bytes("text"))
    argv = {"predict": ("predict", "--model", "segnext_t", "--source", PHOTO, "--backend", "torch"),
            "validate": ("validate", artifact, "--n", "1"),
            "bench": ("bench", "--model", "segnext_t", "--backend", "torch", "--size", "64", "--warmup-s", "0",
                      "--min-s", "0", "--min-iters", "1", "--no-peak")}[command]
    run_cli(capfd, *argv, "--checkpoint", "c.pth").refused("checkpoint")


def test_the_loader_never_unpickles_code(workdir):
    """The loader itself, under every hostile pickle: a CheckpointError, and the marker never appears."""
    from segdeploy.errors import CheckpointError
    from segdeploy.models.checkpoints import read_state_dict

    marker = workdir / "PWNED"
    for name, data in hostile_checkpoints(marker).items():
        path = workdir / "evil.pth"
        path.write_bytes(data)
        with pytest.raises(CheckpointError):
            read_state_dict(path)
        assert not marker.exists(), name
    assert pickle  # the raw pickles above are plain pickle streams
