// Helpers shared by the unit tests: a scratch folder, files, the sample manifest, hand-built ONNX and engine files.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "segdeploy/manifest.hpp"

namespace segdeploy_test {

namespace fs = std::filesystem;
using nlohmann::json;

// A fresh folder, removed with everything in it when the test ends.
class ScratchDir {
 public:
  ScratchDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() /
            ("segdeploy-" + std::string(info->test_suite_name()) + "-" + info->name() + "-" +
             std::to_string(std::rand()));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// tests/manifests.py's sample_manifest() (static 1x3x512x512 float input, 4-class stride-8 logits), committed as
// cpp/tests/data/manifest.json; a CTest check keeps it valid for the Python reader
inline json sample_document() { return json::parse(read_file(SEGDEPLOY_TEST_DATA "/manifest.json")); }

inline std::string varint(uint64_t v) {
  std::string out;
  do {
    uint8_t byte = v & 0x7f;
    v >>= 7;
    out.push_back(char(byte | (v ? 0x80 : 0)));
  } while (v);
  return out;
}

inline std::string length_delimited(int field, const std::string& payload) {
  return varint(uint64_t(field) << 3 | 2) + varint(payload.size()) + payload;
}

// A protobuf ModelProto with ir_version, a (meaningless) graph and the given metadata_props: enough for the
// manifest reader, not for ONNX Runtime.
inline std::string onnx_bytes(const std::vector<std::pair<std::string, std::string>>& props,
                              const std::string& graph = "not a graph") {
  std::string out = varint(1 << 3 | 0) + varint(9) + length_delimited(7, graph);
  for (const auto& [k, v] : props) out += length_delimited(14, length_delimited(1, k) + length_delimited(2, v));
  return out;
}

// The sample, its graph_sha256 that of onnx_bytes()'s default graph: every reader checks an ONNX file's graph hash.
inline json sample_manifest() {
  json doc = sample_document();
  doc["graph_sha256"] = segdeploy::sha256_hex(onnx_bytes({}));
  return doc;
}

// An ONNX file carrying `doc` as its embedded manifest, the manifest's graph_sha256 set to the graph's.
inline std::string hashed_onnx(json doc, const std::string& graph = "not a graph") {
  doc["graph_sha256"] = segdeploy::sha256_hex(onnx_bytes({}, graph));
  return onnx_bytes({{segdeploy::kOnnxMetadataKey, doc.dump()}}, graph);
}

// "ftrt" + 1 KiB: TensorRT plans start with their own magic
inline std::string fake_plan() {
  std::string plan = "ftrt";
  for (int i = 0; i < 1024; ++i) plan.push_back(char(i & 0xff));
  return plan;
}

// The sample as an engine's header, with the plan_sha256 of fake_plan() (every reader checks it).
inline json engine_manifest(const json& facts = json::object()) {
  json m = sample_manifest();
  m["format"] = "engine";
  m["engine"] = {{"tensorrt_version", "10.3.0"}, {"gpu_name", "Orin"}, {"compute_capability", "8.7"},
                 {"onnx_sha256", std::string(64, '0')}, {"builder", "trtexec"},
                 {"plan_sha256", segdeploy::sha256_hex(fake_plan())}};
  for (const auto& [k, v] : facts.items()) m["engine"][k] = v;
  return m;
}

inline std::string engine_bytes(const std::string& header, const std::string& plan) {
  const uint32_t n = uint32_t(header.size());
  std::string out{char(n & 0xff), char(n >> 8 & 0xff), char(n >> 16 & 0xff), char(n >> 24 & 0xff)};
  return out + header + plan;
}

// Where CTest put the exported artifacts and the photos (the end-to-end tests skip without them).
inline std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

}  // namespace segdeploy_test
