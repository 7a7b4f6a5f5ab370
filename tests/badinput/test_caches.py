"""Files segdeploy wrote for itself and reads back (the calibration range cache, the accuracy fixtures' records, the
complexity table) are still files: damaged or edited, each is treated as absent and made again, never an internal
error, never trusted."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

DAMAGE = {
    "empty": b"",
    "not JSON": b"{val: ",
    "a list": b"[1, 2]",
    "nested 100000 deep": b"[" * 100_000 + b"]" * 100_000,
    "miou a string": json.dumps({"val": {"miou": "high"}}).encode(),
    "miou NaN": b'{"val": {"miou": NaN}}',
    "miou out of range": json.dumps({"val": {"miou": 1e9}}).encode(),
    "no val": json.dumps({"train": {}}).encode(),
}


@pytest.mark.parametrize("name", sorted(DAMAGE))
def test_a_damaged_fixture_record_is_a_missing_fixture(tmp_path, name):
    import os

    from segdeploy.training.fixtures import CHECKPOINT_FILE, FIXTURES, RECORD_FILE, fixture_dir, load_fixture

    recipe = next(iter(FIXTURES.values()))
    folder = fixture_dir(recipe, str(tmp_path))
    os.makedirs(folder)
    with open(os.path.join(folder, CHECKPOINT_FILE), "wb") as f:
        f.write(b"not read here")
    with open(os.path.join(folder, RECORD_FILE), "wb") as f:
        f.write(DAMAGE[name])
    assert load_fixture(recipe, str(tmp_path)) is None


def _range_table(**changes) -> bytes:
    arrays = {"names": np.array(["a", "b"]), "low": np.zeros(2), "high": np.ones(2), "radius": np.ones(2),
              "hist": np.zeros((2, 8), np.float32),
              "meta": np.array(json.dumps({"aliases": {}, "provenance": {}, "version": 1}))}
    arrays.update(changes)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


RANGE_DAMAGE = {
    "empty": lambda: b"",
    "not a zip": lambda: b"PK\x03\x04 but nothing else",
    "truncated": lambda: _range_table()[:200],
    "meta not JSON": lambda: _range_table(meta=np.array("{")),
    "meta a list": lambda: _range_table(meta=np.array("[1]")),
    "aliases a list": lambda: _range_table(meta=np.array(json.dumps({"aliases": [], "provenance": {},
                                                                     "version": 1}))),
    "lengths differ": lambda: _range_table(low=np.zeros(5)),
    "hist of rank 1": lambda: _range_table(hist=np.zeros(2)),
}


@pytest.mark.parametrize("name", sorted(RANGE_DAMAGE))
def test_a_damaged_range_cache_is_made_again(tmp_path, name, monkeypatch):
    import importlib

    calibrate = importlib.import_module("segdeploy.export.precision.calibrate")
    monkeypatch.setattr(calibrate, "STATS_VERSION", 1)
    path = tmp_path / "ranges.npz"
    path.write_bytes(RANGE_DAMAGE[name]())
    assert calibrate.RangeTable.load(str(path)) is None
    path.write_bytes(_range_table())
    assert calibrate.RangeTable.load(str(path)) is not None  # the intact table loads: the cases above are damage


def test_the_range_table_helper_writes_zip_files():
    assert zipfile.is_zipfile(io.BytesIO(_range_table()))
