#include "segdeploy/preprocess.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <utility>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "file_util.hpp"
#include "segdeploy/error.hpp"

namespace segdeploy {
namespace {

int round_to_multiple(int value, int multiple) {
  // Python's round(): ties to even (nearbyint in the default rounding mode)
  const int rounded = int(std::nearbyint(double(value) / double(multiple))) * multiple;
  return std::max(multiple, rounded);
}

int clamp_to(int value, const Range& range) { return std::min(std::max(value, range.min), range.max); }

void check_image(const cv::Mat& image) {
  if (image.empty()) throw Error(ErrorCode::input, "empty image");
  if (image.type() != CV_8UC3)
    throw Error(ErrorCode::input, "expected a uint8 colour image (H, W, 3) in BGR order, got " +
                                      std::to_string(image.channels()) + " channel(s) of depth " +
                                      std::to_string(image.depth()));
}

// The image at the network size, channels in `order` (images arrive as BGR).
cv::Mat resized_in_order(const cv::Mat& bgr, Size size, const std::string& order) {
  cv::Mat resized;
  if (bgr.rows == size.height && bgr.cols == size.width)
    resized = bgr;
  else
    cv::resize(bgr, resized, cv::Size(size.width, size.height), 0, 0, cv::INTER_LINEAR);
  if (order == "RGB") {
    cv::Mat rgb;
    cv::cvtColor(resized, rgb, cv::COLOR_BGR2RGB);
    return rgb;
  }
  return resized.isContinuous() ? resized : resized.clone();
}

void normalise_nchw(const cv::Mat& image, const Preprocessing& pre, float* out) {
  const int h = image.rows, w = image.cols;
  const size_t plane = size_t(h) * size_t(w);
  float mean[3], std[3];
  for (int c = 0; c < 3; ++c) mean[c] = float(pre.mean[c]), std[c] = float(pre.std[c]);
  for (int y = 0; y < h; ++y) {
    const uint8_t* row = image.ptr<uint8_t>(y);
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c)
        out[c * plane + size_t(y) * w + x] = (float(row[3 * x + c]) - mean[c]) / std[c];
  }
}

}  // namespace

Size fit_size(int height, int width, std::array<int, 2> scale, int multiple) {
  if (height <= 0 || width <= 0 || multiple <= 0)
    throw Error(ErrorCode::invalid_argument, "fit_size: sizes must be positive, not " + std::to_string(height) + "x" +
                                                 std::to_string(width));
  const double long_max = std::max(scale[0], scale[1]), short_max = std::min(scale[0], scale[1]);
  const double factor = std::min(long_max / std::max(height, width), short_max / std::min(height, width));
  const int h = int(height * factor + 0.5), w = int(width * factor + 0.5);
  return {round_to_multiple(h, multiple), round_to_multiple(w, multiple)};
}

InputPlan plan_input(const Manifest& manifest, int image_height, int image_width) {
  const Profile& p = manifest.profile;
  if (p.is_static()) return {p.batch.opt, {p.height.opt, p.width.opt}};
  const Resize& r = manifest.preprocessing.resize;
  const Size fit = fit_size(image_height, image_width, r.scale, r.round_to);
  return {p.batch.min, {clamp_to(fit.height, p.height), clamp_to(fit.width, p.width)}};
}

Tensor preprocess(const cv::Mat& bgr, const Manifest& manifest, const InputPlan& plan) {
  check_image(bgr);
  const TensorSpec& input = manifest.input();
  const DType dtype = dtype_from_name(input.dtype);
  const int b = plan.batch, h = plan.size.height, w = plan.size.width;
  if (input.layout == "NHWC") {
    if (dtype != DType::uint8)
      throw Error(ErrorCode::unsupported, "an NHWC input must be uint8 (the in-graph preprocessing), not " + input.dtype);
    const cv::Mat image = resized_in_order(bgr, plan.size, input.channel_order.empty() ? "BGR" : input.channel_order);
    Tensor t(DType::uint8, {b, h, w, 3});
    const size_t n = size_t(h) * w * 3;
    for (int i = 0; i < b; ++i) std::copy_n(image.ptr<uint8_t>(0), n, t.data_as<uint8_t>() + i * n);
    return t;
  }
  if (input.layout != "NCHW")
    throw Error(ErrorCode::unsupported, "an image input must be NCHW or NHWC, not " + input.layout);
  if (dtype != DType::float32 && dtype != DType::float16)
    throw Error(ErrorCode::unsupported, "an NCHW image input must be float32 or float16, not " + input.dtype);
  const Preprocessing& pre = manifest.preprocessing;
  const cv::Mat image = resized_in_order(bgr, plan.size, pre.channel_order);
  const size_t n = size_t(3) * h * w;
  Tensor t(dtype, {b, 3, h, w});
  if (dtype == DType::float32) {
    normalise_nchw(image, pre, t.data_as<float>());
    for (int i = 1; i < b; ++i) std::copy_n(t.data_as<float>(), n, t.data_as<float>() + i * n);
  } else {
    cv::Mat one(1, int(n), CV_32F);
    normalise_nchw(image, pre, one.ptr<float>());
    cv::Mat half(1, int(n), CV_16F, t.data());
    one.convertTo(half, CV_16F);  // round to nearest even, as numpy's astype(float16)
    for (int i = 1; i < b; ++i) std::copy_n(t.data_as<uint16_t>(), n, t.data_as<uint16_t>() + i * n);
  }
  return t;
}

Tensor preprocess(const cv::Mat& bgr, const Manifest& manifest) {
  check_image(bgr);
  return preprocess(bgr, manifest, plan_input(manifest, bgr.rows, bgr.cols));
}

namespace {

uint32_t big_endian(const std::string& b, size_t at, int n) {
  uint32_t v = 0;
  for (int i = 0; i < n; ++i) v = v << 8 | uint8_t(b[at + i]);
  return v;
}

// (height, width) from a PNG, JPEG or BMP header; {0, 0} when the header does not tell (the decoder decides).
std::pair<int64_t, int64_t> header_dimensions(const std::string& b) {
  if (b.size() >= 24 && b.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0 && b.compare(12, 4, "IHDR") == 0)
    return {big_endian(b, 20, 4), big_endian(b, 16, 4)};
  if (b.size() >= 26 && b.compare(0, 2, "BM") == 0) {
    auto little = [&](size_t at) { return int32_t(uint32_t(uint8_t(b[at])) | uint32_t(uint8_t(b[at + 1])) << 8 |
                                                  uint32_t(uint8_t(b[at + 2])) << 16 | uint32_t(uint8_t(b[at + 3])) << 24); };
    return {std::abs(int64_t(little(22))), std::abs(int64_t(little(18)))};
  }
  if (b.size() >= 4 && uint8_t(b[0]) == 0xFF && uint8_t(b[1]) == 0xD8) {
    size_t at = 2;
    while (at + 4 <= b.size()) {
      if (uint8_t(b[at]) != 0xFF) return {0, 0};
      const uint8_t marker = uint8_t(b[at + 1]);
      if (marker == 0xFF) { ++at; continue; }
      if (marker == 0xD8 || marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) { at += 2; continue; }
      const size_t length = big_endian(b, at + 2, 2);
      const bool sof = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
      if (sof && at + 9 <= b.size()) return {big_endian(b, at + 5, 2), big_endian(b, at + 7, 2)};
      if (length < 2) return {0, 0};
      at += 2 + length;
    }
  }
  return {0, 0};
}

// A JPEG is whole when, after its first scan (SOS) begins, an end-of-image marker (FF D9) follows: inside
// entropy-coded data an FF is always followed by 00 or a restart marker, so FF D9 there is the end.
bool jpeg_has_end(const std::string& b) {
  size_t at = 2;
  while (at + 4 <= b.size()) {
    if (uint8_t(b[at]) != 0xFF) return false;
    const uint8_t marker = uint8_t(b[at + 1]);
    if (marker == 0xFF) { ++at; continue; }
    if (marker == 0xD8 || marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) { at += 2; continue; }
    if (marker == 0xD9) return true;
    const size_t length = big_endian(b, at + 2, 2);
    if (marker == 0xDA) {
      for (size_t i = at + 2 + length; i + 1 < b.size(); ++i)
        if (uint8_t(b[i]) == 0xFF && uint8_t(b[i + 1]) == 0xD9) return true;
      return false;
    }
    at += 2 + length;
  }
  return false;
}

void check_image_size(int64_t height, int64_t width, const std::string& path) {
  if (height * width > kMaxImagePixels)
    throw Error(ErrorCode::input, path + " is " + std::to_string(height) + "x" + std::to_string(width) + " (" +
                                      std::to_string(height * width / 1000000) + " MP); segdeploy segments images of "
                                      "up to " + std::to_string(kMaxImagePixels / 1000000) +
                                      " MP: downscale it first");
}

}  // namespace

cv::Mat read_image(const std::string& path) {
  require_file(path, "image");
  const std::string bytes = read_bytes(path, 0, file_size(path));
  const auto [height, width] = header_dimensions(bytes);
  check_image_size(height, width, path);
  if (bytes.size() >= 2 && uint8_t(bytes[0]) == 0xFF && uint8_t(bytes[1]) == 0xD8 && !jpeg_has_end(bytes))
    throw Error(ErrorCode::input, "cannot decode image " + path + ": truncated or corrupt (the JPEG ends before its "
                                  "end-of-image marker)");
  cv::Mat image;
  try {
    image = cv::imread(path, cv::IMREAD_COLOR);  // as Python reads it (EXIF orientation included)
  } catch (const cv::Exception& e) {
    throw Error(ErrorCode::input, "cannot decode image " + path + ": " + e.err);
  }
  if (image.empty()) throw Error(ErrorCode::input, "cannot decode image " + path + ": not an image OpenCV can read");
  check_image_size(image.rows, image.cols, path);
  return image;
}

}  // namespace segdeploy
