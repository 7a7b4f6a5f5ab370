#include "segdeploy/postprocess.hpp"

#include <cmath>
#include <limits>
#include <opencv2/imgproc.hpp>

#include "segdeploy/error.hpp"

namespace segdeploy {
namespace {

// torch's linear interpolation indices and weights along one axis (UpSample.h: area_pixel_compute_scale,
// area_pixel_compute_source_index, guard_index_and_lambda), in float as torch computes them for float tensors.
struct Taps {
  std::vector<int> i0, i1;
  std::vector<float> w0, w1;
};

Taps linear_taps(int in, int out, bool align_corners) {
  Taps t;
  t.i0.resize(out), t.i1.resize(out), t.w0.resize(out), t.w1.resize(out);
  const float scale = align_corners ? (out > 1 ? float(in - 1) / float(out - 1) : 0.f) : float(in) / float(out);
  for (int o = 0; o < out; ++o) {
    if (in == out) {
      t.i0[o] = t.i1[o] = o, t.w0[o] = 1.f, t.w1[o] = 0.f;
      continue;
    }
    float src = align_corners ? scale * float(o) : scale * (float(o) + 0.5f) - 0.5f;
    if (!align_corners && src < 0) src = 0;
    const int i0 = std::min(int(std::floor(src)), in - 1);
    const float lambda = std::min(std::max(src - float(i0), 0.f), 1.f);
    t.i0[o] = i0, t.i1[o] = i0 + (i0 < in - 1 ? 1 : 0);
    t.w0[o] = 1.f - lambda, t.w1[o] = lambda;
  }
  return t;
}

template <typename Label>
void resize_argmax(const float* logits, int classes, int h, int w, Size size, bool align_corners, cv::Mat& mask) {
  const Taps xs = linear_taps(w, size.width, align_corners), ys = linear_taps(h, size.height, align_corners);
  // pass 1: every class row resized along x (each is used by several output rows)
  std::vector<float> rows(size_t(classes) * h * size.width);
  cv::parallel_for_(cv::Range(0, classes * h), [&](const cv::Range& r) {
    for (int cr = r.start; cr < r.end; ++cr) {
      const float* src = logits + size_t(cr) * w;
      float* dst = rows.data() + size_t(cr) * size.width;
      for (int x = 0; x < size.width; ++x) dst[x] = src[xs.i0[x]] * xs.w0[x] + src[xs.i1[x]] * xs.w1[x];
    }
  });
  // pass 2: along y, keeping the running maximum over classes (branch-free, so the compiler vectorises it)
  cv::parallel_for_(cv::Range(0, size.height), [&](const cv::Range& r) {
    const int width = size.width;  // a local bound lets the compiler count (and vectorise) the loop
    std::vector<float> best(size.width);
    std::vector<int32_t> label(size.width);
    for (int y = r.start; y < r.end; ++y) {
      std::fill(best.begin(), best.end(), -std::numeric_limits<float>::infinity());
      std::fill(label.begin(), label.end(), 0);
      const float wy0 = ys.w0[y], wy1 = ys.w1[y];
      for (int c = 0; c < classes; ++c) {
        const float* __restrict r0 = rows.data() + (size_t(c) * h + ys.i0[y]) * size.width;
        const float* __restrict r1 = rows.data() + (size_t(c) * h + ys.i1[y]) * size.width;
        float* __restrict b = best.data();
        int32_t* __restrict l = label.data();
        for (int x = 0; x < width; ++x) {
          const float v = r0[x] * wy0 + r1[x] * wy1;
          const float old = b[x];
          const int32_t greater = -int32_t(v > old);  // strict: the first maximum wins, as torch.argmax
          b[x] = v > old ? v : old;
          l[x] ^= (l[x] ^ c) & greater;
        }
      }
      Label* out = mask.ptr<Label>(y);
      for (int x = 0; x < size.width; ++x) out[x] = Label(label[x]);
    }
  });
}

}  // namespace

cv::Mat logits_to_mask(const float* logits, int classes, int height, int width, Size size, bool align_corners) {
  if (!logits || classes <= 0 || height <= 0 || width <= 0 || size.height <= 0 || size.width <= 0)
    throw Error(ErrorCode::invalid_argument, "logits_to_mask: empty logits or size");
  if (classes > 65536) throw Error(ErrorCode::unsupported, "more than 65536 classes");
  if (classes <= 256) {
    cv::Mat mask(size.height, size.width, CV_8U);
    resize_argmax<uint8_t>(logits, classes, height, width, size, align_corners, mask);
    return mask;
  }
  cv::Mat mask(size.height, size.width, CV_16U);
  resize_argmax<uint16_t>(logits, classes, height, width, size, align_corners, mask);
  return mask;
}

cv::Mat logits_to_mask(const Tensor& logits, Size size, bool align_corners, int index) {
  const auto& s = logits.shape();
  if (s.size() != 4 || index < 0 || index >= s[0])
    throw Error(ErrorCode::input, "logits must be (N, K, h, w) with element " + std::to_string(index) + ", not " +
                                      logits.shape_string());
  const size_t n = size_t(s[1] * s[2] * s[3]);
  if (logits.dtype() == DType::float32)
    return logits_to_mask(logits.data_as<float>() + index * n, int(s[1]), int(s[2]), int(s[3]), size, align_corners);
  if (logits.dtype() == DType::float16) {
    cv::Mat half(1, int(n), CV_16F, const_cast<void*>(static_cast<const void*>(logits.data_as<uint16_t>() + index * n)));
    cv::Mat one;
    half.convertTo(one, CV_32F);
    return logits_to_mask(one.ptr<float>(), int(s[1]), int(s[2]), int(s[3]), size, align_corners);
  }
  throw Error(ErrorCode::unsupported, std::string("logits of dtype ") + dtype_name(logits.dtype()));
}

cv::Mat mask_from_output(const Tensor& mask, int num_classes, Size size, int index) {
  const auto& s = mask.shape();
  if (s.size() != 3 || index < 0 || index >= s[0])
    throw Error(ErrorCode::input, "a mask output must be (N, H, W) with element " + std::to_string(index) + ", not " +
                                      mask.shape_string());
  const int h = int(s[1]), w = int(s[2]);
  const size_t n = size_t(h) * w;
  const int type = num_classes <= 256 ? CV_8U : CV_16U;
  cv::Mat labels(h, w, type);
  auto copy = [&](auto* src) {
    for (size_t i = 0; i < n; ++i) {
      const int64_t v = std::min<int64_t>(std::max<int64_t>(int64_t(src[i]), 0), num_classes - 1);
      if (type == CV_8U) labels.ptr<uint8_t>()[i] = uint8_t(v);
      else labels.ptr<uint16_t>()[i] = uint16_t(v);
    }
  };
  switch (mask.dtype()) {
    case DType::uint8: copy(mask.data_as<uint8_t>() + index * n); break;
    case DType::int32: copy(mask.data_as<int32_t>() + index * n); break;
    case DType::int64: copy(mask.data_as<int64_t>() + index * n); break;
    default: throw Error(ErrorCode::unsupported, std::string("mask outputs of dtype ") + dtype_name(mask.dtype()));
  }
  if (h == size.height && w == size.width) return labels;
  cv::Mat resized;
  cv::resize(labels, resized, cv::Size(size.width, size.height), 0, 0, cv::INTER_NEAREST);
  return resized;
}

cv::Mat colorize(const cv::Mat& mask, const std::vector<std::array<uint8_t, 3>>& palette) {
  if (mask.empty() || (mask.type() != CV_8U && mask.type() != CV_16U))
    throw Error(ErrorCode::input, "colorize: the mask must be a non-empty CV_8U or CV_16U image");
  if (palette.empty()) throw Error(ErrorCode::invalid_argument, "colorize: empty palette");
  cv::Mat out(mask.size(), CV_8UC3);
  const size_t last = palette.size() - 1;
  for (int y = 0; y < mask.rows; ++y) {
    cv::Vec3b* dst = out.ptr<cv::Vec3b>(y);
    for (int x = 0; x < mask.cols; ++x) {
      const size_t label = mask.type() == CV_8U ? mask.ptr<uint8_t>(y)[x] : mask.ptr<uint16_t>(y)[x];
      const auto& rgb = palette[std::min(label, last)];
      dst[x] = cv::Vec3b(rgb[2], rgb[1], rgb[0]);
    }
  }
  return out;
}

cv::Mat overlay(const cv::Mat& bgr, const cv::Mat& colours, double alpha) {
  if (bgr.size() != colours.size() || bgr.type() != CV_8UC3 || colours.type() != CV_8UC3)
    throw Error(ErrorCode::input, "overlay: the image and the colour mask must be uint8 BGR images of one size");
  if (!(alpha >= 0 && alpha <= 1)) throw Error(ErrorCode::invalid_argument, "overlay: alpha must be in [0, 1]");
  cv::Mat out;
  cv::addWeighted(bgr, 1.0 - alpha, colours, alpha, 0.0, out);
  return out;
}

}  // namespace segdeploy
