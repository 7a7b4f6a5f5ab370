// The library's front door: open an artifact segdeploy wrote (ONNX or TensorRT engine), hand it BGR images, get
// masks that equal Python's, with the preprocessing taken from the artifact's manifest.
//
//   segdeploy::Segmenter seg("cgrseg_t_512x512.onnx");
//   segdeploy::Result r = seg.segment(segdeploy::read_image("photo.jpg"));
//   cv::imwrite("mask.png", r.mask);
#pragma once

#include <memory>
#include <opencv2/core.hpp>
#include <string>
#include <vector>

#include "segdeploy/error.hpp"
#include "segdeploy/manifest.hpp"
#include "segdeploy/postprocess.hpp"
#include "segdeploy/preprocess.hpp"
#include "segdeploy/tensor.hpp"

namespace segdeploy {

struct Options {
  // ONNX artifacts: the ONNX Runtime execution provider, chosen at run time: "cpu", "cuda" or "tensorrt" (CUDA
  // and TensorRT need an ONNX Runtime build that has them; the CPU provider stays as the fallback for their
  // unsupported nodes). TensorRT engines run on GPU `device_id` (or the DLA core they were built for) whatever
  // `device` says.
  std::string device = "cpu";
  int device_id = 0;
  int threads = 0;  // ONNX Runtime intra-op threads; 0: ONNX Runtime's default
};

struct Timing {
  double preprocess_ms = 0, infer_ms = 0, postprocess_ms = 0;
  double total_ms() const { return preprocess_ms + infer_ms + postprocess_ms; }
};

struct Result {
  cv::Mat mask;       // (H, W) class indices at the image's size: CV_8U (<= 256 classes) or CV_16U
  Tensor logits;      // the artifact's raw (N, K, h, w) logits; empty for artifacts that output masks
  Size input_size;    // the network input's size
  Timing timing;
};

// An inference backend: one artifact loaded, ready to run (internal interface, public so tests can fake one).
class Backend {
 public:
  virtual ~Backend() = default;
  virtual Tensor run(const Tensor& input) = 0;  // the first output
  virtual std::string describe() const = 0;
};

class Segmenter {
 public:
  explicit Segmenter(const std::string& artifact, const Options& options = {});
  ~Segmenter();
  Segmenter(Segmenter&&) noexcept;
  Segmenter& operator=(Segmenter&&) noexcept;

  const Manifest& manifest() const;
  std::string backend() const;  // e.g. "onnxruntime 1.32.0 (CPUExecutionProvider)"

  // image -> mask at the image's size (and the logits when the artifact outputs them)
  Result segment(const cv::Mat& bgr);

  // The steps of segment(), for callers that feed tensors themselves. infer() checks the tensor against the
  // manifest's input (dtype, rank, sizes within the profile) before the backend sees it.
  Tensor prepare(const cv::Mat& bgr) const;
  Tensor infer(const Tensor& input);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// What this build and this machine offer: ONNX Runtime's version and execution providers (empty without the ONNX
// Runtime backend), and whether the native TensorRT backend was compiled in.
std::string onnxruntime_version();
std::vector<std::string> onnxruntime_providers();
bool has_tensorrt_backend();
const char* library_version() noexcept;

}  // namespace segdeploy
