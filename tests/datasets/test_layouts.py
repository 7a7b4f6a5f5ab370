"""Each layout's reader on small generated folders, and one clear InputError per defect."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from segdeploy.datasets.layouts import open_dataset
from segdeploy.errors import InputError


def write_image(path, h=20, w=30, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cv2.imwrite(str(path), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def write_mask(path, values):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.asarray(values, np.uint8))


def make_ade(root, n=3, split="validation"):
    for i in range(n):
        write_image(root / "images" / split / f"ADE_{i:03d}.jpg", seed=i)
        write_mask(root / "annotations" / split / f"ADE_{i:03d}.png", np.full((20, 30), i + 1))
    return root


def make_cityscapes(root, cities=("aachen", "bonn")):
    for j, city in enumerate(cities):
        for i in range(2):
            stem = f"{city}_{i:06d}_000019"
            write_image(root / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png", seed=i)
            write_mask(root / "gtFine" / "val" / city / f"{stem}_gtFine_labelTrainIds.png",
                       np.full((20, 30), j * 2 + i))
    return root


def make_pairs(root, stems=("b", "a", "c")):
    for i, stem in enumerate(stems):
        write_image(root / "images" / f"{stem}.jpg", seed=i)
        write_mask(root / "masks" / f"{stem}.png", np.full((20, 30), i))
    return root


def test_ade20k_reads_sorted_pairs_with_reduce_zero_label(tmp_path):
    root = make_ade(tmp_path / "ade")
    ds = open_dataset(root)
    assert ds.layout == "ade20k" and ds.split == "validation" and ds.reduce_zero_label and ds.num_classes == 150
    assert [s.name for s in ds.samples] == [f"images/validation/ADE_{i:03d}.jpg" for i in range(3)]
    sample = ds.samples[1]
    image = ds.read_image(sample)
    label = ds.read_label(sample, image_shape=image.shape)
    assert image.shape == (20, 30, 3) and label.dtype == np.int64
    assert (label == 1).all()  # stored 2 -> class 1
    write_mask(root / "annotations" / "validation" / "ADE_000.png", np.zeros((20, 30)))
    assert (ds.read_label(ds.samples[0]) == 255).all()  # 0 ("other") is ignored
    assert open_dataset(root).head(2).samples == ds.samples[:2]


def test_cityscapes_walks_the_city_folders(tmp_path):
    ds = open_dataset(make_cityscapes(tmp_path / "cs"))
    assert ds.layout == "cityscapes" and ds.num_classes == 19 and not ds.reduce_zero_label
    assert len(ds) == 4 and ds.class_names[0] == "road" and len(ds.palette) == 19
    assert ds.samples[0].name == "leftImg8bit/val/aachen/aachen_000000_000019_leftImg8bit.png"
    assert ds.samples[0].label.endswith("gtFine/val/aachen/aachen_000000_000019_gtFine_labelTrainIds.png")
    assert (ds.read_label(ds.samples[3]) == 3).all()


def test_pairs_match_stems_and_take_classes_from_dataset_json(tmp_path):
    root = make_pairs(tmp_path / "pairs")
    ds = open_dataset(root)
    assert ds.layout == "pairs" and ds.num_classes is None and not ds.reduce_zero_label
    assert [s.name for s in ds.samples] == ["images/a.jpg", "images/b.jpg", "images/c.jpg"]
    assert (ds.read_label(ds.samples[0]) == 1).all()
    (root / "dataset.json").write_text(json.dumps({"classes": ["sky", "road", "tree"],
                                                   "palette": [[0, 0, 255], [128, 128, 128], [0, 255, 0]]}))
    ds = open_dataset(root)
    assert ds.num_classes == 3 and ds.class_names == ("sky", "road", "tree") and ds.palette[2] == (0, 255, 0)


def test_an_explicit_layout_and_split(tmp_path):
    root = make_ade(tmp_path / "ade", n=2, split="training")
    make_ade(root, n=1)
    assert len(open_dataset(root, "ade20k", split="training")) == 2
    assert len(open_dataset(root, "ade20k")) == 1
    with pytest.raises(InputError, match="is not a cityscapes dataset: leftImg8bit/val/ not found"):
        open_dataset(root, "cityscapes")
    with pytest.raises(InputError, match="--layout must be auto or one of"):
        open_dataset(root, "voc")


@pytest.mark.parametrize("case", ["no folder", "not a dataset", "empty", "missing mask", "size mismatch",
                                  "out of range", "unreadable image", "unreadable mask", "colour mask",
                                  "shared stem", "bad dataset.json"])
def test_every_defect_is_one_clear_input_error(tmp_path, case):
    root = tmp_path / "ds"
    expected = {
        "no folder": "dataset folder not found",
        "not a dataset": "does not look like a dataset; expected one of: ADE20K",
        "empty": "no images",
        "missing mask": "1 of 3 images have no mask (first: images/validation/ADE_001.jpg, expected "
                        "annotations/validation/ADE_001.png)",
        "size mismatch": "is 20x31 (HxW) but its image",
        "out of range": "holds label value 151, outside the 150 classes (1..150 (0 is ignored",
        "unreadable image": "cannot decode image",
        "unreadable mask": "cannot decode mask",
        "colour mask": "is a colour image; expected one channel",
        "shared stem": "share the stem 'a'",
        "bad dataset.json": "dataset.json is corrupt: not valid JSON",
    }[case]
    if case == "no folder":
        pass
    elif case == "not a dataset":
        root.mkdir()
        (root / "pictures").mkdir()
    elif case == "empty":
        (root / "images" / "validation").mkdir(parents=True)
        (root / "annotations" / "validation").mkdir(parents=True)
    elif case == "missing mask":
        make_ade(root)
        (root / "annotations" / "validation" / "ADE_001.png").unlink()
    elif case == "shared stem":
        make_pairs(root, stems=("a",))
        write_image(root / "images" / "a.png")
    elif case == "bad dataset.json":
        make_pairs(root)
        (root / "dataset.json").write_text("{classes")
    else:
        make_ade(root)
        mask = root / "annotations" / "validation" / "ADE_000.png"
        image = root / "images" / "validation" / "ADE_000.jpg"
        if case == "size mismatch":
            write_mask(mask, np.ones((20, 31)))
        elif case == "out of range":
            values = np.ones((20, 30))
            values[5, 5] = 151
            write_mask(mask, values)
        elif case == "unreadable image":
            image.write_bytes(b"not a jpeg")
        elif case == "unreadable mask":
            mask.write_bytes(b"not a png")
        elif case == "colour mask":
            cv2.imwrite(str(mask), np.dstack([np.ones((20, 30), np.uint8), np.zeros((20, 30), np.uint8),
                                              np.ones((20, 30), np.uint8)]))
    with pytest.raises(InputError) as info:
        ds = open_dataset(root)
        for sample in ds.samples:
            image = ds.read_image(sample)
            ds.read_label(sample, image_shape=image.shape)
    message = str(info.value)
    assert expected in message, message
    assert "\n" not in message


def test_label_range_follows_the_class_count_asked_for(tmp_path):
    root = make_pairs(tmp_path / "pairs")
    ds = open_dataset(root)
    assert (ds.read_label(ds.samples[2], num_classes=3) == 2).all()
    with pytest.raises(InputError, match="holds label value 2, outside the 2 classes \\(0..1\\)"):
        ds.read_label(ds.samples[2], num_classes=2)
    write_mask(root / "masks" / "c.png", np.full((20, 30), 255))
    assert (ds.read_label(ds.samples[2], num_classes=2) == 255).all()
