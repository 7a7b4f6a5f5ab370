"""The flavour table: every record names a pass that exists, and what reads the table sees every flavour."""
from __future__ import annotations

import importlib

import pytest

from segdeploy import backends, flavours
from segdeploy.evaluation.bench import precision as pb
from segdeploy.evaluation.tolerances import TOLERANCES, tolerance_for
from segdeploy.export.precision import TARGETS, PrecisionOptions


@pytest.mark.parametrize("flavour", flavours.FLAVOURS.values(), ids=flavours.NAMES)
def test_each_flavour_names_a_pass_and_known_backends(flavour):
    module, name = flavour.pass_function.split(":")
    assert callable(getattr(importlib.import_module(f"segdeploy.export.passes.{module}"), name))
    assert flavour.fast_on and set(flavour.fast_on) <= set(backends.BACKENDS)
    assert flavour.float_kind in ("float32", "float16")
    assert flavour.builds_engine or flavour.not_for_engines  # TensorRT's refusal says why


def test_one_flavour_is_the_default_and_one_is_for_engines():
    assert flavours.DEFAULT in flavours.FLAVOURS and not flavours.get(flavours.DEFAULT).builds_engine
    assert flavours.get(flavours.FOR_ENGINES).builds_engine


def test_the_readers_see_every_flavour():
    assert TARGETS == flavours.NAMES
    assert {f.label for f in flavours.FLAVOURS.values()} <= set(pb.PRECISIONS)
    for flavour in flavours.FLAVOURS.values():
        for backend in flavour.fast_on:
            assert pb.INT8_FOR_BACKEND[backend] == flavour.label
            assert flavours.for_backend(backend) is flavour
        assert flavours.of_label(flavour.label) is flavour
    assert flavours.of_label("int8") is None and flavours.label("int8", "cpu") == "int8-cpu"


def test_a_float32_flavour_keeps_float32_io():
    for flavour in flavours.FLAVOURS.values():
        options = PrecisionOptions("int8", flavour.name, "float16", calib="images")
        if "float16" in flavour.io_dtypes:
            assert options.checked().io_dtype == "float16"
        else:
            with pytest.raises(Exception, match="keeps float32 I/O"):
                options.checked()


def test_each_flavour_is_judged_by_the_tolerance_its_record_names():
    for flavour in flavours.FLAVOURS.values():
        assert tolerance_for("int8", flavour.name) is TOLERANCES[flavour.tolerance]
    assert tolerance_for("fp16") is TOLERANCES["fp16"]
