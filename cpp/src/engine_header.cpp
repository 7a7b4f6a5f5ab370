#include "segdeploy/engine_header.hpp"

#include <cctype>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "file_util.hpp"
#include "sha256.hpp"
#include "segdeploy/error.hpp"

namespace segdeploy {
namespace {

// "10.3.0.26" -> {10, 3, 0, 26}; stops at the first piece without digits, like engine_header.py::_version_tuple
std::vector<int> version_tuple(const std::string& text) {
  std::vector<int> parts;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t dot = text.find('.', start);
    const std::string piece = text.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    std::string digits;
    for (char c : piece)
      if (std::isdigit(static_cast<unsigned char>(c))) digits += c;
    if (digits.empty() || digits.size() > 9) break;
    parts.push_back(std::stoi(digits));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  if (parts.empty()) parts.push_back(0);
  return parts;
}

std::vector<int> first(std::vector<int> v, size_t n) {
  if (v.size() > n) v.resize(n);
  return v;
}

}  // namespace

EngineFile read_engine_header(const std::string& path) {
  require_file(path, "engine");
  const uint64_t size = file_size(path);
  if (size < 4) throw Error(ErrorCode::artifact, path + " is " + std::to_string(size) + " bytes: not an engine");
  const std::string head = read_bytes(path, 0, 4);
  const uint32_t n = uint32_t(uint8_t(head[0])) | uint32_t(uint8_t(head[1])) << 8 | uint32_t(uint8_t(head[2])) << 16 |
                     uint32_t(uint8_t(head[3])) << 24;
  EngineFile file;
  file.plan_size = size;
  // a headerless plan starts with TensorRT's magic, which reads as no plausible header length
  const bool header = n > 0 && n <= kMaxEngineHeaderBytes && n <= size - 4 && read_bytes(path, 4, 1)[0] == '{';
  if (!header) {
    if (head != "ftrt") {
      const std::string kind = sniff(path);
      throw Error(ErrorCode::artifact,
                  path + " is not a TensorRT engine: " +
                      (kind == "onnx"   ? std::string("it holds an ONNX model")
                       : kind == "json" ? std::string("it holds JSON (a manifest?)")
                                        : std::string("it has no segdeploy header and does not start with "
                                                      "TensorRT's plan magic")));
    }
    return file;
  }
  const std::string body = read_bytes(path, 4, n);
  if (!nlohmann::json::accept(body))
    throw Error(ErrorCode::artifact, path + ": its segdeploy header is corrupt (not JSON)");
  Manifest manifest = Manifest::parse(body, path + " (engine header)");
  if (manifest.format != "engine")
    throw Error(ErrorCode::artifact, path + ": its header describes a " + manifest.format + " artifact, not an engine");
  if (size == 4 + uint64_t(n))
    throw Error(ErrorCode::artifact, path + " has a header but no serialized engine after it (truncated?)");
  file.plan_offset = 4 + uint64_t(n);
  file.plan_size = size - file.plan_offset;
  const std::string& recorded = manifest.engine->plan_sha256;
  if (recorded.empty())
    throw Error(ErrorCode::artifact, path + ": its header records no plan_sha256, so its plan cannot be checked: not "
                                            "an engine segdeploy built; build it with segdeploy build-engine");
  Sha256 digest;
  std::ifstream in(path, std::ios::binary);
  in.seekg(std::streamoff(file.plan_offset));
  std::vector<char> buffer(1 << 20);
  while (in) {
    in.read(buffer.data(), std::streamsize(buffer.size()));
    digest.update(buffer.data(), size_t(in.gcount()));
  }
  if (digest.hex() != recorded)
    throw Error(ErrorCode::artifact, path + ": its plan does not hash to the sha256 its header records (" +
                                         recorded.substr(0, 12) +
                                         "): the plan was damaged, truncated or swapped since it was built");
  file.manifest = std::move(manifest);
  return file;
}

std::string compatibility_problem(const EngineInfo& engine, const std::string& tensorrt_version,
                                  const std::string& compute_capability, const std::string& platform) {
  const auto built_full = version_tuple(engine.tensorrt_version);
  const auto here_full = version_tuple(tensorrt_version);
  const size_t width = built_full.size() >= 4 && here_full.size() >= 4 ? 4 : 3;
  const auto built = first(built_full, width);
  const auto here = first(here_full, width);
  if (built != here) {
    if (!engine.version_compatible)
      return "built by TensorRT " + engine.tensorrt_version + ", this is TensorRT " + tensorrt_version +
             "; rebuild it here (or build it --version-compatible)";
    if (first(here_full, 3) < first(built_full, 3))
      return "a version-compatible engine built by TensorRT " + engine.tensorrt_version +
             " runs on that or a newer TensorRT, not on " + tensorrt_version;
  }
  if (!platform.empty() && !engine.platform.empty() && (platform == "jetson") != (engine.platform == "jetson")) {
    const std::string where = engine.platform == "jetson" ? "a Jetson" : engine.platform + " with a discrete GPU";
    return "built on " + where + " (" + engine.gpu_name + "), this is " +
           (platform == "jetson" ? std::string("a Jetson") : platform) +
           ": Jetson and discrete-GPU engines do not run on each other (hardware compatibility does not cover "
           "Jetson); rebuild it here";
  }
  if (platform == "jetson" && engine.hardware_compatibility != "none")
    return "built hardware-compatible (" + engine.hardware_compatibility +
           "), which Jetsons do not run; rebuild it here without --hardware-compat";
  if (engine.compute_capability != compute_capability) {
    if (engine.hardware_compatibility == "ampere_plus") {
      if (first(version_tuple(compute_capability), 1) < std::vector<int>{8})
        return "built hardware-compatible for Ampere and newer (SM >= 8.0); this GPU is SM " + compute_capability;
    } else {
      return "built for compute capability " + engine.compute_capability + " (" + engine.gpu_name +
             "); this GPU is " + compute_capability + ": rebuild it here (or build it --hardware-compat)";
    }
  }
  return "";
}

std::string bare_plan_warning(const std::string& path) {
  return path + " has no segdeploy header (a bare plan from trtexec or build_engine.sh?): its TensorRT version and "
                "GPU cannot be checked before TensorRT deserializes it, and its host code is allowed (a "
                "version-compatible plan needs it)";
}

}  // namespace segdeploy
