"""Absurd sizes, batches, counts and flag values: refused before anything is allocated, with the memory estimate
where memory is the reason. The machine's available memory is fixed at 8 GB here, so the cases mean the same on a
laptop and on a 1 TB server."""
from __future__ import annotations

import pytest

import skips
from hostile import PHOTO, copy_artifact, run_cli

GB = 1 << 30
BENCH = ("bench", "--model", "segnext_t", "--backend", "torch", "--warmup-s", "0", "--min-s", "0", "--min-iters",
         "1", "--no-peak")


@pytest.fixture
def eight_gb(monkeypatch):
    from segdeploy.evaluation import segment
    from segdeploy.models import footprint

    monkeypatch.setattr(footprint, "memory_available_bytes", lambda: 8 * GB)
    monkeypatch.setattr(segment, "memory_available_bytes", lambda: 8 * GB)


@pytest.mark.parametrize("argv, expected", [
    (("export", "--model", "segnext_l", "--size", "4096", "--no-validate"), "GB of memory"),
    (("export", "--model", "segnext_t", "--size", "8192", "--no-validate"), "too large"),
    (("export", "--model", "segnext_t", "--size", "256", "--batch", "999999999999999999999"), "too large"),
    (("export", "--model", "segnext_t", "--size", "999999999"), "multiples of 32"),
    (("export", "--model", "segnext_t", "--size", "0"), "positive"),
    (("export", "--model", "segnext_t", "--size", "-256"), "--size"),
    (("export", "--model", "segnext_t", "--size", "256x"), "--size"),
    (("export", "--model", "segnext_t", "--size", "nan"), "--size"),
    (("export", "--model", "segnext_t", "--batch", "0"), "positive integer"),
    (("export", "--model", "segnext_t", "--opset", "99"), "--opset must be between"),
    (("export", "--model", "segnext_t", "--opset", "-1"), "--opset must be between"),
    (("export", "--model", "segnext_t", "--dynamic", "--size", "2048"), "profile"),
])
def test_export_sizes(workdir, capfd, eight_gb, argv, expected):
    run_cli(capfd, *argv).refused(expected)
    assert not list(workdir.iterdir())


@pytest.mark.parametrize("argv, expected", [
    (("--batch", "4096", "--size", "256"), "the largest batch that fits now is about"),
    (("--batch", "1", "--size", "16384"), "GB of memory"),
    (("--batch", "0",), "--batch values must be >= 1"),
    (("--batch", "two",), "--batch takes positive integers"),
    (("--max-batch", "0", "--batch", "max"), "--max-batch"),
    (("--warmup-s", "nan"), "--warmup-s"),
    (("--min-s", "inf"), "--min-s"),
    (("--min-s", "-1"), "--min-s"),
    (("--min-iters", "0"), "--min-iters"),
    (("--threads", "0"), "positive integer"),
    (("--device", "foo"), "--device takes cpu, cuda or cuda:N"),
    (("--device", "cuda:x"), "--device takes"),
    (("--layout", "nhwc"), "--layout takes"),
    (("--precision", "fp16"), "fp16 on CUDA only"),
    (("--size", "100"), "multiple of 32"),
])
def test_bench_requests(workdir, capfd, eight_gb, argv, expected):
    run_cli(capfd, *BENCH, *argv).refused(expected)


def test_bench_on_cuda_without_a_gpu(workdir, capfd):
    import torch

    if torch.cuda.is_available():
        skips.skip(skips.GPU_PRESENT, "this case is for machines without one")
    run_cli(capfd, *BENCH, "--device", "cuda").refused("no CUDA GPU")


@pytest.mark.parametrize("argv, expected", [
    (("--n", "1000000000"), "--n takes 0 to"),
    (("--n", "-1"), "--n takes 0 to"),
    (("--n", "0"), "nothing to validate"),
    (("--size", "100000"), "outside the artifact's profile"),
    (("--size", "256", "--batch", "0"), "positive integer"),
    (("--batch", "2"), "--batch goes with --size"),
    (("--backend", "torch"), "does not run onnx artifacts"),
    (("--backend", "tpu"), "unknown backend"),
])
def test_validate_requests(artifact, workdir, capfd, argv, expected):
    path = copy_artifact(artifact, workdir)
    run_cli(capfd, "validate", path, *argv).refused(expected)


def test_validate_memory_estimate(artifact, workdir, capfd, monkeypatch):
    from segdeploy.models import footprint

    monkeypatch.setattr(footprint, "memory_available_bytes", lambda: 64 << 20)
    path = copy_artifact(artifact, workdir)
    run_cli(capfd, "validate", path, "--n", "1").refused("GB of memory")


@pytest.mark.parametrize("argv, expected", [
    (("--size", "16384"), "GB of memory"),
    (("--alpha", "nan"), "--alpha"),
    (("--alpha", "2"), "--alpha"),
    (("--top", "0"), "positive integer"),
    (("--size", "abc"), "--size"),
])
def test_predict_requests(workdir, capfd, eight_gb, argv, expected):
    run_cli(capfd, "predict", "--model", "segnext_t", "--backend", "torch", "--source", PHOTO, *argv).refused(
        expected)


def test_predict_says_the_largest_image(workdir, capfd, monkeypatch):
    """A photo larger than memory allows is refused before it is decoded, naming the largest that fits here."""
    from hostile import png_header_only
    from segdeploy.evaluation import segment
    from segdeploy.models import footprint

    for module in (footprint, segment):
        monkeypatch.setattr(module, "memory_available_bytes", lambda: 2 * GB)
    (workdir / "huge.png").write_bytes(png_header_only(11000, 11000))  # 121 MP, under segdeploy's 134 MP cap
    line = run_cli(capfd, "predict", "--model", "segnext_t", "--backend", "torch", "--size", "64", "--source",
                   "huge.png").refused("enough for images up to about")
    assert "11000x11000" in line


@pytest.mark.parametrize("height, width", [(20000, 20000), (12000, 12000), (1, 200_000_000)])
def test_predict_caps_the_image_size(workdir, capfd, height, width):
    """Beyond segdeploy's size cap (134 MP) an image is refused from its header, before the model loads or the
    image decodes (a 20000x20000 scan used to run for minutes), whatever the memory."""
    from hostile import png_header_only

    (workdir / "huge.png").write_bytes(png_header_only(height, width))
    line = run_cli(capfd, "predict", "--model", "segnext_t", "--backend", "torch", "--source", "huge.png",
                   "--output", "m.png").refused("segments images of up to 134 MP")
    assert f"{height}x{width}" in line and not (workdir / "m.png").exists()


PEAK_RSS = """
import resource, sys
import numpy as np
from segdeploy import preprocess
logits = np.random.default_rng(0).standard_normal((1, 150, 64, 96)).astype(np.float32)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
mask = preprocess.logits_to_mask(logits, (int(sys.argv[1]), int(sys.argv[2])))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) * 1024, mask.shape, mask.dtype)
"""


def test_mask_memory_is_bounded_by_the_band_not_the_classes():
    """The mask of a 24 MP photo from 150 classes: resizing every class first would take 14 GB (150 float maps of
    24 M pixels); in bands, the peak RSS grows by the mask and the band budget only. Measured in a fresh process."""
    import subprocess
    import sys

    from hostile import cli_env

    done = subprocess.run([sys.executable, "-c", PEAK_RSS, "4000", "6000"], env=cli_env(), capture_output=True,
                          text=True, check=True)
    grown, *_ = done.stdout.split()
    assert "(1, 4000, 6000) uint8" in done.stdout
    assert int(grown) < 1 << 30, f"peak RSS grew by {int(grown) / 2**30:.1f} GB"


@pytest.mark.parametrize("argv", [
    ("export", "--bogus"), ("export",), ("--bogus",), (), ("validate",), ("predict", "--model", "segnext_t"),
    ("bench", "--precision", "fp64"), ("export", "--model", "segnext_t", "--fmt", "tflite"), ("frobnicate",),
])
def test_usage_errors_are_one_line(capfd, argv):
    outcome = run_cli(capfd, *argv)
    assert outcome.code == 2 and len(outcome.err_lines) == 1 and "Traceback" not in outcome.err, outcome.describe()
    assert "error:" in outcome.err_lines[0]
