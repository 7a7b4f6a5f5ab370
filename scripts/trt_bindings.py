#!/usr/bin/env python3
"""NVIDIA's real TensorRT Python bindings on a machine without TensorRT or a GPU, for the tests.

NVIDIA publishes the bindings alone as ``tensorrt-cu12-bindings`` wheels (about 1 MB each). Their extension module
``tensorrt_bindings/tensorrt.so`` links against libnvinfer, libnvonnxparser and libnvinfer_plugin of its major
release and imports only nine entry points from them (``nm -D --undefined-only``). With link stubs that define those
nine (each returns null or 0) the module imports: its enums, classes, properties and pybind11 signatures are
NVIDIA's own, and anything that needs the real library (``trt.Builder(logger)``, ``trt.Runtime(logger)``) raises.

This script fetches the pinned releases by package name (pip download, cached), unpacks each release's module
under a package name of its own (two releases' extension modules of the same name cannot share one process), builds
the stubs with the C compiler, checks that every release imports, and writes ``releases.json`` for the tests
(tests/real_tensorrt.py). It is idempotent: a cached, complete tree is checked and left as it is.

    python scripts/trt_bindings.py                 # into build/trt-bindings (what `make trt-bindings` runs)
    python scripts/trt_bindings.py --dest DIR --force
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile

# JetPack 6's release, the newest 10.x and the newest 11.x; each with the manylinux tag its wheel is published for.
RELEASES = {
    "10.3.0": "manylinux_2_17_x86_64",
    "10.16.1.11": "manylinux_2_28_x86_64",
    "11.4.0.106": "manylinux_2_28_x86_64",
}
DISTRIBUTION = "tensorrt-cu12-bindings"
STUB_LIBRARIES = ("nvinfer", "nvonnxparser", "nvinfer_plugin")
# The nine symbols tensorrt.so imports from the three libraries (the same in every release above).
STUB_SOURCE = """\
/* Link stubs for NVIDIA's TensorRT Python bindings: the entry points tensorrt.so imports, each failing the way a
   machine without a GPU makes them fail (no object). Written by scripts/trt_bindings.py. */
#include <stddef.h>
void* createInferBuilder_INTERNAL(void* logger, int version) { (void)logger; (void)version; return NULL; }
void* createInferRuntime_INTERNAL(void* logger, int version) { (void)logger; (void)version; return NULL; }
void* createInferRefitter_INTERNAL(void* engine, void* logger, int version) {
  (void)engine; (void)logger; (void)version; return NULL; }
void* createNvOnnxParser_INTERNAL(void* network, void* logger, int version) {
  (void)network; (void)logger; (void)version; return NULL; }
void* createNvOnnxParserRefitter_INTERNAL(void* refitter, void* logger, int version) {
  (void)refitter; (void)logger; (void)version; return NULL; }
int getNvOnnxParserVersion(void) { return 0; }
void* getPluginRegistry(void) { return NULL; }
void* getBuilderPluginRegistry(int capability) { (void)capability; return NULL; }
int initLibNvInferPlugins(void* logger, const char* name) { (void)logger; (void)name; return 0; }
"""
INDEX = "releases.json"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class HarnessError(Exception):
    pass


def package_name(release: str) -> str:
    return "tensorrt_bindings_" + release.replace(".", "_")


def major(release: str) -> int:
    return int(release.split(".")[0])


def _run(argv, what):
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()
                 and not line.startswith("WARNING: Location")]
        raise HarnessError(f"{what} failed (exit {done.returncode}): {lines[-1] if lines else 'no output'}")
    return done


def _cp() -> str:
    return f"cp{sys.version_info.major}{sys.version_info.minor}"


def fetch_wheel(release: str, wheels: str) -> str:
    """The release's wheel in ``wheels``, downloaded by package name when it is not there yet."""
    for name in os.listdir(wheels) if os.path.isdir(wheels) else ():
        if name.startswith(f"tensorrt_cu12_bindings-{release}-{_cp()}-") and name.endswith(".whl"):
            return os.path.join(wheels, name)
    os.makedirs(wheels, exist_ok=True)
    python = f"{sys.version_info.major}.{sys.version_info.minor}"  # the wheels are built per CPython release
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", python,
          "--platform", RELEASES[release], "--disable-pip-version-check", "-q", "-d", wheels,
          f"{DISTRIBUTION}=={release}"], f"pip download {DISTRIBUTION}=={release} ({_cp()})")
    return fetch_wheel(release, wheels)


def unpack(wheel: str, release: str, dest: str) -> str:
    """The release's module as package ``tensorrt_bindings_<release>`` under ``dest/<release>``."""
    target = os.path.join(dest, release)
    package = os.path.join(target, package_name(release))
    staging = tempfile.mkdtemp(prefix=f".{release}.", dir=dest)
    try:
        with zipfile.ZipFile(wheel) as archive:
            members = [m for m in archive.namelist() if m.startswith("tensorrt_bindings/")]
            if not any(m.endswith("tensorrt.so") for m in members):
                raise HarnessError(f"{wheel} has no tensorrt_bindings/tensorrt.so")
            archive.extractall(staging, members)
        shutil.rmtree(target, ignore_errors=True)
        os.makedirs(target)
        os.rename(os.path.join(staging, "tensorrt_bindings"), package)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return package


def build_stubs(dest: str, release_major: int) -> list[str]:
    folder = os.path.join(dest, "stubs", str(release_major))
    os.makedirs(folder, exist_ok=True)
    source = os.path.join(folder, "stub.c")
    with open(source, "w") as f:
        f.write(STUB_SOURCE)
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise HarnessError("no C compiler (cc or gcc) to build the link stubs; install gcc")
    paths = []
    for lib in STUB_LIBRARIES:
        soname = f"lib{lib}.so.{release_major}"
        path = os.path.join(folder, soname)
        if not os.path.isfile(path):
            tmp = path + ".tmp"
            _run([compiler, "-shared", "-fPIC", "-o", tmp, source, f"-Wl,-soname,{soname}"], f"building {soname}")
            os.replace(tmp, path)
        paths.append(path)
    return paths


_CHECK = """
import ctypes, importlib, json, sys
entry = json.loads(sys.argv[1])
for stub in entry["stubs"]:
    ctypes.CDLL(stub, mode=ctypes.RTLD_GLOBAL)
sys.path.insert(0, entry["path"])
trt = importlib.import_module(entry["package"])
assert trt.__version__ == entry["release"], trt.__version__
try:
    trt.Builder(trt.Logger(trt.Logger.WARNING))
except TypeError:
    pass
else:
    raise SystemExit("trt.Builder did not raise: these are not link stubs")
print(trt.__version__)
"""


def check(entry: dict) -> None:
    """Import the release in a fresh interpreter, as the tests will."""
    _run([sys.executable, "-c", _CHECK, json.dumps(entry)], f"importing TensorRT {entry['release']}'s bindings")


def prepare(dest: str, force: bool = False, log=print) -> dict:
    if sys.platform != "linux" or platform.machine() != "x86_64":
        raise HarnessError(f"NVIDIA's binding wheels used here are for Linux x86_64; this is {sys.platform} "
                           f"{platform.machine()}")
    dest = os.path.abspath(dest)
    os.makedirs(dest, exist_ok=True)
    index_path = os.path.join(dest, INDEX)
    if not force and os.path.isfile(index_path):
        with open(index_path) as f:
            index = json.load(f)
        if set(index) == set(RELEASES) and all(os.path.isdir(os.path.join(e["path"], e["package"])) and
                                               all(os.path.isfile(s) for s in e["stubs"]) for e in index.values()):
            log(f"TensorRT bindings {', '.join(RELEASES)}: cached in {os.path.relpath(dest, ROOT)}")
            return index
    index = {}
    for release in RELEASES:
        wheel = fetch_wheel(release, os.path.join(dest, "wheels"))
        unpack(wheel, release, dest)
        entry = {"release": release, "path": os.path.join(dest, release), "package": package_name(release),
                 "stubs": build_stubs(dest, major(release)), "wheel": os.path.basename(wheel)}
        check(entry)
        index[release] = entry
        log(f"TensorRT {release}: {entry['wheel']} -> {os.path.relpath(entry['path'], ROOT)} (imports with stubs)")
    tmp = index_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(index, f, indent=2, sort_keys=True)
    os.replace(tmp, index_path)
    return index


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", default=os.path.join(ROOT, "build", "trt-bindings"),
                        help="where the wheels, modules and stubs go (default build/trt-bindings)")
    parser.add_argument("--force", action="store_true", help="fetch, unpack and build again")
    args = parser.parse_args(argv)
    try:
        prepare(args.dest, args.force)
    except HarnessError as exc:
        print(f"trt_bindings.py: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
