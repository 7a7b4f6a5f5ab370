"""One results file per benchmark run, written the same way by every script in benchmarks/.

``results/<script>-<date>-<host>-<run id>.json`` (and the script's Markdown report beside it, ``.md``) is new for
every run and never overwritten: a published figure can always be traced to the run that measured it. The file
holds what the figure depends on besides the model: the exact command, the commit (and whether the checkout had
uncommitted changes), the host, the CPU model and its flags (AVX-512, VNNI, AMX: whether int8 dot products exist),
memory, the load average at the start and the end, the library versions, and the script's results with their raw
samples (every timed call, not only the median).

    run = record.start("precision_matrix", args)    # names the file; refuses to reuse a name
    ...
    run.write(results, markdown)                    # .json (and .md) under results/, atomically, never replacing
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import secrets
import shlex
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
FORMAT = 1  # the layout of the "run" block below; bumped when it changes


def _git(*argv: str) -> str | None:
    try:
        done = subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def commit() -> dict:
    """The checkout's commit and whether tracked files differ from it (numbers from a dirty tree say so)."""
    sha = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"sha": sha, "dirty": None if status is None else bool(status)}


def command(argv: list[str] | None = None) -> str:
    """The command line that ran, as a shell would take it back."""
    argv = sys.argv if argv is None else argv
    script = os.path.relpath(os.path.abspath(argv[0]), ROOT) if argv and argv[0].endswith(".py") else argv[0]
    return shlex.join(["python", script, *argv[1:]])


def host_name() -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname()) or "host"


class Run:
    """A benchmark run: its file name, its header, and the writing of its results."""

    def __init__(self, script: str, *, out_dir: str = RESULTS, argv: list[str] | None = None, settings=None):
        from segdeploy.hostinfo import machine_info

        self.started = _dt.datetime.now(_dt.timezone.utc)
        self.run_id = f"{self.started:%H%M%S}-{secrets.token_hex(2)}"
        self.out_dir = out_dir
        self.stem = os.path.join(out_dir, f"{script}-{self.started:%Y-%m-%d}-{host_name()}-{self.run_id}")
        if any(os.path.exists(self.stem + ext) for ext in (".json", ".md")):
            raise FileExistsError(f"{self.stem}: a run of that name exists; results are never overwritten")
        machine = machine_info()
        self.header = {"format": FORMAT, "script": f"benchmarks/{script}.py", "command": command(argv),
                       "settings": _plain(vars(settings) if hasattr(settings, "__dict__") else settings),
                       "run_id": self.run_id, "started": self.started.isoformat(timespec="seconds"),
                       "commit": commit(), "host": machine["host"], "cpu": machine["cpu"], "machine": machine}

    def path(self, ext: str) -> str:
        return f"{self.stem}{ext}"

    def write(self, results: dict, markdown: str | None = None, *, final: bool = True) -> list[str]:
        """Write the run's JSON (header + ``results``) and, when given, its Markdown report, which gains a line
        naming the run. ``final=False`` for a run still in progress: its own files are replaced by the next write."""
        from segdeploy.files.atomic import write_text_atomic
        from segdeploy.hostinfo import machine_info

        os.makedirs(self.out_dir, exist_ok=True)
        run = dict(self.header, finished=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
                   if final else None, load_average_end=machine_info()["load_average"])
        written = [write_text_atomic(self.path(".json"),
                                     json.dumps({"run": run, "results": results}, indent=2, default=_default) + "\n",
                                     force=self._mine(".json"))]
        if markdown is not None:
            written.append(write_text_atomic(self.path(".md"), markdown.rstrip("\n") + "\n\n" + self.provenance()
                                             + "\n", force=self._mine(".md")))
        self._written = {*getattr(self, "_written", set()), *written}
        return written

    def provenance(self) -> str:
        h = self.header
        sha = h["commit"]["sha"] or "not a git checkout"
        dirty = " (with uncommitted changes)" if h["commit"]["dirty"] else ""
        cpu = h["cpu"]
        return (f"Run `{os.path.basename(self.stem)}`: `{h['command']}` at commit {sha}{dirty}, on {h['host']} "
                f"({cpu['model']}, {cpu['usable_cores']} usable cores; flags {' '.join(cpu['isa']) or 'none'}), "
                f"started {h['started']}.")

    def _mine(self, ext: str) -> bool:
        return self.path(ext) in getattr(self, "_written", set())


def start(script: str, settings=None, *, out_dir: str = RESULTS, argv: list[str] | None = None) -> Run:
    return Run(script, out_dir=out_dir, argv=argv, settings=settings)


def load(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _plain(value):
    return json.loads(json.dumps(value, default=_default)) if value is not None else None


def _default(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
