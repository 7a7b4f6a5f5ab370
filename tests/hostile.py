"""What the bad-input suite (tests/badinput) attacks with and how it judges the answer.

The contract every command keeps for input it cannot use: exactly one ``segdeploy <command>: error: ...`` line on
stderr, exit 2 (exit 1 is only for an artifact that runs but is out of tolerance), no traceback, nothing
half-written, and nothing that existed replaced without --force. ``Outcome.refused`` checks the first three;
``Tree`` snapshots a folder so a test can check the last two.
"""
from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "tests" / "data" / "images"
PHOTO = IMAGES / "grace_hopper.jpg"


# ---------------------------------------------------------------------------------------------------------------
# Running commands and judging their answer

# Where stderr is not a terminal, long steps write timestamped progress lines there (segdeploy.console.log_line),
# and an artifact's caveats are warning lines (an artifact never verified): neither is a command's answer.
NOT_THE_ANSWER = re.compile(r"^(\d\d:\d\d:\d\d |segdeploy [\w-]+: warning: )")


def answer_lines(stderr: str) -> list[str]:
    """stderr's lines without the progress and warning lines."""
    return [line for line in stderr.splitlines() if line.strip() and not NOT_THE_ANSWER.match(line)]


@dataclass
class Outcome:
    argv: list[str]
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return answer_lines(self.err)

    def refused(self, match: str | None = None, code: int = 2) -> str:
        """Assert the one-line refusal; returns the line."""
        command = self.argv[0] if self.argv else ""
        assert "Traceback" not in self.err and "Traceback" not in self.out, self.describe()
        assert self.code == code, self.describe()
        assert len(self.err_lines) == 1, self.describe()
        line = self.err_lines[0]
        assert line.startswith(f"segdeploy {command}: error: "), self.describe()
        assert "internal error" not in line and "\x1b[" not in line, self.describe()
        if match is not None:
            assert match.lower() in line.lower(), self.describe()
        return line

    def succeeded(self) -> None:
        assert self.code == 0 and "Traceback" not in self.err, self.describe()
        assert not [line for line in self.err_lines if "error" in line], self.describe()

    def describe(self) -> str:
        return (f"segdeploy {' '.join(self.argv)} -> exit {self.code}\nstderr:\n{self.err}\n"
                f"stdout (tail):\n{self.out[-800:]}")


def run_cli(capfd, *argv) -> Outcome:
    """Run the CLI in this process, capturing file descriptors 1 and 2 (what C libraries print counts too)."""
    from segdeploy.cli import main

    argv = [str(a) for a in argv]
    capfd.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else 2
    captured = capfd.readouterr()
    return Outcome(argv, code, captured.out, captured.err)


def cli_env(**extra) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1")
    env.pop("SEGDEPLOY_DEBUG", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_subprocess(*argv, cwd=None, env=None, timeout: float = 600) -> Outcome:
    argv = [str(a) for a in argv]
    done = subprocess.run([sys.executable, "-m", "segdeploy", *argv], cwd=cwd, env=env or cli_env(),
                          capture_output=True, text=True, timeout=timeout)
    return Outcome(argv, done.returncode, done.stdout, done.stderr)


# ---------------------------------------------------------------------------------------------------------------
# Folders: nothing half-written, nothing clobbered


@dataclass(frozen=True)
class Tree:
    """Every entry under a folder (hidden ones included) with its content hash."""
    entries: tuple

    @classmethod
    def of(cls, folder) -> Tree:
        folder = Path(folder)
        found = []
        for path in sorted(folder.rglob("*")):
            rel = str(path.relative_to(folder))
            if path.is_file() and not path.is_symlink():
                found.append((rel, hashlib.sha256(path.read_bytes()).hexdigest()))
            else:
                found.append((rel, "dir" if path.is_dir() else "other"))
        return cls(tuple(found))

    def names(self) -> list[str]:
        return [name for name, _ in self.entries]

    def hidden(self) -> list[str]:
        return [name for name in self.names() if any(part.startswith(".") for part in Path(name).parts)]


def assert_unchanged(before: Tree, folder) -> None:
    after = Tree.of(folder)
    assert after == before, f"the folder changed:\nbefore {before.names()}\nafter  {after.names()}"


# ---------------------------------------------------------------------------------------------------------------
# Corrupt and lying ONNX artifacts (from a real export), manifests, checkpoints, images


def copy_artifact(source: Path, folder: Path, name: str = "a") -> Path:
    """A copy of an artifact and its sidecar as ``folder/name.onnx`` + ``.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.onnx"
    target.write_bytes(source.read_bytes())
    sidecar = source.with_suffix(".json")
    if sidecar.exists():
        (folder / f"{name}.json").write_bytes(sidecar.read_bytes())
    return target


def manifest_document(artifact: Path) -> dict:
    return json.loads(artifact.with_suffix(".json").read_text())


def write_with_manifest(source: Path, target: Path, document, *, embed: bool = True, sidecar: bool = True,
                        raw: bytes | None = None, model=None) -> Path:
    """``source``'s graph (or ``model``) with ``document`` (or ``raw`` bytes) as its embedded manifest and/or
    sidecar: how a lying or malformed manifest reaches a reader."""
    import onnx

    from segdeploy.artifact.manifest import ONNX_METADATA_KEY

    model = model if model is not None else onnx.load(str(source))
    del model.metadata_props[:]
    data = raw if raw is not None else json.dumps(document).encode("utf-8")
    if embed:
        entry = model.metadata_props.add()
        entry.key, entry.value = ONNX_METADATA_KEY, data.decode("utf-8", "replace")
    onnx.save(model, str(target))
    side = target.with_suffix(".json")
    if sidecar:
        side.write_bytes(data)
    elif side.exists():
        side.unlink()
    return target


def lie(document: dict, change) -> dict:
    changed = copy.deepcopy(document)
    change(changed)
    return changed


def fewer_classes(d: dict, k: int = 19) -> None:
    """A 19-class name list and palette on a 150-class graph, consistent within the manifest."""
    d["model"]["num_classes"] = k
    d["model"]["class_names"] = d["model"]["class_names"][:k]
    d["model"]["palette"] = d["model"]["palette"][:k]
    d["outputs"][0]["shape"][1] = k


MANIFEST_LIES = {
    "19 classes on a 150-class graph": fewer_classes,
    "false mean": lambda d: d["preprocessing"].__setitem__("mean", [0.0, 0.0, 0.0]),
    "false std": lambda d: d["preprocessing"].__setitem__("std", [1.0, 1.0, 1.0]),
    "BGR for an RGB model": lambda d: d["preprocessing"].__setitem__("channel_order", "BGR"),
    "align_corners": lambda d: d["preprocessing"].__setitem__("align_corners", True),
    "nmf_rank=1e8": lambda d: d["export"]["model_options"].__setitem__("nmf_rank", 100_000_000),
    "nmf_seed=-5": lambda d: d["export"]["model_options"].__setitem__("nmf_seed", -5),
    "unknown option": lambda d: d["export"]["model_options"].__setitem__("depth", 1000),
    "another model's name": lambda d: d["model"].__setitem__("name", "cgrseg_t"),
    "another variant": lambda d: d["model"].__setitem__("variant", "L"),
    "input renamed": lambda d: d["inputs"][0].__setitem__("name", "x"),
    "input dtype": lambda d: d["inputs"][0].__setitem__("dtype", "uint8"),
    "input size": lambda d: d["inputs"][0]["shape"].__setitem__(2, 512),
    "output renamed": lambda d: d["outputs"][0].__setitem__("name", "probabilities"),
    "profile wider than the graph": lambda d: d["profile"].__setitem__("height", {"min": 32, "opt": 256,
                                                                                   "max": 10**9}),
    "fp16 on an fp32 graph": lambda d: d["precision"].__setitem__("mode", "fp16"),
    "int8 on an fp32 graph": lambda d: d["precision"].update(mode="int8", flavour="cpu"),
    "engine facts on an ONNX file": lambda d: d.__setitem__("format", "engine"),
}

MALFORMED_MANIFESTS = {
    "empty": b"",
    "NUL bytes": b"\x00" * 64,
    "not UTF-8": "caf\xe9 manifest".encode("latin-1"),
    "a JSON array": b"[1, 2, 3]",
    "a JSON number": b"42",
    "JSON null": b"null",
    "nested 100000 deep": b"[" * 100_000 + b"]" * 100_000,
    "objects 5000 deep": b'{"a":' * 5000 + b"1" + b"}" * 5000,
    "a 5000-digit integer": b'{"schema_version": ' + b"9" * 5000 + b"}",
    "NaN": b'{"schema_version": NaN}',
    "Infinity": b'{"schema_version": Infinity}',
    "truncated": None,  # the real manifest cut in half
    "schema 1": b'{"schema_version": 1}',
    "schema 99": b'{"schema_version": 99}',
    "segdeploy 0.1 metadata": b'{"segdeploy_metadata_version": "1"}',
    "missing image input": None,  # the real manifest without "inputs"
    "class names not strings": None,
    "palette out of range": None,
    "lone surrogate": b'{"a": "\\ud800"}',
    "precision details mistyped": None,  # what export's precision line reads back: a module entry, a layer count
    "accuracy without its score": None,
}


def malformed_manifest(name: str, document: dict) -> bytes:
    raw = MALFORMED_MANIFESTS[name]
    if raw is not None:
        return raw
    if name == "truncated":
        text = json.dumps(document).encode()
        return text[: len(text) // 2]
    d = copy.deepcopy(document)
    if name == "missing image input":
        d.pop("inputs")
    elif name == "class names not strings":
        d["model"]["class_names"] = list(range(len(d["model"]["class_names"])))
    elif name == "palette out of range":
        d["model"]["palette"][0] = [256, -1, 0]
    elif name == "precision details mistyped":
        d["precision"]["details"] = {"float_modules": [1], "quantization": {"quantized": 5}}
    elif name == "accuracy without its score":
        d["precision"]["mode"] = "fp16"
        d["precision"]["details"] = {"accuracy": {"metric": "mIoU", "fp32": 70.0, "drop": 0.1, "images": 4}}
    return json.dumps(d).encode()


def corrupt_onnx_bytes(name: str, data: bytes) -> bytes:
    """Byte-level damage to an ONNX file."""
    if name == "empty":
        return b""
    if name == "truncated":
        return data[: len(data) // 2]
    if name == "tail cut":
        return data[:-1000]
    if name == "random bytes":
        return np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    if name == "text":
        return b"this is not an ONNX model\n" * 40
    if name == "zeroed weights":  # still parses and runs: only the graph's hash tells
        out = bytearray(data)
        out[len(out) // 3: len(out) // 3 + 4096] = bytes(4096)
        return bytes(out)
    raise KeyError(name)


ONNX_BYTE_DAMAGE = ("empty", "truncated", "tail cut", "random bytes", "text")


def damaged_graph(name: str, source: Path, target: Path) -> Path:
    """A readable ONNX file whose graph is broken or hostile, keeping the manifest (it no longer describes it)."""
    import onnx
    from onnx import TensorProto, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    if name == "unknown operator":
        graph.node[5].op_type = "NoSuchOp"
    elif name == "dangling input":
        del graph.initializer[3]
    elif name == "external data outside its folder":
        tensor = graph.initializer[0]
        tensor.ClearField("raw_data")
        del tensor.float_data[:]
        tensor.data_location = TensorProto.EXTERNAL
        entry = tensor.external_data.add()
        entry.key, entry.value = "location", "../../../../etc/passwd"
    elif name == "NaN weights":
        for i, init in enumerate(graph.initializer):
            array = numpy_helper.to_array(init)
            if array.dtype == np.float32 and array.size > 100:
                graph.initializer[i].CopyFrom(numpy_helper.from_array(np.full_like(array, np.nan), init.name))
                break
    elif name == "input 2^40 wide":
        graph.input[0].type.tensor_type.shape.dim[3].dim_value = 1 << 40
    elif name == "no graph":
        model = onnx.ModelProto()
        model.ir_version = 8
    else:
        raise KeyError(name)
    onnx.save(model, str(target))
    return target


GRAPH_DAMAGE = ("unknown operator", "dangling input", "external data outside its folder", "input 2^40 wide",
                "no graph")


def small_checkpoint_bytes(legacy: bool = False) -> bytes:
    import torch

    state = {"decode_head.conv_seg.weight": torch.randn(3, 4, 1, 1), "steps": torch.arange(5),
             "meta": {"dataset_meta": {"classes": ["a", "b", "c"]}}}
    buffer = io.BytesIO()
    torch.save(state, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


class _Evil:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def hostile_checkpoints(marker: Path) -> dict[str, bytes]:
    """Pickles that would run code (touching ``marker``) if anything unpickled them unsafely."""
    import pickle

    import torch

    evil = _Evil(f"touch {marker}")
    raw = pickle.dumps({"state_dict": {"w": evil}}, protocol=2)
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(2), "x": evil}, buffer)
    eval_call = (b"\x80\x02cbuiltins\neval\nq\x00X" + len(f"open('{marker}','w')").to_bytes(4, "little") +
                 f"open('{marker}','w')".encode() + b"q\x01\x85q\x02Rq\x03.")
    return {"os.system in a raw pickle": raw, "os.system in a torch.save archive": buffer.getvalue(),
            "builtins.eval": eval_call}


def png_header_only(height: int, width: int) -> bytes:
    """A PNG whose header claims ``height`` x ``width`` and whose data is missing."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


# ---------------------------------------------------------------------------------------------------------------
# Writers interrupted at a named point (segdeploy.files' test hook)


WRITER = """
import sys
from segdeploy.files.atomic import write_files_atomic
folder, tag, force = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
write_files_atomic([(folder + "/a.onnx", tag.encode() * 4096), (folder + "/a.json", tag.encode())], force=force)
"""


def interruptible() -> None:
    """A child's SIGINT back to its default, so that Python raises KeyboardInterrupt in it: a shell starts background
    jobs with SIGINT ignored, children inherit that, and then a test's SIGINT would reach no one."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_writer(folder: Path, tag: str, *, force: bool = False, signal_at: str | None = None):
    extra = {"SEGDEPLOY_TEST_SIGNAL_AT": signal_at} if signal_at else {}
    return subprocess.Popen([sys.executable, "-c", WRITER, str(folder), tag, "1" if force else "0"],
                            env=cli_env(**extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=interruptible)


def wait_stopped(process, timeout: float = 120) -> None:
    """Wait until ``process`` has stopped itself (SIGSTOP from the test hook)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the writer exited ({process.returncode}) instead of stopping: "
                                 f"{process.stderr.read()}")
        try:
            with open(f"/proc/{process.pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            state = "?"
        if state in ("T", "t"):
            return
        time.sleep(0.02)
    process.kill()
    raise AssertionError("the writer never reached its stop point")


def resume(process) -> None:
    os.kill(process.pid, signal.SIGCONT)


def pair_state(folder: Path) -> dict:
    """The artifact pair's visible files and the tags their contents carry."""
    out = {}
    for name in ("a.onnx", "a.json"):
        path = folder / name
        if path.exists():
            data = path.read_bytes()
            out[name] = data[:3].decode()
    return out


def json_paths(document, prefix=()):
    """Every path (a tuple of keys and indexes) into a JSON document, the root's () first."""
    yield prefix
    if isinstance(document, dict):
        for key, value in document.items():
            yield from json_paths(value, (*prefix, key))
    elif isinstance(document, list):
        for i, value in enumerate(document):
            yield from json_paths(value, (*prefix, i))


def edit_json(draw, document, paths: list, values):
    """A copy of ``document`` with one to three of ``paths`` replaced by a draw of ``values`` or removed: the edit
    step of the Hypothesis fuzzers of JSON files (``draw`` is a composite strategy's)."""
    from hypothesis import strategies as st

    document = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths))
        parent = document
        try:
            for key in path[:-1]:
                parent = parent[key]
            if draw(st.booleans()) and isinstance(parent, dict):
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = draw(values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit removed or replaced the way there
    return document


def unshare_works() -> bool:
    """Whether user and mount namespaces are allowed here (read-only folders and full disks are made in one)."""
    import shutil

    if shutil.which("unshare") is None:
        return False
    done = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
                          capture_output=True)
    return done.returncode == 0

