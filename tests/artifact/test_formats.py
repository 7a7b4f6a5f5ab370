"""The format table answers what a file name says: which format, which suffix to give a sibling."""
from __future__ import annotations

from segdeploy.artifact import formats


def test_a_name_says_its_format():
    assert formats.for_path("a/model.ONNX").name == "onnx"
    assert formats.for_path("m.engine").kind == formats.for_path("m.plan").kind == "engine"
    assert formats.for_path("m.json") is None and formats.for_path("folder") is None
    assert formats.is_onnx_name("x.onnx") and not formats.is_onnx_name("x.engine")
    assert formats.is_engine_name("x.PLAN") and not formats.is_engine_name("x.onnx")


def test_siblings_and_engine_formats():
    assert formats.with_suffix("out/cgrseg_t.engine", formats.ONNX_SUFFIX) == "out/cgrseg_t.onnx"
    assert formats.engine_format_of("x.plan") == "plan" and formats.engine_format_of("x.engine") == "engine"
    assert formats.engine_format_of(None) == "engine"
    assert set(formats.ENGINE_FORMATS.values()) == set(formats.ENGINE_SUFFIXES)
    assert set(formats.ARTIFACT_SUFFIXES) == {s for f in formats.FORMATS.values() for s in f.suffixes}
