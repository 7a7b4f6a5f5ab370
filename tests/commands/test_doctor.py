"""segdeploy doctor: every backend listed, usable or with its reason; the CPU and the library versions."""
from __future__ import annotations

import json

from segdeploy.cli import main
from segdeploy.runtimes import registry


def test_doctor_json(capsys):
    assert main(["doctor", "--json", "-"]) == 0
    info = json.loads(capsys.readouterr().out)
    backends = {b["name"]: b for b in info["backends"]}
    assert set(backends) == set(registry.BACKENDS)
    for b in backends.values():
        assert isinstance(b["available"], bool) and (b["available"] or b["reason"])
    assert backends["torch"]["available"] and backends["torch"]["version"]
    cpu = info["machine"]["cpu"]
    assert cpu["model"] and cpu["usable_cores"] >= 1 and isinstance(cpu["isa"], list)
    assert {t["name"] for t in info["tools"]} >= {"onnxsim", "matplotlib", "openvino", "tensorrt"}
    assert info["default_cpu_backend"] == registry.fastest_cpu_backend()
    assert "INT8" in info["int8"]


def test_doctor_tables_name_every_backend_and_the_reason_for_missing_ones(capsys, monkeypatch):
    real = registry.backend_status

    def no_openvino(name):
        if name == "openvino":
            return registry.BackendStatus("openvino", False, reason="ov-missing",
                                          consumes="onnx")
        return real(name)

    monkeypatch.setattr(registry, "backend_status", no_openvino)
    from segdeploy.commands import doctor

    monkeypatch.setattr(doctor, "TOOLS", (("openvino-absent", "a test extra", "pip install 'segdeploy[openvino]'"),))
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for name in registry.BACKENDS:
        assert name in out
    assert "ov-missing" in out  # short: rich wraps long cells
    assert "pip install 'segdeploy[openvino]'" in out  # the extra's name survives the table markup
    assert "default CPU backend for bench and predict:" in out
    assert "ISA" in out and "cores" in out and "INT8 on this CPU" in out
