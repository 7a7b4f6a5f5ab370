"""The backend registry: each record has its probe and runner, and the facts callers ask come from it."""
from __future__ import annotations

from segdeploy import backends, hostinfo
from segdeploy.export import triton
from segdeploy.runtimes import registry


def test_every_backend_has_a_probe_and_a_factory():
    assert set(registry.BACKENDS) == set(backends.BACKENDS)
    for name, record in registry.BACKENDS.items():
        assert record.probe is not None and record.factory is not None
        assert record.consumes == backends.get(name).consumes and record.label == backends.get(name).label


def test_versions_and_triton_platforms_come_from_the_records():
    for name, backend in backends.BACKENDS.items():
        assert hostinfo.DISTRIBUTIONS[name] == backend.distributions
    assert set(triton.PLATFORMS) == set(backends.TRITON_PLATFORMS)
    assert triton.serves_engine(backends.TENSORRT) and not triton.serves_engine(backends.ONNXRUNTIME)


def test_capabilities_are_fields():
    assert [b.name for b in backends.BACKENDS.values() if b.precision_hint] == [backends.OPENVINO]
    assert [b.name for b in backends.BACKENDS.values() if b.execution_providers] == [backends.ONNXRUNTIME]
    assert backends.label(backends.ONNXRUNTIME) == "ONNX Runtime" and backends.label("other") == "other"
