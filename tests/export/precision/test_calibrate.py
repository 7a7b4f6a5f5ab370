"""Calibration: which images (dataset training split, evenly spaced, hashed), the refusal of an overlap with the
evaluation images, statistics (exact histogram growth, the three methods), the cache and the progress reports."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from precision_graphs import conv_softmax_model
from segdeploy.errors import InputError
from segdeploy.export.precision.calibrate import BINS, TensorStats, calibrate, collect
from segdeploy.export.precision.calibration_images import check_disjoint, image_files, select_images


def write_images(folder, count, size=(16, 16), start=0):
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(start, start + count):
        image = np.random.default_rng(i).integers(0, 256, (*size, 3), dtype=np.uint8)
        path = os.path.join(folder, f"img_{i:03d}.png")
        cv2.imwrite(path, image)
        paths.append(path)
    return paths


def test_dataset_folder_calibrates_on_its_training_split(tmp_path):
    write_images(tmp_path / "data" / "images" / "training", 10)
    write_images(tmp_path / "data" / "images" / "validation", 3, start=100)
    files, what = image_files(tmp_path / "data")
    assert what == "ade20k training split" and len(files) == 10
    assert all("training" in f for f in files)
    flat = write_images(tmp_path / "flat", 5)
    assert image_files(tmp_path / "flat") == (sorted(flat), "images")


def test_selection_is_fixed_evenly_spaced_and_hashed(tmp_path):
    paths = write_images(tmp_path / "imgs", 10)
    chosen = select_images(tmp_path / "imgs", 4)
    assert [os.path.basename(p) for p in chosen.paths] == ["img_000.png", "img_002.png", "img_005.png",
                                                           "img_007.png"]
    assert select_images(tmp_path / "imgs", 4) == chosen  # same folder, same count: same images, same hash
    assert select_images(tmp_path / "imgs", 20).paths == tuple(paths)  # fewer images than asked: all of them
    assert chosen.sha256 != select_images(tmp_path / "imgs", 5).sha256
    provenance = chosen.provenance()
    assert provenance["count"] == 4 and len(provenance["image_digests"]) == 4


def test_bad_calibration_folders_are_one_line(tmp_path):
    with pytest.raises(InputError, match="must be a folder"):
        image_files(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        image_files(tmp_path / "empty")
    write_images(tmp_path / "imgs", 2)
    with pytest.raises(InputError, match="at least 1"):
        select_images(tmp_path / "imgs", 0)


def test_overlap_with_the_evaluation_images_is_refused(tmp_path):
    calibration = select_images(os.path.dirname(write_images(tmp_path / "calib", 4)[0]), 4)
    others = write_images(tmp_path / "val", 3, start=50)
    check_disjoint(calibration.digests, others, "the accuracy")  # disjoint: fine
    copy = tmp_path / "val" / "renamed_copy.png"
    copy.write_bytes(open(calibration.paths[1], "rb").read())  # same content under another name
    with pytest.raises(InputError, match="1 of the images the accuracy is measured on were used for calibration"):
        check_disjoint(calibration.digests, [*others, str(copy)], "the accuracy")


def test_histogram_growth_is_exact():
    rng = np.random.default_rng(0)
    small, large = rng.uniform(-0.9, 0.9, 5000), rng.uniform(-7.5, 7.5, 5000)
    grown = TensorStats()
    grown.add(small.astype(np.float32))
    grown.add(large.astype(np.float32))
    assert grown.radius == 8.0 and grown.low == pytest.approx(min(small.min(), large.min()))
    direct, _ = np.histogram(np.concatenate([small, large]).astype(np.float32), bins=BINS, range=(-8, 8))
    # the first batch was binned at radius 1, then merged 8 bins at a time: identical to binning at radius 8
    np.testing.assert_array_equal(grown.hist, direct)
    assert grown.hist.sum() == 10000


def table_of(values: np.ndarray):
    from segdeploy.export.precision.calibrate import RangeTable

    stats = TensorStats()
    stats.add(values.astype(np.float32))
    return RangeTable(["t"], np.array([stats.low]), np.array([stats.high]), np.array([stats.radius]),
                      stats.hist[None], {"alias": "t"}, {})


def test_methods_clip_outliers_differently():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 1, 200_000), [40.0, -35.0]])
    table = table_of(values)
    assert table.range("t", "minmax") == pytest.approx((-35.0, 40.0))
    assert table.range("t", "minmax", symmetric=True) == pytest.approx((-40.0, 40.0))
    low, high = table.range("t", "percentile", 99.9)
    assert -3.6 < low < -2.9 and 2.9 < high < 3.6  # the 0.1% tails of a unit normal are at +-3.09
    entropy = table.range("t", "entropy", symmetric=True)[1]
    assert 2.0 < entropy < 20.0  # KL keeps most of the mass and drops the two outliers
    assert table.range("alias", "minmax") == table.range("t", "minmax")  # movement outputs take their input's
    assert table.range("unknown") is None
    with pytest.raises(InputError, match="--calib-method"):
        table.range("t", "mse")


def test_collect_caches_and_reports_progress(tmp_path):
    model = conv_softmax_model()
    images = select_images(os.path.dirname(write_images(tmp_path / "imgs", 3, size=(8, 8))[0]), 3)

    def prepare(path):
        image = cv2.imread(path).astype(np.float32) / 255
        return {"x": image.transpose(2, 0, 1)[None]}

    seen = []
    table, cached = calibrate(model, images, prepare, input_shape=(1, 8, 8), graph_sha256="abc",
                              cache_dir=str(tmp_path / "cache"), progress=lambda text, frac=None: seen.append(frac))
    assert not cached and seen[0] == 0 and seen[-1] == 1.0 and len(seen) == 4
    assert {"x", "c", "s", "y"} <= set(table.names) and table.aliases["r"] == "s"  # Reshape: an alias
    low, high = table.minmax("s")
    assert 0 <= low <= high <= 1  # Softmax outputs
    again, cached = calibrate(model, images, prepare, input_shape=(1, 8, 8), graph_sha256="abc",
                              cache_dir=str(tmp_path / "cache"))
    assert cached and again.names == table.names and np.array_equal(again.hist, table.hist)
    assert again.provenance == images.provenance()
    _, cached = calibrate(model, images, prepare, input_shape=(1, 8, 8), graph_sha256="other graph",
                          cache_dir=str(tmp_path / "cache"))
    assert not cached  # another graph: its own statistics
    direct = collect(model, (prepare(p) for p in images.paths), total=3)
    np.testing.assert_array_equal(direct.high, table.high)
