// Preprocessing: the resize policy (the values of segdeploy.preprocess.fit_size), the input plan, normalisation,
// channel order and layout, and bad images.
#include "segdeploy/preprocess.hpp"

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "segdeploy/error.hpp"
#include "test_util.hpp"

using namespace segdeploy;
using namespace segdeploy_test;

namespace {

Manifest manifest_from(const json& doc) { return Manifest::parse(doc.dump()); }

json dynamic_manifest() {
  json doc = sample_manifest();
  doc["inputs"][0]["shape"] = {"batch", 3, "height", "width"};
  doc["profile"]["batch"] = {{"min", 1}, {"opt", 1}, {"max", 4}};
  doc["profile"]["height"] = {{"min", 256}, {"opt", 512}, {"max", 1024}};
  doc["profile"]["width"] = {{"min", 256}, {"opt", 512}, {"max", 1024}};
  return doc;
}

json in_graph_manifest() {
  json doc = sample_manifest();
  doc["inputs"][0] = {{"name", "image"}, {"dtype", "uint8"}, {"layout", "NHWC"}, {"shape", {1, 512, 512, 3}},
                      {"channel_order", "BGR"}, {"kind", "image"}};
  doc["preprocessing"]["in_graph"] = true;
  return doc;
}

cv::Mat pattern(int h, int w) {
  cv::Mat image(h, w, CV_8UC3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) image.at<cv::Vec3b>(y, x) = cv::Vec3b(uint8_t(x * 7 + y), uint8_t(y * 5), uint8_t(x ^ y));
  return image;
}

}  // namespace

TEST(FitSize, MatchesPython) {
  // segdeploy.preprocess.fit_size(h, w) for these sizes
  const std::vector<std::pair<Size, Size>> cases = {
      {{512, 512}, {512, 512}}, {{600, 512}, {608, 512}}, {{480, 640}, {512, 672}}, {{240, 1000}, {480, 2048}},
      {{97, 131}, {512, 704}},  {{517, 333}, {800, 512}}, {{4000, 3000}, {672, 512}}};
  for (const auto& [in, want] : cases) {
    const Size got = fit_size(in.height, in.width);
    EXPECT_EQ(got.height, want.height) << in.height << "x" << in.width;
    EXPECT_EQ(got.width, want.width) << in.height << "x" << in.width;
  }
}

TEST(FitSize, RoundsHalfToEvenWithAFloorOfOneMultiple) {
  // Python's round(): 48/32 = 1.5 -> 2, 80/32 = 2.5 -> 2, 16/32 = 0.5 -> 0, floored at one multiple
  EXPECT_EQ(fit_size(48, 48, {48, 48}).height, 64);
  EXPECT_EQ(fit_size(80, 80, {80, 80}).height, 64);
  EXPECT_EQ(fit_size(16, 16, {16, 16}).height, 32);
  EXPECT_THROW(fit_size(0, 10), Error);
}

TEST(PlanInput, StaticArtifactsTakeTheirSizeDynamicOnesThePolicyClamped) {
  const Manifest fixed = manifest_from(sample_manifest());
  const InputPlan a = plan_input(fixed, 100, 3000);
  EXPECT_EQ(a.batch, 1);
  EXPECT_EQ(a.size.height, 512);
  EXPECT_EQ(a.size.width, 512);
  const Manifest dynamic = manifest_from(dynamic_manifest());
  const InputPlan b = plan_input(dynamic, 600, 512);
  EXPECT_EQ(b.size.height, 608);
  EXPECT_EQ(b.size.width, 512);
  const InputPlan c = plan_input(dynamic, 240, 1000);  // the policy says 480x2048: the profile stops at 1024
  EXPECT_EQ(c.size.height, 480);
  EXPECT_EQ(c.size.width, 1024);
}

TEST(Preprocess, NormalisesInFloatAfterTheChannelSwap) {
  json doc = sample_manifest();
  doc["inputs"][0]["shape"] = {1, 3, 4, 6};
  doc["profile"]["height"] = {{"min", 4}, {"opt", 4}, {"max", 4}};
  doc["profile"]["width"] = {{"min", 6}, {"opt", 6}, {"max", 6}};
  const Manifest m = manifest_from(doc);
  const cv::Mat image = pattern(4, 6);  // already at the network size: no resize
  const Tensor t = preprocess(image, m);
  ASSERT_EQ(t.shape(), (std::vector<int64_t>{1, 3, 4, 6}));
  ASSERT_EQ(t.dtype(), DType::float32);
  const float* x = t.data_as<float>();
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < 4; ++y)
      for (int w = 0; w < 6; ++w) {
        const float pixel = image.at<cv::Vec3b>(y, w)[2 - c];  // RGB from BGR
        const float want = (pixel - float(m.preprocessing.mean[c])) / float(m.preprocessing.std[c]);
        ASSERT_EQ(x[(c * 4 + y) * 6 + w], want) << c << "," << y << "," << w;
      }
}

TEST(Preprocess, ResizesWithOpenCvBilinear) {
  const Manifest m = manifest_from(sample_manifest());
  const cv::Mat image = pattern(300, 200);
  const Tensor t = preprocess(image, m);
  cv::Mat resized;
  cv::resize(image, resized, cv::Size(512, 512), 0, 0, cv::INTER_LINEAR);
  const float* x = t.data_as<float>();
  const size_t plane = 512 * 512;
  const float want = (float(resized.at<cv::Vec3b>(100, 300)[0]) - float(m.preprocessing.mean[2])) /
                     float(m.preprocessing.std[2]);  // blue is the third RGB plane
  EXPECT_EQ(x[2 * plane + 100 * 512 + 300], want);
}

TEST(Preprocess, InGraphInputsAreResizedUint8Nhwc) {
  const Manifest m = manifest_from(in_graph_manifest());
  const cv::Mat image = pattern(300, 200);
  const Tensor t = preprocess(image, m);
  ASSERT_EQ(t.dtype(), DType::uint8);
  ASSERT_EQ(t.shape(), (std::vector<int64_t>{1, 512, 512, 3}));
  cv::Mat resized;
  cv::resize(image, resized, cv::Size(512, 512), 0, 0, cv::INTER_LINEAR);
  EXPECT_EQ(0, std::memcmp(t.data(), resized.data, t.nbytes()));
}

TEST(Preprocess, StaticBatchesRepeatTheImage) {
  json doc = sample_manifest();
  doc["inputs"][0]["shape"][0] = 2;
  doc["profile"]["batch"] = {{"min", 2}, {"opt", 2}, {"max", 2}};
  const Tensor t = preprocess(pattern(64, 64), manifest_from(doc));
  ASSERT_EQ(t.shape()[0], 2);
  const size_t n = t.numel() / 2;
  EXPECT_EQ(0, std::memcmp(t.data_as<float>(), t.data_as<float>() + n, n * sizeof(float)));
}

TEST(Preprocess, Float16InputsAreRoundedFromFloat32) {
  json doc = sample_manifest();
  doc["inputs"][0]["dtype"] = "float16";
  const Tensor half = preprocess(pattern(64, 64), manifest_from(doc));
  const Tensor single = preprocess(pattern(64, 64), manifest_from(sample_manifest()));
  ASSERT_EQ(half.dtype(), DType::float16);
  cv::Mat back;
  cv::Mat(1, int(half.numel()), CV_16F, const_cast<void*>(half.data())).convertTo(back, CV_32F);
  for (size_t i = 0; i < single.numel(); i += 997)
    EXPECT_NEAR(back.at<float>(int(i)), single.data_as<float>()[i], 2e-3 * std::abs(single.data_as<float>()[i]) + 1e-3);
}

TEST(Preprocess, BadImagesAreInputErrors) {
  const Manifest m = manifest_from(sample_manifest());
  for (const cv::Mat& bad : {cv::Mat(), cv::Mat(10, 10, CV_8UC1, cv::Scalar(0)), cv::Mat(10, 10, CV_32FC3)}) {
    try {
      preprocess(bad, m);
      FAIL() << "a bad image was preprocessed";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::input) << e.what();
    }
  }
}

TEST(ReadImage, MissingAndUndecodableFiles) {
  ScratchDir dir;
  try {
    read_image(dir.file("missing.jpg"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::not_found);
    EXPECT_NE(std::string(e.what()).find("image not found"), std::string::npos);
  }
  write_file(dir.file("text.jpg"), "this is not a JPEG");
  try {
    read_image(dir.file("text.jpg"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::input);
    EXPECT_NE(std::string(e.what()).find("cannot decode image"), std::string::npos);
  }
  const cv::Mat image = pattern(20, 30);
  cv::imwrite(dir.file("ok.png"), image);
  const cv::Mat back = read_image(dir.file("ok.png"));
  EXPECT_EQ(cv::norm(back, image, cv::NORM_INF), 0);
}

namespace {

std::string input_error(const std::string& path) {
  try {
    read_image(path);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::input) << e.what();
    return e.what();
  }
  return "accepted";
}

}  // namespace

// OpenCV decodes a truncated JPEG into an image with a grey bottom and says so only on stderr: Python refuses it
// (preprocess.py), and so does the library.
TEST(ReadImage, TruncatedJpegsAreRefused) {
  ScratchDir dir;
  std::vector<uchar> jpeg;
  cv::imencode(".jpg", pattern(240, 320), jpeg);
  const std::string whole(jpeg.begin(), jpeg.end());
  write_file(dir.file("whole.jpg"), whole);
  EXPECT_EQ(read_image(dir.file("whole.jpg")).rows, 240);
  write_file(dir.file("trailing.jpg"), whole + "some bytes after the image");  // cameras append such
  EXPECT_EQ(read_image(dir.file("trailing.jpg")).rows, 240);
  for (size_t keep : {whole.size() - 2, whole.size() - 100, whole.size() / 2}) {
    write_file(dir.file("cut.jpg"), whole.substr(0, keep));
    EXPECT_NE(input_error(dir.file("cut.jpg")).find("truncated or corrupt"), std::string::npos) << keep;
  }
}

TEST(ReadImage, ImagesBeyondTheSizeCapAreRefusedFromTheirHeader) {
  ScratchDir dir;
  // a PNG whose header claims 20000x20000 and whose data is missing: refused before any decoding
  std::string png = "\x89PNG\r\n\x1a\n";
  png += std::string("\0\0\0\x0d", 4) + "IHDR";
  for (uint32_t v : {20000u, 20000u}) png += {char(v >> 24), char(v >> 16 & 0xff), char(v >> 8 & 0xff), char(v & 0xff)};
  png += std::string("\x08\x02\0\0\0", 5) + std::string(4, '\0');
  write_file(dir.file("huge.png"), png);
  const std::string message = input_error(dir.file("huge.png"));
  EXPECT_NE(message.find("20000x20000"), std::string::npos) << message;
  EXPECT_NE(message.find("segments images of up to 134 MP"), std::string::npos) << message;
}
