// The segdeploy engine file: 4 bytes little-endian N, N bytes of UTF-8 JSON (the manifest with its engine facts),
// then TensorRT's serialized plan (segdeploy/artifact/engine_header.py). Read without TensorRT, so a foreign engine
// is refused with one line before TensorRT is asked to deserialize it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "segdeploy/manifest.hpp"

namespace segdeploy {

constexpr uint32_t kMaxEngineHeaderBytes = 16u << 20;

struct EngineFile {
  std::optional<Manifest> manifest;  // none: a headerless plan (trtexec's), starting with TensorRT's own magic
  uint64_t plan_offset = 0;
  uint64_t plan_size = 0;
};

// Reads the header only (the plan stays on disk).
EngineFile read_engine_header(const std::string& path);

// Why an engine built as `engine` cannot run under TensorRT `tensorrt_version` on a GPU of compute capability
// `compute_capability` ("8.7") on `platform` ("jetson", "x86_64", "aarch64"; "" when unknown), or "" when it can.
// The rules of engine_header.py::compatibility_problem: the same TensorRT major.minor.patch (and build, where both
// versions have one) unless built version-compatible (then that or a newer one); Jetson and discrete-GPU engines
// never run on each other; the same compute capability unless built hardware-compatible (ampere_plus: any SM >=
// 8.0; not on a Jetson).
std::string compatibility_problem(const EngineInfo& engine, const std::string& tensorrt_version,
                                  const std::string& compute_capability, const std::string& platform = "");

// The warning a bare plan loads with (the same words as segdeploy/runtimes/tensorrt.py's).
std::string bare_plan_warning(const std::string& path);

}  // namespace segdeploy
