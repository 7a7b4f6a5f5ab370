"""Published figures come from results files that a script wrote: every benchmark script writes a new file per run
through benchmarks/record.py (named by date, host and run id, never overwriting one), holding the exact command, the
commit, the CPU model and flags, the versions and the raw samples."""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py") if p.name not in ("record.py", "tables.py"))
sys.path.insert(0, str(BENCHMARKS))

import record  # noqa: E402


def test_a_run_names_a_new_file_and_records_what_its_numbers_depend_on(tmp_path):
    run = record.start("demo", {"rounds": 3}, out_dir=str(tmp_path), argv=["benchmarks/demo.py", "--rounds", "3"])
    written = run.write({"rows": [{"p50_ms": 1.5, "samples_ms": [1.4, 1.5, 1.6]}]}, "# demo\n")
    name = os.path.basename(run.stem)
    assert name.startswith("demo-") and record.host_name() in name and run.run_id in name
    data = json.loads(Path(run.path(".json")).read_text())
    header = data["run"]
    assert header["command"] == "python benchmarks/demo.py --rounds 3" and header["settings"] == {"rounds": 3}
    assert len(header["commit"]["sha"]) == 40 and isinstance(header["commit"]["dirty"], bool)
    assert header["cpu"]["model"] and "isa" in header["cpu"] and "int8_dot_product" in header["cpu"]
    assert header["machine"]["versions"]["onnxruntime"] and header["finished"]
    assert data["results"]["rows"][0]["samples_ms"] == [1.4, 1.5, 1.6]
    markdown = Path(run.path(".md")).read_text()
    assert markdown.startswith("# demo") and f"Run `{name}`" in markdown and header["commit"]["sha"] in markdown
    assert sorted(written) == sorted([run.path(".json"), run.path(".md")])
    # a run in progress replaces its own files; another run gets another name; nothing replaces a finished file
    run.write({"rows": []}, "# demo\n")
    assert record.start("demo", out_dir=str(tmp_path)).stem != run.stem
    stranger = record.start("demo", out_dir=str(tmp_path))
    stranger.stem = run.stem
    with pytest.raises(Exception, match="exists"):
        stranger.write({"rows": []})
    assert json.loads(Path(run.path(".json")).read_text())["results"] == {"rows": []}


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_every_benchmark_script_writes_through_record(script):
    spec = importlib.util.spec_from_file_location(f"benchmark_{script.stem}", script)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))  # its imports resolve
    tree = ast.parse(script.read_text())
    calls = {ast.unparse(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    assert "record.start" in calls and any(c.endswith(".write") for c in calls), script.name
    # no script writes a results file its own way: no open(..., "w"), no write_text_atomic of its own
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "open" and len(node.args) > 1:
            assert ast.literal_eval(node.args[1]) == "r" or script.name == "memory_footprint.py", script.name
    assert "write_text_atomic" not in calls and "write_bytes_atomic" not in calls, script.name


def test_a_benchmark_run_end_to_end(tmp_path):
    """precision_matrix.py on a fixture that is not trained in an empty cache: the run is recorded all the same."""
    out = tmp_path / "results"
    env = dict(os.environ, SEGDEPLOY_CACHE=str(tmp_path / "cache"))
    argv = ["benchmarks/precision_matrix.py", "--fixtures", "cgrseg_t_synth16", "--out", str(out)]
    done = subprocess.run([sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    files = sorted(out.glob("precision_matrix-*.json"))
    assert len(files) == 1
    data = json.loads(files[0].read_text())
    assert data["run"]["command"] == "python " + " ".join(argv)
    assert data["results"]["fixtures"] == [{"fixture": "cgrseg_t_synth16",
                                            "skipped": "not trained yet (segdeploy fixtures --model cgrseg_t_synth16)"}]
    assert files[0].with_suffix(".md").read_text().count("Run `precision_matrix-") == 1


def test_make_test_time_reads_pytest_and_ctest_summaries():
    import make_test_time

    log = ("..s.F  [100%]\nSKIPPED [1] tests/runtimes/test_tensorrt.py:210: no TensorRT runtime here: x\n"
           "1 failed, 1132 passed, 10 skipped, 90 deselected, 15 warnings in 1423.61s (0:23:43)\n"
           "100% tests passed, 0 tests failed out of 52\n")
    pytest_part = make_test_time.parse_pytest(log)
    assert (pytest_part["passed"], pytest_part["skipped"], pytest_part["failed"]) == (1132, 10, 1)
    assert pytest_part["seconds"] == 1423.61
    assert make_test_time.parse_ctest(log) == {"tests": 52, "failed": 0}


def test_make_test_time_times_a_fresh_clone(tmp_path):
    """`make lint` in a fresh clone of the committed tree (the install step skipped), recorded like any run."""
    argv = ["benchmarks/make_test_time.py", "--target", "lint", "--out", str(tmp_path)]
    done = subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    (path,) = tmp_path.glob("make_test_time-*.json")
    data = json.loads(path.read_text())
    assert data["results"]["target"] == "lint" and data["results"]["exit_code"] == 0
    assert data["results"]["wall_s"] > 0 and "All checks passed" in data["results"]["log_tail"]
    assert data["run"]["command"] == "python " + " ".join(argv)


def test_the_readme_sentence_on_make_test_comes_from_the_latest_run(tmp_path, monkeypatch):
    import tables

    monkeypatch.setattr(tables, "RESULTS", str(tmp_path))
    block = "<!-- results: make-test latest -->\n\n<!-- end results -->"
    assert "No run of `python benchmarks/make_test_time.py` is recorded yet" in tables.render(block)
    for seconds in (1000.0, 871.4):  # an older run, then the latest
        run = record.start("make_test_time", out_dir=str(tmp_path), argv=["benchmarks/make_test_time.py"])
        run.write({"target": "test", "exit_code": 0, "wall_s": seconds + 60,
                   "pytest": {"seconds": seconds, "passed": 1180, "skipped": 3}, "ctest": {"tests": 52}})
    text = tables.render(block)
    assert f"`make test` took 15m31s from a fresh clone on {run.header['host']}" in text
    assert "pytest 14m31s for 1,180 tests, 3 skipped, then 52 CTest cases" in text
    assert os.path.basename(run.stem) in text and tables.render(text) == text


def test_speed_matrix_refuses_bad_input_in_one_line_and_writes_nothing(tmp_path):
    for flag, value in (("--artifacts", str(tmp_path / "missing.onnx")), ("--models", "no_such_model")):
        done = subprocess.run([sys.executable, str(BENCHMARKS / "speed_matrix.py"), "--parts", "profile", flag, value,
                               "--backends", "onnxruntime", "--out", str(tmp_path / "out")],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr and done.stderr.strip().splitlines()[-1].startswith("speed_matrix.py: ")
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("script, flag, name", [("precision_matrix.py", "--fixtures", "no_such_fixture"),
                                                ("run_cpu_matrix.py", "--models", "no_such_model")])
def test_matrix_scripts_refuse_unknown_names_in_one_line_and_write_nothing(tmp_path, script, flag, name):
    out = "--out" if script == "precision_matrix.py" else "--out-dir"
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), flag, name, out, str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"{script}: unknown ") and name in done.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("content", [b'{"results": 5}', b"not json", b"[1]", b'{"results": [{"model": 3}]}', None])
def test_cpu_matrix_refuses_a_bad_resume_file_in_one_line_and_writes_nothing(tmp_path, content):
    resume = tmp_path / "earlier.json"
    if content is not None:  # None: the file is missing
        resume.write_bytes(content)
    done = subprocess.run([sys.executable, str(BENCHMARKS / "run_cpu_matrix.py"), "--models", "cgrseg_t", "--resume",
                           str(resume), "--out-dir", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"run_cpu_matrix.py: --resume {resume}: not a ")
    assert not (tmp_path / "out").exists()
