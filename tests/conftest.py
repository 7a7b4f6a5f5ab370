import os

import pytest
import torch

# The goldens were recorded with 2 threads; other counts move logits by ~1e-6 relative (well inside tolerance).
torch.set_num_threads(int(os.environ.get("SEGDEPLOY_TEST_THREADS", "2")))


@pytest.fixture(autouse=True)
def backend_cache(tmp_path_factory, monkeypatch):
    """Each test's own record of the fastest backends (segdeploy.runtimes.fastest), so a benchmark run by one test
    never steers another's default backend, nor the user's."""
    path = tmp_path_factory.mktemp("backend-cache") / "fastest-backends.json"
    monkeypatch.setenv("SEGDEPLOY_BACKEND_CACHE", str(path))
    return path


@pytest.fixture
def tmp_artifacts(tmp_path):
    return tmp_path


@pytest.fixture(scope="session")
def trained_fixture():
    """A small trained checkpoint (segdeploy.training.fixtures.TEST_FIXTURE) with its synthetic dataset.

    Trained once (a few minutes on 2 cores) and cached on disk under the fixture cache (``$SEGDEPLOY_CACHE/fixtures``
    or ``~/.cache/segdeploy/fixtures``), so later runs reuse it. The returned object has ``checkpoint``, ``model``,
    ``dataset_dir`` (ADE20K layout; its ``validation`` split is what ``miou`` was measured on), ``num_classes`` and
    ``miou`` (percent, PyTorch).
    """
    from segdeploy.evaluation.eval import evaluate_checkpoint
    from segdeploy.training.fixtures import TEST_FIXTURE, make_fixture

    return make_fixture(TEST_FIXTURE, evaluate_checkpoint, log=None)
