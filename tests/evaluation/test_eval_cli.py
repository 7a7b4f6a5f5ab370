"""segdeploy eval end to end: bad datasets are one line and exit 2; on a trained fixture, every FP32 backend scores
what PyTorch scores."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from hostile import answer_lines
from segdeploy.cli import main
from segdeploy.runtimes.registry import backend_status


def make_pairs(root, n=2, size=(48, 64), value=3):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(root / "images" / f"{i}.jpg"), rng.integers(0, 256, (*size, 3), dtype=np.uint8))
        cv2.imwrite(str(root / "masks" / f"{i}.png"), np.full(size, value, np.uint8))
    return root


def eval_error(capsys, *args):
    capsys.readouterr()
    code = main(["eval", *args])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = answer_lines(err)  # an error found while evaluating follows the progress lines of what ran before it
    assert len(lines) == 1 and lines[0].startswith("segdeploy eval: error: "), err
    return err


@pytest.mark.parametrize("case", ["no folder", "empty folder", "missing mask", "size mismatch", "out of range",
                                  "class mismatch", "nothing to evaluate"])
def test_bad_datasets_are_one_line_and_exit_2(tmp_path, capsys, case):
    root = tmp_path / "d"
    args = ["--model", "cgrseg_t", "--data", str(root)]
    expected = {"no folder": "dataset folder not found", "empty folder": "no images",
                "missing mask": "1 of 2 images have no mask (first: images/1.jpg, expected masks/1.png)",
                "size mismatch": "is 48x65 (HxW) but its image", "out of range": "holds label value 200",
                "class mismatch": "predicts 150 classes but the dataset has 2 (dataset.json)",
                "nothing to evaluate": "nothing to evaluate"}[case]
    if case == "empty folder":
        (root / "images").mkdir(parents=True)
        (root / "masks").mkdir()
    elif case != "no folder":
        make_pairs(root)
    if case == "missing mask":
        (root / "masks" / "1.png").unlink()
    elif case == "size mismatch":
        cv2.imwrite(str(root / "masks" / "1.png"), np.zeros((48, 65), np.uint8))
    elif case == "out of range":
        cv2.imwrite(str(root / "masks" / "0.png"), np.full((48, 64), 200, np.uint8))
    elif case == "class mismatch":
        (root / "dataset.json").write_text(json.dumps({"classes": ["a", "b"]}))
    elif case == "nothing to evaluate":
        args = ["--data", str(root)]
    assert expected in eval_error(capsys, *args)


def test_a_class_mismatch_says_where_to_get_matching_weights(tmp_path, capsys):
    root = make_pairs(tmp_path / "d")
    (root / "dataset.json").write_text(json.dumps({"classes": ["a", "b"]}))
    err = eval_error(capsys, "--model", "cgrseg_t", "--data", str(root), "--backend", "onnxruntime",
                     "--cache-dir", str(tmp_path / "cache"))
    assert "cgrseg_t (recipe weights) predicts 150 classes but the dataset has 2" in err
    assert "--checkpoint FILE" in err and "`segdeploy fixtures --quick`" in err
    assert not (tmp_path / "cache").exists()  # refused before a minute of export, not after


def test_recipe_weights_run_end_to_end_and_reports_refuse_to_overwrite(tmp_path, capsys):
    root = make_pairs(tmp_path / "d", n=2)
    out_json, out_md = tmp_path / "r.json", tmp_path / "r.md"
    assert main(["eval", "--model", "cgrseg_t", "--data", str(root), "--json", str(out_json), "--md",
                 str(out_md)]) == 0
    report = json.loads(out_json.read_text())
    assert report["images"] == 2 and len(report["per_class"]) == 150
    assert {"miou", "macc", "aacc", "per_class", "images", "images_per_s"} <= set(report)
    assert out_md.read_text().startswith("# Evaluation: cgrseg_t (recipe weights) on torch")
    capsys.readouterr()
    assert "exists; pass --force" in eval_error(capsys, "--model", "cgrseg_t", "--data", str(root), "--json",
                                                str(out_json))
    assert main(["eval", "--model", "cgrseg_t", "--data", str(root), "--json", str(out_json), "--force",
                 "--limit", "1"]) == 0
    assert json.loads(out_json.read_text())["images"] == 1


def test_trained_fixture_is_confident_and_reproduced_by_eval(trained_fixture, capsys, tmp_path):
    assert trained_fixture.miou >= 60, trained_fixture.record
    out = tmp_path / "torch.json"
    assert main(["eval", "--model", trained_fixture.model, "--checkpoint", trained_fixture.checkpoint, "--data",
                 trained_fixture.dataset_dir, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["miou"] == pytest.approx(trained_fixture.miou, abs=1e-9)
    names = [row["name"] for row in report["per_class"]]
    assert names[:3] == ["brick", "grass", "gravel"] and len(names) == trained_fixture.num_classes
    assert "brick" in capsys.readouterr().out


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_fp32_backends_match_pytorch_on_the_trained_fixture(trained_fixture, tmp_path, tmp_path_factory, backend):
    if not backend_status(backend).available:
        pytest.skip(f"{backend} is not usable here: {backend_status(backend).reason}")
    out = tmp_path / f"{backend}.json"
    assert main(["eval", "--model", trained_fixture.model, "--checkpoint", trained_fixture.checkpoint, "--data",
                 trained_fixture.dataset_dir, "--backend", backend, "--reference", trained_fixture.model,
                 "--cache-dir", str(tmp_path_factory.getbasetemp() / "eval-cache"), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert abs(report["reference"]["miou_delta"]) <= 0.1
    assert report["reference"]["pixel_agreement"] >= 99.5
    assert report["reference"]["miou"] == pytest.approx(trained_fixture.miou, abs=1e-9)


def test_a_static_mask_output_artifact_scores_what_pytorch_scores(trained_fixture, tmp_path, capsys):
    from segdeploy.export.onnx import export_onnx

    artifact = tmp_path / "fixture_mask.onnx"
    # the fixture's 256x256 images go through the test resize to 512x512: the artifact's own fixed size
    export_onnx(trained_fixture.model, artifact, checkpoint=trained_fixture.checkpoint, height=512, width=512,
                outputs="mask")
    out = tmp_path / "artifact.json"
    assert main(["eval", str(artifact), "--data", trained_fixture.dataset_dir, "--reference", trained_fixture.model,
                 "--reference-checkpoint", trained_fixture.checkpoint, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["model"] == "fixture_mask.onnx on onnxruntime"
    # not bit-comparable: the graph resizes logits to its 512x512 input, takes the argmax, and eval then resizes the
    # mask (nearest) to the 256x256 label, where PyTorch's logits go straight to 256x256; boundaries move a little
    assert abs(report["reference"]["miou_delta"]) <= 1.0 and report["reference"]["pixel_agreement"] >= 98
    assert "--checkpoint goes with --model" in eval_error(capsys, str(artifact), "--data",
                                                          trained_fixture.dataset_dir, "--checkpoint",
                                                          trained_fixture.checkpoint)
