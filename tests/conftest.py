import os

import pytest
import torch

import real_tensorrt

# The goldens were recorded with 2 threads; other counts move logits by ~1e-6 relative (well inside tolerance).
torch.set_num_threads(int(os.environ.get("SEGDEPLOY_TEST_THREADS", "2")))


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


@pytest.fixture(params=real_tensorrt.RELEASES, ids=real_tensorrt.release_id)
def trt_release(request):
    """Each pinned TensorRT release in turn: JetPack 6's 10.3, the newest 10.x and the newest 11.x."""
    return request.param


@pytest.fixture
def real_trt(trt_release):
    """NVIDIA's real ``tensorrt`` module of the release (tests/real_tensorrt.py); skips without the harness, except
    under CI."""
    return real_tensorrt.load(trt_release)
