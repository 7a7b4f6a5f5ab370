// Postprocessing: torch's bilinear resize (align_corners both ways), argmax ties, in-graph masks, colours.
#include "segdeploy/postprocess.hpp"

#include "segdeploy/error.hpp"
#include "test_util.hpp"

using namespace segdeploy;

namespace {

std::vector<int> row(const cv::Mat& mask) {
  std::vector<int> out;
  for (int x = 0; x < mask.cols; ++x) out.push_back(mask.at<uint8_t>(0, x));
  return out;
}

}  // namespace

TEST(LogitsToMask, SameSizeIsArgmaxAndTiesGoToTheFirstClass) {
  // 3 classes, 1x4: pixel 2 ties classes 0 and 2, pixel 3 ties all
  const std::vector<float> logits = {0, 5, 1, 7,  /* class 0 */
                                     1, 2, 0, 7,  /* class 1 */
                                     2, 2, 1, 7}; /* class 2 */
  const cv::Mat mask = logits_to_mask(logits.data(), 3, 1, 4, {1, 4}, false);
  ASSERT_EQ(mask.type(), CV_8U);
  EXPECT_EQ(row(mask), (std::vector<int>{2, 0, 0, 0}));
}

TEST(LogitsToMask, UpsamplesLikeTorchForBothAlignCorners) {
  // class 0 ramps 0 -> 1 across two pixels; class 1 is 0.3. Resized to 4 pixels, class 0 is
  // align_corners=False: 0, 0.25, 0.75, 1 (source x = (x + 0.5) / 2 - 0.5, clamped at 0)
  // align_corners=True:  0, 1/3, 2/3, 1
  const std::vector<float> logits = {0.f, 1.f, 0.3f, 0.3f};
  EXPECT_EQ(row(logits_to_mask(logits.data(), 2, 1, 2, {1, 4}, false)), (std::vector<int>{1, 1, 0, 0}));
  EXPECT_EQ(row(logits_to_mask(logits.data(), 2, 1, 2, {1, 4}, true)), (std::vector<int>{1, 0, 0, 0}));
}

TEST(LogitsToMask, ManyClassesGiveSixteenBitMasks) {
  const int k = 300;
  std::vector<float> logits(size_t(k) * 2 * 2, 0.f);
  logits[size_t(299) * 4 + 3] = 1.f;  // class 299 wins at pixel (1, 1)
  const cv::Mat mask = logits_to_mask(logits.data(), k, 2, 2, {2, 2}, false);
  ASSERT_EQ(mask.type(), CV_16U);
  EXPECT_EQ(mask.at<uint16_t>(1, 1), 299);
  EXPECT_EQ(mask.at<uint16_t>(0, 0), 0);
}

TEST(LogitsToMask, TensorsAndBadShapes) {
  Tensor t(DType::float32, {2, 2, 1, 2});
  float* x = t.data_as<float>();
  const float values[] = {0, 1, 1, 0, /* batch 1 */ 1, 0, 0, 1};
  std::copy(values, values + 8, x);
  EXPECT_EQ(row(logits_to_mask(t, {1, 2}, false, 0)), (std::vector<int>{1, 0}));
  EXPECT_EQ(row(logits_to_mask(t, {1, 2}, false, 1)), (std::vector<int>{0, 1}));
  EXPECT_THROW(logits_to_mask(t, {1, 2}, false, 2), Error);
  EXPECT_THROW(logits_to_mask(Tensor(DType::float32, {2, 2}), {1, 2}, false), Error);
  EXPECT_THROW(logits_to_mask(nullptr, 2, 1, 2, {1, 2}, false), Error);
}

TEST(MaskFromOutput, ClampsAndResizesNearest) {
  Tensor t(DType::int64, {1, 2, 2});
  const int64_t labels[] = {0, 3, 7, -1};
  std::copy(labels, labels + 4, t.data_as<int64_t>());
  const cv::Mat same = mask_from_output(t, 5, {2, 2});
  EXPECT_EQ(same.at<uint8_t>(0, 1), 3);
  EXPECT_EQ(same.at<uint8_t>(1, 0), 4);  // 7 clamped to the last class
  EXPECT_EQ(same.at<uint8_t>(1, 1), 0);
  const cv::Mat big = mask_from_output(t, 5, {4, 4});
  EXPECT_EQ(big.at<uint8_t>(0, 3), 3);
  EXPECT_EQ(big.at<uint8_t>(3, 0), 4);
  EXPECT_THROW(mask_from_output(Tensor(DType::float32, {1, 2, 2}), 5, {2, 2}), Error);
}

TEST(Colours, PaletteIsRgbAndOverlayBlends) {
  cv::Mat mask = (cv::Mat_<uint8_t>(1, 3) << 0, 1, 9);
  const std::vector<std::array<uint8_t, 3>> palette = {{{10, 20, 30}}, {{200, 100, 0}}};
  const cv::Mat colours = colorize(mask, palette);
  EXPECT_EQ(colours.at<cv::Vec3b>(0, 0), cv::Vec3b(30, 20, 10));
  EXPECT_EQ(colours.at<cv::Vec3b>(0, 1), cv::Vec3b(0, 100, 200));
  EXPECT_EQ(colours.at<cv::Vec3b>(0, 2), cv::Vec3b(0, 100, 200));  // past the palette: its last colour
  const cv::Mat image(1, 3, CV_8UC3, cv::Scalar(100, 100, 100));
  EXPECT_EQ(cv::norm(overlay(image, colours, 0.0), image, cv::NORM_INF), 0);
  EXPECT_EQ(cv::norm(overlay(image, colours, 1.0), colours, cv::NORM_INF), 0);
  EXPECT_EQ(overlay(image, colours, 0.5).at<cv::Vec3b>(0, 0), cv::Vec3b(65, 60, 55));
  EXPECT_THROW(overlay(image, cv::Mat(2, 3, CV_8UC3), 0.5), Error);
  EXPECT_THROW(colorize(cv::Mat(), palette), Error);
}
