"""Validation: the comparators on known numbers, the CLI on a real artifact, and --locate on a corrupted graph."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from exports import export
from goldens import IMAGES
from hostile import answer_lines
from segdeploy import models
from segdeploy.cli import main
from segdeploy.errors import CheckpointError, SegdeployError
from segdeploy.evaluation.compare import OutputReport, agreement, compare_runners, confusion, mean_iou, numeric_stats
from segdeploy.evaluation.tolerances import TOLERANCES
from segdeploy.evaluation.validate import validate_artifact
from segdeploy.runtimes.base import Runner, TensorInfo

# ----------------------------------------------------------------------------------------------------------------
# Comparators


def test_numeric_stats_on_known_arrays():
    ref = np.array([[1.0, -2.0], [4.0, 0.0]], np.float32)
    out = ref + np.array([[0.0, 0.5], [-1.0, 0.0]], np.float32)
    stats = numeric_stats(ref, out)
    assert stats["max_abs_err"] == 1.0 and stats["max_abs_ref"] == 4.0 and stats["max_rel_err"] == 0.25
    assert stats["mean_abs_err"] == pytest.approx(1.5 / 4)
    expected_cos = float(ref.ravel() @ out.ravel() / (np.linalg.norm(ref) * np.linalg.norm(out)))
    assert stats["cosine"] == pytest.approx(expected_cos)


def test_label_agreement_and_miou_on_known_masks():
    ref = np.array([0, 0, 1, 1, 2, 2])
    out = np.array([0, 1, 1, 1, 2, 2])
    conf = confusion(ref, out, num_classes=3)
    assert agreement(conf) == pytest.approx(5 / 6)
    # IoU: class 0 = 1/2, class 1 = 2/3, class 2 = 1
    assert mean_iou(conf) == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert mean_iou(confusion(ref, ref, 3)) == 1.0
    # a label the model cannot produce lands in the extra 'invalid' bin and counts as a disagreement
    assert agreement(confusion(np.array([0, 1]), np.array([0, 7]), 3)) == 0.5


def test_logits_tolerance_scales_with_the_reference():
    ref = np.zeros((1, 3, 4, 4), np.float32)
    ref[0, 0] = 1000.0  # max |ref| = 1000 -> tolerance 0.1
    report = OutputReport("logits", "logits", 3, TOLERANCES["fp32"])
    assert report.add(ref, ref + 0.05, (8, 8), False)
    assert not report.add(ref, ref + 0.2, (8, 8), False)
    assert report.cases == 2 and report.failed_cases == 1 and not report.passed
    assert report.max_abs_err == pytest.approx(0.2, rel=1e-3)  # 1000.2 in float32


def test_non_finite_outputs_fail_instead_of_hiding_in_max():
    ref = np.ones((1, 3, 4, 4), np.float32)
    report = OutputReport("logits", "logits", 3, TOLERANCES["fp32"])
    assert not report.add(ref, np.full_like(ref, np.nan), (8, 8), False)
    assert not report.add(np.full_like(ref, np.inf), ref, (8, 8), False)
    assert not report.passed and report.nonfinite == 2 * ref.size and "non-finite" in report.errors[0]


def test_tolerances_are_one_row_per_precision():
    ref = np.zeros((1, 3, 4, 4), np.float32)
    ref[0, 0] = 10.0
    noisy = ref + 0.01  # far beyond FP32 rounding, harmless for FP16's masks and direction
    assert not OutputReport("logits", "logits", 3, TOLERANCES["fp32"]).add(ref, noisy, (8, 8), False)
    assert OutputReport("logits", "logits", 3, TOLERANCES["fp16"]).add(ref, noisy, (8, 8), False)
    flipped = ref.copy()
    flipped[0, 1] = 20.0  # every pixel's label changes
    assert not OutputReport("logits", "logits", 3, TOLERANCES["fp16"]).add(ref, flipped, (8, 8), False)


class ArrayRunner(Runner):
    """A fake backend: logits = a fixed function of the input, optionally perturbed."""
    backend = "fake"

    def __init__(self, noise: float = 0.0):
        super().__init__()
        self.noise = noise

    def inputs(self):
        return [TensorInfo("input", ("batch", 3, "height", "width"), "float32")]

    def outputs(self):
        return [TensorInfo("logits", ("batch", 4, "h", "w"), "float32")]

    def _infer(self, feed):
        x = feed["input"][:, :, ::8, ::8]
        logits = np.concatenate([x, -x.sum(1, keepdims=True)], axis=1)
        return {"logits": logits + self.noise * np.sign(logits)}


def test_compare_runners_passes_equal_backends_and_fails_perturbed_ones():
    rng = np.random.default_rng(0)
    feeds = [(f"case{i}", {"input": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)}) for i in range(3)]
    good = compare_runners(ArrayRunner(), ArrayRunner(), feeds, num_classes=4)
    assert good.passed and good.summary()["max_abs_err"] == 0 and good.summary()["mask_agreement"] == 1.0
    bad = compare_runners(ArrayRunner(), ArrayRunner(noise=0.5), feeds, num_classes=4)
    assert not bad.passed and "(failed on 3 of 3 inputs)" in bad.failure_line()
    assert bad.failure_line().startswith("logits: max abs error / max(1, max|ref|), worst input ")
    assert bad.summary()["cosine"] < 1.0


def _labels(agreeing: float, size: int = 100) -> tuple[np.ndarray, np.ndarray]:
    reference = np.zeros((1, size), np.int64)
    actual = reference.copy()
    actual[0, int(round(agreeing * size)):] = 1
    return reference, actual


def test_int8_agreement_is_shown_as_judged_over_the_real_images():
    """The INT8 table once printed the agreement over every input (93%) as 'ok' under a '>= 95%' line, because
    INT8 judges it over the real images only; every check now shows the figure it is judged by."""
    report = OutputReport("mask", "mask", 2, TOLERANCES["int8"])
    for _ in range(3):  # seeded noise inputs agree less
        report.add(*_labels(0.85), (1, 100), False)
    for _ in range(2):
        report.add(*_labels(0.98), (1, 100), False, image=True)
    assert report.mask_agreement < 0.95 and report.passed  # pooled 90.2%, real images 98%
    [check] = report.checks()
    assert check["criterion"] == "label agreement over the 2 real images"
    assert check["value"] == pytest.approx(0.98) and check["passed"] and check["op"] == ">="

    failing = OutputReport("mask", "mask", 2, TOLERANCES["int8"])
    for _ in range(9):
        failing.add(*_labels(0.93), (1, 100), False, image=True)
    assert failing.failed_cases == 0 and not failing.passed  # no input fails alone; together they do
    from segdeploy.evaluation.compare import ValidationReport

    line = ValidationReport({"mask": failing}, [], {}, {}, TOLERANCES["int8"]).failure_line()
    assert line == "mask: label agreement over the 9 real images 93.00%, needs >= 95.0%"
    assert "0/9" not in line


def test_every_check_passes_exactly_when_its_figure_meets_its_requirement():
    from segdeploy.evaluation.compare import check, required, shown, toward_failing

    rng = np.random.default_rng(1)
    for precision, tolerance in TOLERANCES.items():
        for _ in range(20):
            noise = float(rng.uniform(0, 0.3))
            ref = rng.standard_normal((1, 4, 8, 8)).astype(np.float32)
            out = OutputReport("logits", "logits", 4, tolerance)
            out.add(ref, ref + noise * rng.standard_normal(ref.shape).astype(np.float32), (64, 64), False,
                    image=True)
            rows = out.checks()
            assert rows and out.passed == all(c["passed"] for c in rows), precision
            for c in rows:
                meets = c["value"] >= c["limit"] if c["op"] == ">=" else c["value"] <= c["limit"]
                assert c["passed"] == meets
                # what a manifest records meets the requirement exactly when the figure did
                recorded = toward_failing(c["value"], c["op"])
                assert (recorded >= c["limit"] if c["op"] == ">=" else recorded <= c["limit"]) == meets
    row = check("x", "label agreement", 0.99949, "%", ">=", 0.999)
    assert (shown(row["value"], row["unit"], ">="), required(row), row["passed"]) == ("99.94%", ">= 99.9%", True)
    row = check("x", "label agreement", 0.99896, "%", ">=", 0.999)
    assert (shown(row["value"], row["unit"], ">="), row["passed"]) == ("99.89%", False)  # not '99.90%'
    assert shown(1.00004e-4, "", "<=") == "0.0001001" and shown(0.93, "%", ">=") == "93.00%"
    assert toward_failing(0.98995, ">=") == 0.9899 and toward_failing(1.00004e-4, "<=") == 1.001e-4


# ----------------------------------------------------------------------------------------------------------------
# On a real artifact


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    path = tmp_path_factory.mktemp("validate") / "segnext_t.onnx"
    return export("segnext_t", path, height=256, width=320).path


def run_validate(capsys, *args):
    code = main(["validate", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_validate_cli_on_seeded_inputs_and_a_real_image(artifact, capsys, tmp_path):
    report_path = tmp_path / "report.json"
    code, out, err = run_validate(capsys, artifact, "--n", "2", "--images", str(IMAGES), "--json",
                                  str(report_path), "--threads", "2")
    assert code == 0, err
    assert "PASSED" in out
    # the verdict: each criterion with the figure it is judged by and its requirement
    assert "tolerance (fp32): each criterion, the figure it is judged by" in out
    assert "label agreement, worst input" in out and ">= 99.9%" in out and "FAIL" not in out
    report = json.loads(report_path.read_text())
    assert [c["criterion"] for c in report["checks"]] == ["max abs error / max(1, max|ref|), worst input",
                                                          "label agreement, worst input"]
    for key in ("passed", "max_abs_err", "cosine", "mask_agreement", "miou_vs_reference"):
        assert key in report
    assert report["passed"] and report["max_abs_err"] < 1e-4 and report["mask_agreement"] >= 0.999
    sources = [case["source"] for case in report["case_results"]]
    assert sources[:2] == ["seeded:0", "seeded:1"] and sources[2].endswith("grace_hopper.jpg")


def test_validate_reads_a_dynamic_artifact_at_two_shapes(tmp_path):
    path = export("segnext_t", tmp_path / "dyn.onnx", height=256, width=256, dynamic=True, verify=False).path
    report = validate_artifact(path, n=2, threads=2)
    assert report.passed
    assert sorted({tuple(c["input_shape"]) for c in report.cases}) == [(1, 3, 256, 256), (2, 3, 384, 640)]


def test_locate_names_the_node_fed_by_a_corrupted_initializer(artifact, capsys, tmp_path):
    model = onnx.load(artifact)
    initializers = {init.name: init for init in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv" and n.input[1] in initializers]
    target = convs[len(convs) // 2]  # a conv in the middle of the backbone
    weight = initializers[target.input[1]]
    corrupted = numpy_helper.to_array(weight) * 1.5
    weight.CopyFrom(numpy_helper.from_array(corrupted, weight.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))  # the manifest travels along, so validate knows what it should be

    report_path = tmp_path / "locate.json"
    code, out, _ = run_validate(capsys, str(broken), "--n", "1", "--locate", "--json", str(report_path),
                                "--threads", "2")
    assert code == 1 and "FAILED" in out
    located = json.loads(report_path.read_text())["locate"]
    assert located["found"] and located["node"] == target.name and weight.name in located["weights"]
    assert target.name in out and "edited since" in out


def test_a_healthy_artifact_has_nothing_to_locate(artifact):
    report = validate_artifact(artifact, n=1, locate=True, threads=2)
    assert report.passed and "nothing to locate" in report.locate["skipped"]
    assert report.graph_unchanged


def test_bad_artifacts_and_arguments_give_one_line(artifact, capsys, tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a protobuf")
    code, _, err = run_validate(capsys, str(junk))
    assert code == 2 and "not a readable ONNX model" in err and len(answer_lines(err)) == 1
    code, _, err = run_validate(capsys, str(tmp_path / "missing.onnx"))
    assert code == 2 and "not found" in err
    code, _, err = run_validate(capsys, artifact, "--size", "100")
    assert code == 2 and "outside the artifact's profile" in err
    code, _, err = run_validate(capsys, artifact, "--json", artifact)
    assert code == 2 and "is an input of this command" in err
    code, _, err = run_validate(capsys, artifact, "--model", "segnext_s")
    assert code == 2 and "exported from segnext_t, not segnext_s" in err
    code, _, err = run_validate(capsys, artifact, "--images", str(tmp_path / "nowhere"))
    assert code == 2 and "--images must be a folder" in err


def test_a_checkpoint_that_is_not_the_artifacts_is_refused(artifact, tmp_path):
    other = models.create("segnext_t")
    models.load_recipe_weights(other, seed=1)
    checkpoint = tmp_path / "other.pth"
    torch.save({"state_dict": other.state_dict()}, checkpoint)
    with pytest.raises(CheckpointError, match="is not what the artifact was exported from"):
        validate_artifact(artifact, checkpoint=str(checkpoint), n=1)
    wrong_model = models.create("segnext_s")
    torch.save({"state_dict": wrong_model.state_dict()}, checkpoint)
    with pytest.raises(CheckpointError):
        validate_artifact(artifact, checkpoint=str(checkpoint), n=1)


class WrongShapeRunner(ArrayRunner):
    def _infer(self, feed):
        return {"logits": super()._infer(feed)["logits"][:, :, :-1]}


def test_an_output_of_the_wrong_shape_fails_the_case_instead_of_crashing():
    feeds = [("case", {"input": np.zeros((1, 3, 32, 32), np.float32)})]
    report = compare_runners(ArrayRunner(), WrongShapeRunner(), feeds, num_classes=4)
    assert not report.passed and "shape (1, 4, 3, 4) where the reference has (1, 4, 4, 4)" in report.failure_line()


def test_a_foreign_onnx_file_validates_with_model(artifact, capsys, tmp_path):
    model = onnx.load(artifact)
    del model.metadata_props[:]
    foreign = tmp_path / "foreign.onnx"  # no sidecar next to it either
    onnx.save(model, str(foreign))
    code, _, err = run_validate(capsys, str(foreign), "--n", "1")
    assert code == 2 and "carries no segdeploy manifest" in err and "pass --model" in err
    code, out, _ = run_validate(capsys, str(foreign), "--model", "segnext_t", "--n", "1", "--threads", "2")
    assert code == 0 and "PASSED" in out


def lying_copy(artifact, tmp_path, edit):
    """The artifact with its manifest edited (embedded copy; no sidecar beside it)."""
    from segdeploy.artifact import manifest as mf
    from segdeploy.artifact import manifest_store

    model = onnx.load(artifact)
    data = manifest_store.embedded(model).to_dict()
    edit(data)
    prop = next(p for p in model.metadata_props if p.key == mf.ONNX_METADATA_KEY)
    prop.value = json.dumps(data)
    path = tmp_path / "lying.onnx"
    onnx.save(model, str(path))
    return str(path)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["model"].update(num_classes=19, class_names=["c"] * 19, palette=[[0, 0, 0]] * 19),
     "150 channels for 19 classes"),
    (lambda d: d["preprocessing"].update(mean=[0.0, 0.0, 0.0]), "preprocessing mean"),
    (lambda d: d["export"]["model_options"].update(nmf_rank=100000000), "nmf_rank=100000000"),
    (lambda d: d["inputs"][0].update(name="image"), "describes inputs"),
    (lambda d: d["model"].update(name="cgrseg_t"), "family 'segnext' is not cgrseg_t's"),
])
def test_a_manifest_that_lies_about_the_graph_is_refused(artifact, tmp_path, edit, message):
    import re

    with pytest.raises(SegdeployError) as info:
        validate_artifact(lying_copy(artifact, tmp_path, edit), n=1)
    assert re.search(message, str(info.value)), str(info.value)
    assert "\n" not in str(info.value)
