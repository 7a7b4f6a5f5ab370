// The C API: exceptions stop here and become a status plus a per-thread message.
#include "segdeploy/segdeploy.h"

#include <new>
#include <opencv2/core.hpp>
#include <string>

#include "segdeploy/segmenter.hpp"

struct segdeploy_segmenter {
  segdeploy::Segmenter segmenter;
};

struct segdeploy_result {
  segdeploy::Result result;
  segdeploy::Tensor logits_f32;  // logits as float32 (float16 artifacts are converted once)
};

namespace {

thread_local std::string last_error;

segdeploy_status fail(segdeploy_status status, const std::string& message) {
  last_error = message;
  return status;
}

// Runs `body`, turning every exception into a status and a message.
template <typename Body>
segdeploy_status guarded(Body&& body) noexcept {
  try {
    body();
    return SEGDEPLOY_OK;
  } catch (const segdeploy::Error& e) {
    return fail(static_cast<segdeploy_status>(e.code()), e.what());
  } catch (const std::bad_alloc&) {
    return fail(SEGDEPLOY_ERR_INTERNAL, "out of memory");
  } catch (const cv::Exception& e) {
    return fail(SEGDEPLOY_ERR_INTERNAL, std::string("OpenCV: ") + e.what());
  } catch (const std::exception& e) {
    return fail(SEGDEPLOY_ERR_INTERNAL, e.what());
  } catch (...) {
    return fail(SEGDEPLOY_ERR_INTERNAL, "unknown exception");
  }
}

void require(bool condition, const char* what) {
  if (!condition) throw segdeploy::Error(segdeploy::ErrorCode::invalid_argument, what);
}

segdeploy_result* make_result(segdeploy::Result&& r) {
  auto* out = new segdeploy_result{std::move(r), {}};
  const segdeploy::Tensor& logits = out->result.logits;
  if (!logits.empty() && logits.dtype() == segdeploy::DType::float16) {
    out->logits_f32 = segdeploy::Tensor(segdeploy::DType::float32, logits.shape());
    cv::Mat half(1, int(logits.numel()), CV_16F, const_cast<void*>(logits.data()));
    cv::Mat single(1, int(logits.numel()), CV_32F, out->logits_f32.data());
    half.convertTo(single, CV_32F);
  }
  return out;
}

}  // namespace

extern "C" {

const char* segdeploy_version(void) { return segdeploy::library_version(); }

const char* segdeploy_last_error(void) { return last_error.c_str(); }

const char* segdeploy_status_name(segdeploy_status status) {
  if (status == SEGDEPLOY_OK) return "ok";
  if (status < SEGDEPLOY_ERR_INVALID_ARGUMENT || status > SEGDEPLOY_ERR_INTERNAL) return "unknown status";
  return segdeploy::error_code_name(static_cast<segdeploy::ErrorCode>(status));
}

segdeploy_status segdeploy_create(const char* artifact, const segdeploy_options* options, segdeploy_segmenter** out) {
  return guarded([&] {
    require(out != nullptr, "segdeploy_create: out is NULL");
    *out = nullptr;
    require(artifact != nullptr, "segdeploy_create: artifact is NULL");
    segdeploy::Options opts;
    if (options) {
      if (options->device) opts.device = options->device;
      opts.device_id = options->device_id;
      opts.threads = options->threads;
      require(opts.threads >= 0 && opts.device_id >= 0, "segdeploy_create: threads and device_id must be >= 0");
    }
    *out = new segdeploy_segmenter{segdeploy::Segmenter(artifact, opts)};
  });
}

void segdeploy_destroy(segdeploy_segmenter* segmenter) { delete segmenter; }

const char* segdeploy_manifest_json(const segdeploy_segmenter* segmenter) {
  return segmenter ? segmenter->segmenter.manifest().document.c_str() : nullptr;
}

int32_t segdeploy_num_classes(const segdeploy_segmenter* segmenter) {
  return segmenter ? segmenter->segmenter.manifest().model.num_classes : 0;
}

segdeploy_status segdeploy_class_info(const segdeploy_segmenter* segmenter, int32_t index, const char** name,
                                      uint8_t rgb[3]) {
  return guarded([&] {
    require(segmenter != nullptr, "segdeploy_class_info: segmenter is NULL");
    const auto& model = segmenter->segmenter.manifest().model;
    require(index >= 0 && index < model.num_classes, "segdeploy_class_info: class index out of range");
    if (name) *name = model.class_names[size_t(index)].c_str();
    if (rgb)
      for (int c = 0; c < 3; ++c) rgb[c] = model.palette[size_t(index)][size_t(c)];
  });
}

segdeploy_status segdeploy_run(segdeploy_segmenter* segmenter, const uint8_t* bgr, int32_t height, int32_t width,
                               size_t stride, segdeploy_result** out) {
  return guarded([&] {
    require(out != nullptr, "segdeploy_run: out is NULL");
    *out = nullptr;
    require(segmenter != nullptr, "segdeploy_run: segmenter is NULL");
    require(bgr != nullptr, "segdeploy_run: image data is NULL");
    if (height <= 0 || width <= 0)
      throw segdeploy::Error(segdeploy::ErrorCode::input, "segdeploy_run: image size " + std::to_string(height) + "x" +
                                                              std::to_string(width) + " is empty");
    const size_t row = size_t(width) * 3;
    if (stride == 0) stride = row;
    if (stride < row)
      throw segdeploy::Error(segdeploy::ErrorCode::input, "segdeploy_run: stride " + std::to_string(stride) +
                                                              " is shorter than a row of " + std::to_string(row) +
                                                              " bytes");
    const cv::Mat image(height, width, CV_8UC3, const_cast<uint8_t*>(bgr), stride);
    *out = make_result(segmenter->segmenter.segment(image));
  });
}

segdeploy_status segdeploy_run_file(segdeploy_segmenter* segmenter, const char* path, segdeploy_result** out) {
  return guarded([&] {
    require(out != nullptr, "segdeploy_run_file: out is NULL");
    *out = nullptr;
    require(segmenter != nullptr, "segdeploy_run_file: segmenter is NULL");
    require(path != nullptr, "segdeploy_run_file: path is NULL");
    *out = make_result(segmenter->segmenter.segment(segdeploy::read_image(path)));
  });
}

void segdeploy_release(segdeploy_result* result) { delete result; }

segdeploy_status segdeploy_result_mask(const segdeploy_result* result, segdeploy_mask* mask) {
  return guarded([&] {
    require(result != nullptr && mask != nullptr, "segdeploy_result_mask: NULL argument");
    const cv::Mat& m = result->result.mask;
    *mask = {m.rows, m.cols, int32_t(m.elemSize()), m.data};
  });
}

segdeploy_status segdeploy_result_logits(const segdeploy_result* result, segdeploy_logits* logits) {
  return guarded([&] {
    require(result != nullptr && logits != nullptr, "segdeploy_result_logits: NULL argument");
    const segdeploy::Tensor& t = result->logits_f32.empty() ? result->result.logits : result->logits_f32;
    if (t.empty())
      throw segdeploy::Error(segdeploy::ErrorCode::unsupported,
                             "this artifact outputs masks (the resize and argmax are in the graph), not logits");
    for (int i = 0; i < 4; ++i) logits->shape[i] = t.shape()[size_t(i)];
    logits->data = t.data_as<float>();
  });
}

segdeploy_status segdeploy_result_timing(const segdeploy_result* result, segdeploy_timing* timing) {
  return guarded([&] {
    require(result != nullptr && timing != nullptr, "segdeploy_result_timing: NULL argument");
    const auto& t = result->result.timing;
    *timing = {t.preprocess_ms, t.infer_ms, t.postprocess_ms};
  });
}

}  // extern "C"
