"""Destinations that cannot be written, or must not be: a parent that is a file, an output that is a folder or a
device, an existing file without --force, a report over the artifact it describes (even with --force), a
read-only file system and a full disk (in a private mount namespace where unshare allows one). Each is refused
before the work, with one line, leaving the folder as it was and no folder made for nothing."""
from __future__ import annotations

import subprocess

import pytest

from hostile import PHOTO, ROOT, Tree, answer_lines, assert_unchanged, cli_env, copy_artifact, run_cli, unshare_works

OUTPUT_FLAGS = {  # command -> (argv before the output flag, the flag)
    "export": (("export", "--model", "segnext_t", "--size", "256", "--no-validate"), "--output"),
    "predict": (("predict", "--model", "segnext_t", "--backend", "torch", "--size", "64", "--source", PHOTO),
                "--output"),
    "bench": (("bench", "--model", "segnext_t", "--backend", "torch", "--size", "64", "--warmup-s", "0", "--min-s",
               "0", "--min-iters", "1", "--no-peak"), "--json"),
    "info": (("info", "segnext_t"), "--json"),
    "list": (("list",), "--json"),
    "doctor": (("doctor",), "--json"),
}


def _name(command: str) -> str:
    return {"export": "x.onnx", "predict": "x.png"}.get(command, "x.json")


@pytest.mark.parametrize("command", sorted(OUTPUT_FLAGS))
@pytest.mark.parametrize("case", ["parent is a file", "output is a folder", "exists", "a device"])
def test_bad_destinations(workdir, capfd, command, case):
    argv, flag = OUTPUT_FLAGS[command]
    name = _name(command)
    if case == "parent is a file":
        (workdir / "afile").write_text("keep")
        target = f"afile/{name}"
    elif case == "output is a folder":
        (workdir / "adir.onnx").mkdir()
        target = "adir.onnx" if command == "export" else "adir.onnx"
    elif case == "exists":
        (workdir / name).write_bytes(b"keep me")
        target = name
    else:
        target = "/dev/null"
    before = Tree.of(workdir)
    line = run_cli(capfd, *argv, flag, target).refused()
    if case == "a device" and command == "export":
        assert "must end in .onnx" in line
    assert_unchanged(before, workdir)


@pytest.mark.parametrize("command", ["validate", "info", "lint-trt"])
@pytest.mark.parametrize("which", ["artifact", "sidecar"])
def test_a_report_never_replaces_its_input_even_with_force(artifact, workdir, capfd, command, which):
    path = copy_artifact(artifact, workdir)
    target = path if which == "artifact" else path.with_suffix(".json")
    argv = {"validate": ("validate", path, "--n", "1"), "info": ("info", path), "lint-trt": ("lint-trt", path)}
    before = Tree.of(workdir)
    run_cli(capfd, *argv[command], "--json", target, "--force").refused("input of this command")
    assert_unchanged(before, workdir)


def test_predict_never_writes_over_its_image(workdir, capfd):
    image = workdir / "photo.png"
    image.write_bytes(PHOTO.read_bytes())
    before = Tree.of(workdir)
    run_cli(capfd, *OUTPUT_FLAGS["predict"][0][:-1], image, "--output", image, "--force").refused("input")
    assert_unchanged(before, workdir)


def test_export_never_writes_over_its_checkpoint(workdir, capfd):
    import torch

    from segdeploy import models

    torch.save(models.create("segnext_t").state_dict(), workdir / "w.json")  # a checkpoint named like a sidecar
    before = Tree.of(workdir)
    run_cli(capfd, "export", "--model", "segnext_t", "--size", "256", "--checkpoint", "w.json", "--output", "w.onnx",
            "--force", "--no-validate").refused("would replace the checkpoint")
    assert_unchanged(before, workdir)


def test_a_failed_export_leaves_no_folders(workdir, capfd):
    (workdir / "c.pth").write_text("not a checkpoint")
    run_cli(capfd, "export", "--model", "segnext_t", "--size", "256", "--checkpoint", "c.pth", "--output",
            "deep/new/folders/x.onnx").refused("checkpoint")
    assert sorted(p.name for p in workdir.iterdir()) == ["c.pth"]


def test_a_failed_predict_leaves_no_output_folder(workdir, capfd):
    folder = workdir / "photos"
    folder.mkdir()
    (folder / "b.jpg").write_bytes(b"not a jpeg")
    run_cli(capfd, *OUTPUT_FLAGS["predict"][0][:-1], folder, "--output", "masks/run1").refused()
    assert not (workdir / "masks").exists()


# ---------------------------------------------------------------------------------------------------------------
# Read-only file systems and full disks, in a private mount namespace


needs_unshare = pytest.mark.skipif(not unshare_works(), reason="needs unshare -rm and tmpfs mounts (user and "
                                                                "mount namespaces), which this machine does not "
                                                                "allow")


def _in_namespace(workdir, mounts: str, *argv, after: str = "true") -> subprocess.CompletedProcess:
    """Run segdeploy with ``mounts`` (tmpfs mounts over folders of workdir) in a private mount namespace, then
    ``after`` (the mounts are gone once the namespace ends)."""
    import sys

    command = f"{sys.executable} -m segdeploy " + " ".join(f"'{a}'" for a in map(str, argv))
    script = f"set -e; {mounts}; cd {workdir}; set +e; {command}; rc=$?; {after}; exit $rc"
    return subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True,
                          env=cli_env(), cwd=ROOT, timeout=600)


def _one_line(done, command: str, match: str) -> None:
    lines = answer_lines(done.stderr)
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"segdeploy {command}: error:") and match in lines[0], lines[0]
    assert "Traceback" not in done.stderr


@needs_unshare
def test_read_only_file_system(artifact, workdir):
    (workdir / "ro").mkdir()
    mounts = f"mount -t tmpfs -o ro,size=1m tmpfs {workdir}/ro"
    path = copy_artifact(artifact, workdir)
    _one_line(_in_namespace(workdir, mounts, "export", "--model", "segnext_t", "--size", "256", "--output",
                            "ro/x.onnx"), "export", "ro")
    _one_line(_in_namespace(workdir, mounts, "validate", path, "--n", "1", "--json", "ro/r.json"), "validate", "ro")


@needs_unshare
def test_full_disk_is_found_before_the_export(workdir):
    (workdir / "full").mkdir()
    mounts = f"mount -t tmpfs -o size=1m tmpfs {workdir}/full"
    done = _in_namespace(workdir, mounts, "export", "--model", "segnext_t", "--size", "256", "--output",
                         "full/sub/x.onnx")
    _one_line(done, "export", "MiB free")
    assert "tracing" not in done.stdout


@needs_unshare
def test_disk_filling_up_during_the_write(workdir, artifact):
    """The destination checks pass, then the write finds the disk full: one line, no temp file, nothing else."""
    (workdir / "full").mkdir()
    mounts = (f"mount -t tmpfs -o size=64k tmpfs {workdir}/full && "
              f"dd if=/dev/zero of={workdir}/full/filler bs=4k count=15 status=none")
    path = copy_artifact(artifact, workdir)
    done = _in_namespace(workdir, mounts, "info", path, "--json", "full/r.json",
                         after=f"ls -A {workdir}/full > {workdir}/listing")
    _one_line(done, "info", "no space left")
    assert (workdir / "listing").read_text().split() == ["filler"]
