#include "backend.hpp"

#include "file_util.hpp"

namespace segdeploy {

std::unique_ptr<Backend> open_backend(const std::string& artifact, const Manifest& manifest, const Options& options) {
  const std::string suffix = lower_extension(artifact);
  // an engine's header, or a bare plan described by the ONNX manifest beside it
  if (manifest.format == "engine" || suffix == ".engine" || suffix == ".plan") {
#ifdef SEGDEPLOY_HAVE_TENSORRT
    return open_tensorrt(artifact, manifest, options);
#else
    (void)options;
    throw Error(ErrorCode::unsupported, artifact + " is a TensorRT engine, and this libsegdeploy was built without "
                                                   "TensorRT (configure with -DSEGDEPLOY_WITH_TENSORRT=ON where "
                                                   "NvInfer.h and the CUDA toolkit exist)");
#endif
  }
#ifdef SEGDEPLOY_HAVE_ONNXRUNTIME
  return open_onnxruntime(artifact, manifest, options);
#else
  throw Error(ErrorCode::unsupported, artifact + " is an ONNX model, and this libsegdeploy was built without ONNX "
                                                 "Runtime (configure with -DSEGDEPLOY_WITH_ONNXRUNTIME=ON)");
#endif
}

std::string onnxruntime_version() {
#ifdef SEGDEPLOY_HAVE_ONNXRUNTIME
  return onnxruntime_version_string();
#else
  return "";
#endif
}

std::vector<std::string> onnxruntime_providers() {
#ifdef SEGDEPLOY_HAVE_ONNXRUNTIME
  return onnxruntime_provider_names();
#else
  return {};
#endif
}

bool has_tensorrt_backend() {
#ifdef SEGDEPLOY_HAVE_TENSORRT
  return true;
#else
  return false;
#endif
}

const char* library_version() noexcept { return SEGDEPLOY_VERSION; }

}  // namespace segdeploy
