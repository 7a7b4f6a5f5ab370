import os

# Before torch loads OpenMP: waiting threads sleep instead of spinning. On a shared 2-core machine a spinning thread
# holds a core its peer needs, and every small op waits for a descheduled thread (measured under load: the golden
# eval tests 202 s spinning, 75 s passive; numbers unchanged). Subprocesses of the tests inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

import real_tensorrt  # noqa: E402
from skips import ALLOWED_UNDER_CI, allowed_under_ci, under_ci  # noqa: E402

# The goldens were recorded with 2 threads; other counts move logits by ~1e-6 relative (well inside tolerance).
torch.set_num_threads(int(os.environ.get("SEGDEPLOY_TEST_THREADS", "2")))


def _skip_reason(report) -> str:
    if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    return str(report.longrepr)


def _fail_forbidden_skip(report) -> None:
    """Under CI=1 a skip for anything but absent hardware (tests/skips.py) is a failure: CI installs the rest."""
    if not (report.skipped and under_ci()) or hasattr(report, "wasxfail"):
        return
    reason = _skip_reason(report)
    if not allowed_under_ci(reason):
        report.outcome = "failed"
        report.longrepr = (f"skipped under CI=1: {reason}\nCI has every package and tool the suite needs; the only "
                           f"skips allowed there are for hardware, reasons starting with: "
                           f"{'; '.join(ALLOWED_UNDER_CI)} (tests/skips.py)")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    _fail_forbidden_skip(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    report = yield  # a module-level skip (importorskip at the top of a test file) skips at collection
    _fail_forbidden_skip(report)
    return report


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


@pytest.fixture(params=real_tensorrt.RELEASES, ids=real_tensorrt.release_id)
def trt_release(request):
    """Each pinned TensorRT release in turn: JetPack 6's 10.3, the newest 10.x and the newest 11.x."""
    return request.param


@pytest.fixture
def real_trt(trt_release):
    """NVIDIA's real ``tensorrt`` module of the release (tests/real_tensorrt.py); skips without the harness, except
    under CI."""
    return real_tensorrt.load(trt_release)


@pytest.fixture(scope="session")
def trained_exports(trained_fixture, tmp_path_factory):
    """The trained fixture exported in each precision and INT8 flavour (exports.TRAINED_PRECISIONS: name ->
    ExportResult), on first use, once per session."""
    from exports import TrainedExports

    return TrainedExports(trained_fixture, tmp_path_factory.mktemp("trained-exports"))
