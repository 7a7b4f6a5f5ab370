"""Export the artifacts the C++ tests run (cgrseg_t at 512x512: static logits, dynamic logits, and uint8 input with
the mask in the graph) into a folder, through the segdeploy CLI. Skipped when the folder already holds exports made
by the same segdeploy sources (a stamp of their hash), so a warm `make test` does not export again.

No --validate against PyTorch here: the Python suite checks exports; these artifacts are the common input of the
C++ and Python runs that compare_with_python.py holds to each other.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from segdeploy.artifact import SCHEMA_VERSION

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = ["--model", "cgrseg_t", "--fmt", "onnx", "--size", "512x512", "--no-validate", "--force"]
ARTIFACTS = {
    "cgrseg_t_512x512.onnx": [],
    "cgrseg_t_512x512_dynamic.onnx": ["--dynamic"],
    "cgrseg_t_512x512_mask.onnx": ["--preprocess", "--outputs", "mask"],
}


def sources_digest() -> str:
    digest = hashlib.sha256(" ".join(BASE + [f"{k}:{v}" for k, v in ARTIFACTS.items()]).encode())
    package = os.path.join(REPO, "segdeploy")
    for root, dirs, files in os.walk(package):
        dirs.sort()
        for name in sorted(files):
            if name.endswith((".py", ".json")):
                path = os.path.join(root, name)
                digest.update(os.path.relpath(path, package).encode())
                with open(path, "rb") as f:
                    digest.update(f.read())
    return digest.hexdigest()


def export(out: str, name: str, extra: list[str]) -> tuple[str, int, str]:
    command = [sys.executable, "-m", "segdeploy", "export", *BASE, *extra, "--output", os.path.join(out, name)]
    run = subprocess.run(command, capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")})
    return name, run.returncode, (run.stderr or run.stdout).strip().splitlines()[-1:]


def manifest_problem(path: str) -> list[str]:
    """Why the export at `path` carries no manifest the C++ library reads (schema 2), or nothing."""
    from segdeploy.artifact import read_manifest
    from segdeploy.errors import SegdeployError

    try:
        read_manifest(path)
    except SegdeployError as exc:
        return [f"the export has no schema-{SCHEMA_VERSION} manifest: {exc}"]
    return []


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    stamp = os.path.join(args.out, "STAMP")
    digest = sources_digest()
    present = all(os.path.isfile(os.path.join(args.out, name)) for name in ARTIFACTS)
    if present and os.path.isfile(stamp) and open(stamp).read().strip() == digest:
        print(f"artifacts in {args.out} are up to date")
        return 0
    if os.path.isfile(stamp):
        os.remove(stamp)
    # two at a time: the machine has two cores and each export is mostly single-threaded tracing
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda item: export(args.out, *item), ARTIFACTS.items()))
    failed = [(name, detail) for name, code, detail in results if code != 0]
    failed += [(name, problem) for name, code, _ in results if code == 0
               for problem in [manifest_problem(os.path.join(args.out, name))] if problem]
    for name, code, _ in results:
        print(f"{name}: {'exported' if code == 0 else 'FAILED'}")
    if failed:
        for name, detail in failed:
            print(f"{name}: {' '.join(detail)}")
        return 1
    with open(stamp, "w") as f:
        f.write(digest + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
