// The C API on bad input: every failure is a status and one line from segdeploy_last_error(), never a crash.
#include "segdeploy/segdeploy.h"

#include <algorithm>
#include <string>

#include "segdeploy/segmenter.hpp"
#include "test_util.hpp"

using namespace segdeploy_test;

namespace {

// The status and message of opening `artifact`.
std::pair<segdeploy_status, std::string> create(const std::string& artifact, const char* device = "cpu") {
  segdeploy_options options{device, 0, 1};
  segdeploy_segmenter* seg = reinterpret_cast<segdeploy_segmenter*>(0x1);
  const segdeploy_status status = segdeploy_create(artifact.c_str(), &options, &seg);
  EXPECT_EQ(seg, nullptr) << "a failed create left a segmenter";
  segdeploy_destroy(seg);
  return {status, segdeploy_last_error()};
}

bool has(const std::string& text, const std::string& fragment) { return text.find(fragment) != std::string::npos; }

}  // namespace

TEST(CApi, VersionAndStatusNames) {
  EXPECT_STRNE(segdeploy_version(), "");
  EXPECT_STREQ(segdeploy_status_name(SEGDEPLOY_OK), "ok");
  EXPECT_STREQ(segdeploy_status_name(SEGDEPLOY_ERR_SCHEMA_VERSION), "unsupported manifest schema version");
  EXPECT_STREQ(segdeploy_status_name(static_cast<segdeploy_status>(42)), "unknown status");
}

TEST(CApi, NullArgumentsAreInvalid) {
  segdeploy_segmenter* seg = nullptr;
  EXPECT_EQ(segdeploy_create(nullptr, nullptr, &seg), SEGDEPLOY_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(has(segdeploy_last_error(), "artifact is NULL"));
  EXPECT_EQ(segdeploy_create("x.onnx", nullptr, nullptr), SEGDEPLOY_ERR_INVALID_ARGUMENT);
  segdeploy_result* result = nullptr;
  EXPECT_EQ(segdeploy_run_file(nullptr, "x.jpg", &result), SEGDEPLOY_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(segdeploy_run(nullptr, nullptr, 1, 1, 0, &result), SEGDEPLOY_ERR_INVALID_ARGUMENT);
  segdeploy_mask mask;
  EXPECT_EQ(segdeploy_result_mask(nullptr, &mask), SEGDEPLOY_ERR_INVALID_ARGUMENT);
  segdeploy_logits logits;
  EXPECT_EQ(segdeploy_result_logits(nullptr, &logits), SEGDEPLOY_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(segdeploy_class_info(nullptr, 0, nullptr, nullptr), SEGDEPLOY_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(segdeploy_manifest_json(nullptr), nullptr);
  EXPECT_EQ(segdeploy_num_classes(nullptr), 0);
  segdeploy_release(nullptr);
  segdeploy_destroy(nullptr);
  segdeploy_options negative{"cpu", 0, -1};
  EXPECT_EQ(segdeploy_create("x.onnx", &negative, &seg), SEGDEPLOY_ERR_INVALID_ARGUMENT);
}

TEST(CApi, MissingCorruptAndForeignArtifacts) {
  ScratchDir dir;
  auto [status, message] = create(dir.file("missing.onnx"));
  EXPECT_EQ(status, SEGDEPLOY_ERR_NOT_FOUND);
  EXPECT_TRUE(has(message, "artifact not found: " + dir.file("missing.onnx"))) << message;

  std::string noise(8192, '\0');
  for (size_t i = 0; i < noise.size(); ++i) noise[i] = char((i * 2654435761u) >> 13);
  write_file(dir.file("noise.onnx"), noise);
  std::tie(status, message) = create(dir.file("noise.onnx"));
  EXPECT_EQ(status, SEGDEPLOY_ERR_ARTIFACT) << message;

  // a valid manifest in front of a graph ONNX Runtime cannot load
  write_file(dir.file("garbage.onnx"), hashed_onnx(sample_manifest(), std::string(64, '\xff')));
  std::tie(status, message) = create(dir.file("garbage.onnx"));
  EXPECT_EQ(status, SEGDEPLOY_ERR_ARTIFACT) << message;
  EXPECT_TRUE(has(message, "cannot be loaded by ONNX Runtime")) << message;

  write_file(dir.file("m.json"), sample_manifest().dump());
  std::tie(status, message) = create(dir.file("m.json"));
  EXPECT_EQ(status, SEGDEPLOY_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(has(message, "is a manifest")) << message;
}

TEST(CApi, OtherSchemaVersionsAreRefused) {
  ScratchDir dir;
  json v3 = sample_manifest();
  v3["schema_version"] = 3;
  write_file(dir.file("v3.onnx"), onnx_bytes({{segdeploy::kOnnxMetadataKey, v3.dump()}}));
  auto [status, message] = create(dir.file("v3.onnx"));
  EXPECT_EQ(status, SEGDEPLOY_ERR_SCHEMA_VERSION);
  EXPECT_TRUE(has(message, "schema_version 3")) << message;
  write_file(dir.file("old.onnx"), onnx_bytes({{"segdeploy_metadata_version", "1"}}));
  std::tie(status, message) = create(dir.file("old.onnx"));
  EXPECT_EQ(status, SEGDEPLOY_ERR_SCHEMA_VERSION);
  EXPECT_TRUE(has(message, "segdeploy 0.1")) << message;
}

TEST(CApi, EnginesWithoutTensorRtAreUnsupported) {
  if (segdeploy::has_tensorrt_backend()) GTEST_SKIP() << "this build has the TensorRT backend";
  ScratchDir dir;
  write_file(dir.file("m.engine"), engine_bytes(engine_manifest().dump(), fake_plan()));
  auto [status, message] = create(dir.file("m.engine"));
  EXPECT_EQ(status, SEGDEPLOY_ERR_UNSUPPORTED);
  EXPECT_TRUE(has(message, "built without TensorRT")) << message;
  write_file(dir.file("bad.engine"), engine_bytes("{" + std::string(100, 'x'), fake_plan()));
  std::tie(status, message) = create(dir.file("bad.engine"));
  EXPECT_EQ(status, SEGDEPLOY_ERR_ARTIFACT);
  EXPECT_TRUE(has(message, "corrupt")) << message;
}

TEST(CApi, AbsentExecutionProvidersAreClearErrors) {
  ScratchDir dir;
  write_file(dir.file("m.onnx"), onnx_bytes({{segdeploy::kOnnxMetadataKey, sample_manifest().dump()}}));
  const auto providers = segdeploy::onnxruntime_providers();
  if (std::find(providers.begin(), providers.end(), "CUDAExecutionProvider") != providers.end())
    GTEST_SKIP() << "this ONNX Runtime has the CUDA execution provider";
  auto [status, message] = create(dir.file("m.onnx"), "cuda");
  EXPECT_EQ(status, SEGDEPLOY_ERR_UNSUPPORTED);
  EXPECT_TRUE(has(message, "has no CUDAExecutionProvider")) << message;
  std::tie(status, message) = create(dir.file("m.onnx"), "tensorrt");
  EXPECT_EQ(status, SEGDEPLOY_ERR_UNSUPPORTED);
  EXPECT_TRUE(has(message, "has no TensorrtExecutionProvider")) << message;
  std::tie(status, message) = create(dir.file("m.onnx"), "tpu");
  EXPECT_EQ(status, SEGDEPLOY_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(has(message, "device must be cpu, cuda or tensorrt")) << message;
}
