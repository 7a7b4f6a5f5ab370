// Opening a backend for an artifact; each backend lives in its own file, compiled only where its runtime exists.
#pragma once

#include <memory>
#include <string>

#include "segdeploy/segmenter.hpp"

namespace segdeploy {

std::unique_ptr<Backend> open_backend(const std::string& artifact, const Manifest& manifest, const Options& options);

#ifdef SEGDEPLOY_HAVE_ONNXRUNTIME
std::unique_ptr<Backend> open_onnxruntime(const std::string& artifact, const Manifest& manifest,
                                          const Options& options);
std::string onnxruntime_version_string();
std::vector<std::string> onnxruntime_provider_names();
#endif
#ifdef SEGDEPLOY_HAVE_TENSORRT
std::unique_ptr<Backend> open_tensorrt(const std::string& artifact, const Manifest& manifest, const Options& options);
#endif

}  // namespace segdeploy
