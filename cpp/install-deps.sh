#!/usr/bin/env bash
# Installs what the C++ library builds and runs against, from package registries only, idempotently.
#
#   Debian (this machine's suite): compiler, CMake, OpenCV (core, imgproc, imgcodecs, videoio), nlohmann-json,
#                                  GoogleTest
#   ONNX Runtime headers:          Debian's libonnxruntime-dev from a newer suite (trixie), downloaded with apt through
#                                  a private package list (the system's apt sources stay untouched) and unpacked
#                                  headers-only into $DEPS/onnxruntime/include: its runtime package needs a newer libc
#   ONNX Runtime library:          libonnxruntime.so.1.x from the onnxruntime wheel that Python uses (pip), linked as
#                                  libonnxruntime.so and .so.1 in $DEPS/onnxruntime/lib (its SONAME is .so.1)
#
# ONNX Runtime's C API is forward compatible: code compiled against headers of API version N runs on a library of
# version >= N, so the older Debian headers work with the newer wheel library (CMake checks the pair).
#
# Usage: cpp/install-deps.sh [DEPS_DIR]   (default: build/cpp-deps). Exit 0: ready; 3: cannot install here (not
# root and no sudo, or no apt), with the reason on stderr.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
DEPS=$(mkdir -p "${1:-$REPO/build/cpp-deps}" && cd "${1:-$REPO/build/cpp-deps}" && pwd)
PYTHON=${PYTHON:-python3}
HEADERS_SUITE=trixie
DEBIAN_PACKAGES=(g++ cmake make pkg-config libopencv-core-dev libopencv-imgproc-dev libopencv-imgcodecs-dev
                 libopencv-videoio-dev nlohmann-json3-dev libgtest-dev)

say() { echo "install-deps: $*"; }
cannot() { echo "install-deps: cannot install the C++ toolchain here: $*" >&2; exit 3; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"
    else cannot "not root and no password-less sudo (install: ${DEBIAN_PACKAGES[*]})"
    fi
}

debian_packages() {
    local missing=()
    for p in "${DEBIAN_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return
    command -v apt-get >/dev/null || cannot "no apt-get (install: ${missing[*]})"
    say "apt-get install ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

onnxruntime_headers() {
    local include=$DEPS/onnxruntime/include
    [ -f "$include/onnxruntime_cxx_api.h" ] && return
    local work
    work=$(mktemp -d)
    trap 'rm -rf "$work"' RETURN
    mkdir -p "$work/lists/partial" "$work/archives/partial"
    echo "deb http://deb.debian.org/debian $HEADERS_SUITE main" >"$work/sources.list"
    local apt=(-o Dir::Etc::SourceList="$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
               -o Dir::State::Lists="$work/lists" -o Dir::Cache::archives="$work/archives" -o APT::Sandbox::User=root)
    say "ONNX Runtime headers: libonnxruntime-dev from Debian $HEADERS_SUITE"
    apt-get "${apt[@]}" update -qq || cannot "apt could not read Debian $HEADERS_SUITE's package list"
    (cd "$work" && apt-get "${apt[@]}" download libonnxruntime-dev >/dev/null) \
        || cannot "apt could not download libonnxruntime-dev from Debian $HEADERS_SUITE"
    dpkg-deb -x "$work"/libonnxruntime-dev_*.deb "$work/root"
    mkdir -p "$DEPS/onnxruntime"
    rm -rf "$include.tmp" && cp -r "$work/root/usr/include/onnxruntime" "$include.tmp" && mv "$include.tmp" "$include"
    basename "$work"/libonnxruntime-dev_*.deb >"$DEPS/onnxruntime/HEADERS_FROM"
}

onnxruntime_library() {
    local capi
    if ! capi=$("$PYTHON" -c 'import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), "capi"))' 2>/dev/null); then
        say "pip install onnxruntime (its wheel ships the shared library)"
        "$PYTHON" -m pip install -q onnxruntime || cannot "pip could not install onnxruntime"
        capi=$("$PYTHON" -c 'import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), "capi"))')
    fi
    local lib
    lib=$(ls "$capi"/libonnxruntime.so.1.* 2>/dev/null | head -n 1)
    [ -n "$lib" ] || cannot "the onnxruntime wheel in $capi ships no libonnxruntime.so.1.x"
    mkdir -p "$DEPS/onnxruntime/lib"
    # the execution providers of GPU wheels load from the directory the runtime was loaded from: link them too
    for f in "$lib" "$capi"/libonnxruntime_providers_*.so; do
        [ -e "$f" ] && ln -sfn "$f" "$DEPS/onnxruntime/lib/$(basename "$f")"
    done
    ln -sfn "$lib" "$DEPS/onnxruntime/lib/libonnxruntime.so.1"
    ln -sfn "$lib" "$DEPS/onnxruntime/lib/libonnxruntime.so"
}

debian_packages
onnxruntime_headers
onnxruntime_library
say "ready: ONNX Runtime headers $(cat "$DEPS/onnxruntime/HEADERS_FROM" 2>/dev/null || echo '?'), library" \
    "$(readlink "$DEPS/onnxruntime/lib/libonnxruntime.so")"
