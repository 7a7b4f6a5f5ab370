// End to end on real exports (made by the CTest fixture; skipped without them): the C++ and C APIs agree, the
// tensor entry point refuses inputs that do not fit the manifest, and bad images are errors, not crashes.
#include <opencv2/imgcodecs.hpp>

#include "segdeploy/segdeploy.h"
#include "segdeploy/segmenter.hpp"
#include "test_util.hpp"

using namespace segdeploy;
using namespace segdeploy_test;

namespace {

class EndToEnd : public ::testing::Test {
 protected:
  void SetUp() override {
    artifacts_ = env("SEGDEPLOY_TEST_ARTIFACTS");
    images_ = SEGDEPLOY_TEST_IMAGES;
    if (artifacts_.empty()) GTEST_SKIP() << "SEGDEPLOY_TEST_ARTIFACTS is not set (CTest sets it)";
  }
  std::string artifact(const std::string& name) const { return artifacts_ + "/" + name; }
  std::string photo() const { return images_ + "/grace_hopper.jpg"; }

  std::string artifacts_, images_;
};

std::string input_error(Segmenter& seg, const Tensor& t) {
  try {
    seg.infer(t);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::input) << e.what();
    return e.what();
  }
  return "";
}

}  // namespace

TEST_F(EndToEnd, CAndCppApisGiveTheSameMaskAndLogits) {
  Segmenter seg(artifact("cgrseg_t_512x512.onnx"), Options{"cpu", 0, 2});
  const cv::Mat image = read_image(photo());
  const Result cpp = seg.segment(image);
  ASSERT_EQ(cpp.mask.rows, image.rows);
  ASSERT_EQ(cpp.mask.cols, image.cols);
  ASSERT_EQ(cpp.logits.shape(), (std::vector<int64_t>{1, 150, 64, 64}));

  segdeploy_options options{"cpu", 0, 2};
  segdeploy_segmenter* c = nullptr;
  ASSERT_EQ(segdeploy_create(artifact("cgrseg_t_512x512.onnx").c_str(), &options, &c), SEGDEPLOY_OK)
      << segdeploy_last_error();
  EXPECT_EQ(segdeploy_num_classes(c), 150);
  const char* name = nullptr;
  uint8_t rgb[3];
  ASSERT_EQ(segdeploy_class_info(c, 2, &name, rgb), SEGDEPLOY_OK);
  EXPECT_STREQ(name, seg.manifest().model.class_names[2].c_str());
  EXPECT_EQ(segdeploy_class_info(c, 150, &name, rgb), SEGDEPLOY_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(segdeploy_manifest_json(c)).find("\"schema_version\""), std::string::npos);

  // the image as a buffer with padded rows
  const size_t stride = size_t(image.cols) * 3 + 64;
  std::vector<uint8_t> buffer(stride * size_t(image.rows));
  for (int y = 0; y < image.rows; ++y) std::memcpy(&buffer[y * stride], image.ptr(y), size_t(image.cols) * 3);
  segdeploy_result* result = nullptr;
  ASSERT_EQ(segdeploy_run(c, buffer.data(), image.rows, image.cols, stride, &result), SEGDEPLOY_OK)
      << segdeploy_last_error();
  segdeploy_destroy(c);  // results outlive their segmenter
  segdeploy_mask mask;
  ASSERT_EQ(segdeploy_result_mask(result, &mask), SEGDEPLOY_OK);
  ASSERT_EQ(mask.bytes_per_label, 1);
  ASSERT_EQ(mask.height, image.rows);
  EXPECT_EQ(0, std::memcmp(mask.data, cpp.mask.data, size_t(image.rows) * image.cols));
  segdeploy_logits logits;
  ASSERT_EQ(segdeploy_result_logits(result, &logits), SEGDEPLOY_OK);
  EXPECT_EQ(logits.shape[1], 150);
  EXPECT_EQ(0, std::memcmp(logits.data, cpp.logits.data(), cpp.logits.nbytes()));
  segdeploy_timing timing;
  ASSERT_EQ(segdeploy_result_timing(result, &timing), SEGDEPLOY_OK);
  EXPECT_GT(timing.infer_ms, 0);
  segdeploy_release(result);
}

TEST_F(EndToEnd, TensorsThatDoNotFitTheManifestAreRefused) {
  Segmenter fixed(artifact("cgrseg_t_512x512.onnx"));
  EXPECT_NE(input_error(fixed, Tensor(DType::float32, {1, 3, 500, 512})).find("dimension 2 is 500, not 512"),
            std::string::npos);
  EXPECT_NE(input_error(fixed, Tensor(DType::uint8, {1, 3, 512, 512})).find("dtype uint8 is not float32"),
            std::string::npos);
  EXPECT_NE(input_error(fixed, Tensor(DType::float32, {3, 512, 512})).find("rank 3 is not 4"), std::string::npos);
  EXPECT_EQ(fixed.infer(Tensor(DType::float32, {1, 3, 512, 512})).shape(), (std::vector<int64_t>{1, 150, 64, 64}));

  Segmenter dynamic(artifact("cgrseg_t_512x512_dynamic.onnx"));
  EXPECT_NE(input_error(dynamic, Tensor(DType::float32, {1, 3, 520, 512})).find("520x512 is not a multiple of 32"),
            std::string::npos);
  EXPECT_NE(input_error(dynamic, Tensor(DType::float32, {5, 3, 256, 256})).find("batch 5 outside 1-4"),
            std::string::npos);
  EXPECT_NE(input_error(dynamic, Tensor(DType::float32, {1, 3, 2048, 256})).find("height 2048 outside 256-1024"),
            std::string::npos);
  EXPECT_EQ(dynamic.infer(Tensor(DType::float32, {1, 3, 256, 320})).shape(), (std::vector<int64_t>{1, 150, 32, 40}));
}

TEST_F(EndToEnd, MaskArtifactsHaveNoLogits) {
  segdeploy_segmenter* c = nullptr;
  ASSERT_EQ(segdeploy_create(artifact("cgrseg_t_512x512_mask.onnx").c_str(), nullptr, &c), SEGDEPLOY_OK)
      << segdeploy_last_error();
  segdeploy_result* result = nullptr;
  ASSERT_EQ(segdeploy_run_file(c, photo().c_str(), &result), SEGDEPLOY_OK) << segdeploy_last_error();
  segdeploy_mask mask;
  ASSERT_EQ(segdeploy_result_mask(result, &mask), SEGDEPLOY_OK);
  EXPECT_EQ(mask.width, read_image(photo()).cols);
  segdeploy_logits logits;
  EXPECT_EQ(segdeploy_result_logits(result, &logits), SEGDEPLOY_ERR_UNSUPPORTED);
  EXPECT_NE(std::string(segdeploy_last_error()).find("outputs masks"), std::string::npos);
  segdeploy_release(result);
  segdeploy_destroy(c);
}

TEST_F(EndToEnd, BadImagesAreStatusesNotCrashes) {
  ScratchDir dir;
  segdeploy_segmenter* c = nullptr;
  ASSERT_EQ(segdeploy_create(artifact("cgrseg_t_512x512.onnx").c_str(), nullptr, &c), SEGDEPLOY_OK);
  segdeploy_result* result = nullptr;
  EXPECT_EQ(segdeploy_run_file(c, dir.file("missing.jpg").c_str(), &result), SEGDEPLOY_ERR_NOT_FOUND);
  EXPECT_NE(std::string(segdeploy_last_error()).find("image not found"), std::string::npos);
  write_file(dir.file("broken.jpg"), read_file(photo()).substr(0, 20));
  EXPECT_EQ(segdeploy_run_file(c, dir.file("broken.jpg").c_str(), &result), SEGDEPLOY_ERR_INPUT);
  EXPECT_NE(std::string(segdeploy_last_error()).find("cannot decode image"), std::string::npos);
  const uint8_t pixels[12] = {};
  EXPECT_EQ(segdeploy_run(c, pixels, 0, 4, 0, &result), SEGDEPLOY_ERR_INPUT);
  EXPECT_EQ(segdeploy_run(c, pixels, 2, -3, 0, &result), SEGDEPLOY_ERR_INPUT);
  EXPECT_EQ(segdeploy_run(c, pixels, 1, 4, 6, &result), SEGDEPLOY_ERR_INPUT);
  EXPECT_NE(std::string(segdeploy_last_error()).find("stride 6 is shorter than a row of 12 bytes"), std::string::npos);
  EXPECT_EQ(result, nullptr);
  // a tiny image is fine: it is resized like any other
  ASSERT_EQ(segdeploy_run(c, pixels, 1, 4, 0, &result), SEGDEPLOY_OK) << segdeploy_last_error();
  segdeploy_release(result);
  segdeploy_destroy(c);
}
