#include "segdeploy/segmenter.hpp"

#include <chrono>

#include "backend.hpp"
#include "file_util.hpp"

namespace segdeploy {
namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

std::string expected_shape(const TensorSpec& spec) {
  std::string out;
  for (size_t i = 0; i < spec.shape.size(); ++i)
    out += (i ? "x" : "") + (spec.shape[i].is_static() ? std::to_string(spec.shape[i].size) : spec.shape[i].name);
  return out;
}

// Why `input` does not fit the manifest's input tensor and profile, or "".
std::string input_problem(const Tensor& input, const Manifest& manifest) {
  const TensorSpec& spec = manifest.input();
  const auto& shape = input.shape();
  if (dtype_name(input.dtype()) != spec.dtype) return std::string("dtype ") + dtype_name(input.dtype()) + " is not " + spec.dtype;
  if (shape.size() != spec.shape.size())
    return "rank " + std::to_string(shape.size()) + " is not " + std::to_string(spec.shape.size());
  for (size_t i = 0; i < shape.size(); ++i) {
    const Dim& dim = spec.shape[i];
    const Axis* axis = spec.axis(int(i));
    if (dim.is_static() && shape[i] != dim.size)
      return "dimension " + std::to_string(i) + " is " + std::to_string(shape[i]) + ", not " + std::to_string(dim.size);
    if (axis && (shape[i] < axis->min || shape[i] > axis->max))
      return axis->name + " " + std::to_string(shape[i]) + " outside " + std::to_string(axis->min) + "-" +
             std::to_string(axis->max);
    if (!dim.is_static() && shape[i] < 1) return "dimension " + std::to_string(i) + " is empty";
  }
  if (shape.size() == 4 && (spec.layout == "NCHW" || spec.layout == "NHWC")) {
    const bool nchw = spec.layout == "NCHW";
    const int64_t channels = nchw ? shape[1] : shape[3];
    if (channels != 3) return "it has " + std::to_string(channels) + " channels, not 3";
    return manifest.profile.check(int(shape[0]), int(nchw ? shape[2] : shape[1]), int(nchw ? shape[3] : shape[2]));
  }
  return "";
}

bool outputs_mask(const Manifest& manifest) {
  const TensorSpec& out = manifest.output();
  return out.kind == "mask" || (out.kind.empty() && out.layout == "NHW");
}

}  // namespace

struct Segmenter::Impl {
  Manifest manifest;
  std::unique_ptr<Backend> backend;
};

Segmenter::Segmenter(const std::string& artifact, const Options& options) : impl_(std::make_unique<Impl>()) {
  if (sniff(artifact) == "json" || (lower_extension(artifact) == ".json" && sniff(artifact) == "unknown"))
    throw Error(ErrorCode::invalid_argument, artifact + " is a manifest: pass the artifact (.onnx or .engine) it "
                                                        "describes");
  impl_->manifest = read_manifest(artifact);
  const TensorSpec& input = impl_->manifest.input();
  if (!(input.layout == "NCHW" || input.layout == "NHWC") || input.shape.size() != 4)
    throw Error(ErrorCode::unsupported, artifact + ": its input '" + input.name + "' is not an image tensor (" +
                                            input.layout + ", rank " + std::to_string(input.shape.size()) + ")");
  dtype_from_name(input.dtype);
  dtype_from_name(impl_->manifest.output().dtype);
  impl_->backend = open_backend(artifact, impl_->manifest, options);
}

Segmenter::~Segmenter() = default;
Segmenter::Segmenter(Segmenter&&) noexcept = default;
Segmenter& Segmenter::operator=(Segmenter&&) noexcept = default;

const Manifest& Segmenter::manifest() const { return impl_->manifest; }

std::string Segmenter::backend() const { return impl_->backend->describe(); }

Tensor Segmenter::prepare(const cv::Mat& bgr) const { return preprocess(bgr, impl_->manifest); }

Tensor Segmenter::infer(const Tensor& input) {
  const std::string problem = input_problem(input, impl_->manifest);
  if (!problem.empty())
    throw Error(ErrorCode::input, "input " + input.shape_string() + " " + dtype_name(input.dtype()) +
                                      " does not fit '" + impl_->manifest.input().name + "' (" +
                                      expected_shape(impl_->manifest.input()) + " " + impl_->manifest.input().dtype +
                                      "): " + problem);
  return impl_->backend->run(input);
}

Result Segmenter::segment(const cv::Mat& bgr) {
  const Manifest& m = impl_->manifest;
  Result result;
  auto start = Clock::now();
  if (bgr.empty()) throw Error(ErrorCode::input, "empty image");
  const InputPlan plan = plan_input(m, bgr.rows, bgr.cols);
  const Tensor input = preprocess(bgr, m, plan);
  result.input_size = plan.size;
  result.timing.preprocess_ms = ms_since(start);

  start = Clock::now();
  Tensor output = infer(input);
  result.timing.infer_ms = ms_since(start);

  start = Clock::now();
  const Size image_size{bgr.rows, bgr.cols};
  if (outputs_mask(m)) {
    result.mask = mask_from_output(output, m.model.num_classes, image_size);
  } else {
    result.mask = logits_to_mask(output, image_size, m.preprocessing.align_corners);
    result.logits = std::move(output);
  }
  result.timing.postprocess_ms = ms_since(start);
  return result;
}

}  // namespace segdeploy
