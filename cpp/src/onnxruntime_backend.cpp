// ONNX Runtime through its C++ API. The API table is fetched by hand (ORT_API_MANUAL_INIT) so that a library older
// than the headers is one clear error instead of a null table: headers of API N need a library of version >= N.
#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT

#include <algorithm>
#include <mutex>

#include "backend.hpp"
#include "segdeploy/error.hpp"

namespace segdeploy {
namespace {

const char* library_version_string() { return OrtGetApiBase()->GetVersionString(); }

void init_api() {
  static std::once_flag once;
  static const OrtApi* api = nullptr;
  std::call_once(once, [] {
    api = OrtGetApiBase()->GetApi(ORT_API_VERSION);
    if (api) Ort::InitApi(api);
  });
  if (!api)
    throw Error(ErrorCode::unsupported, std::string("the ONNX Runtime library (") + library_version_string() +
                                            ") is older than the headers libsegdeploy was built with (API " +
                                            std::to_string(ORT_API_VERSION) + "); build against its own headers");
}

Ort::Env& environment() {
  init_api();
  static Ort::Env env(ORT_LOGGING_LEVEL_ERROR, "segdeploy");
  return env;
}

ONNXTensorElementDataType onnx_type(DType dtype) {
  switch (dtype) {
    case DType::float32: return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    case DType::float16: return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
    case DType::uint8: return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
    case DType::int8: return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8;
    case DType::int32: return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32;
    case DType::int64: return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;
  }
  return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
}

DType our_type(ONNXTensorElementDataType type) {
  switch (type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return DType::float32;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return DType::float16;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return DType::uint8;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8: return DType::int8;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return DType::int32;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return DType::int64;
    default: throw Error(ErrorCode::unsupported, "an output of ONNX element type " + std::to_string(int(type)));
  }
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}

// The execution provider `device` names, appended to `options`; a clear error when this build lacks it.
std::string add_provider(Ort::SessionOptions& options, const Options& wanted) {
  static const std::pair<const char*, const char*> aliases[] = {
      {"cpu", "CPUExecutionProvider"}, {"cuda", "CUDAExecutionProvider"}, {"tensorrt", "TensorrtExecutionProvider"}};
  std::string provider;
  for (const auto& [alias, name] : aliases)
    if (wanted.device == alias) provider = name;
  if (provider.empty())
    throw Error(ErrorCode::invalid_argument, "device must be cpu, cuda or tensorrt, not '" + wanted.device + "'");
  if (provider == "CPUExecutionProvider") return provider;
  const auto available = Ort::GetAvailableProviders();
  if (std::find(available.begin(), available.end(), provider) == available.end())
    throw Error(ErrorCode::unsupported, "this ONNX Runtime build (" + std::string(library_version_string()) + ") has no " +
                                            provider + " (it has " + join(available) +
                                            "): link a GPU build of ONNX Runtime (the onnxruntime-gpu wheel)");
  const std::string device_id = std::to_string(wanted.device_id);
  const char* keys[] = {"device_id"};
  const char* values[] = {device_id.c_str()};
  const OrtApi& api = Ort::GetApi();
  if (provider == "TensorrtExecutionProvider") {
    OrtTensorRTProviderOptionsV2* trt = nullptr;
    Ort::ThrowOnError(api.CreateTensorRTProviderOptions(&trt));
    std::unique_ptr<OrtTensorRTProviderOptionsV2, void (*)(OrtTensorRTProviderOptionsV2*)> owned(
        trt, api.ReleaseTensorRTProviderOptions);
    Ort::ThrowOnError(api.UpdateTensorRTProviderOptions(trt, keys, values, 1));
    options.AppendExecutionProvider_TensorRT_V2(*trt);
  }
  // CUDA after TensorRT: the nodes TensorRT does not take run on the GPU, not the CPU
  OrtCUDAProviderOptionsV2* cuda = nullptr;
  Ort::ThrowOnError(api.CreateCUDAProviderOptions(&cuda));
  std::unique_ptr<OrtCUDAProviderOptionsV2, void (*)(OrtCUDAProviderOptionsV2*)> owned(cuda,
                                                                                       api.ReleaseCUDAProviderOptions);
  Ort::ThrowOnError(api.UpdateCUDAProviderOptions(cuda, keys, values, 1));
  options.AppendExecutionProvider_CUDA_V2(*cuda);
  return provider;
}

class OnnxRuntimeBackend : public Backend {
 public:
  OnnxRuntimeBackend(const std::string& path, const Manifest& manifest, const Options& options) {
    Ort::Env& env = environment();
    Ort::SessionOptions so;
    so.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
    so.SetExecutionMode(ExecutionMode::ORT_SEQUENTIAL);
    if (options.threads > 0) {
      so.SetIntraOpNumThreads(options.threads);
      so.SetInterOpNumThreads(1);
    }
    provider_ = add_provider(so, options);
    try {
      session_ = Ort::Session(env, path.c_str(), so);
    } catch (const Ort::Exception& e) {
      throw Error(ErrorCode::artifact, path + " cannot be loaded by ONNX Runtime " + library_version_string() + ": " +
                                           first_line(e.what()));
    }
    Ort::AllocatorWithDefaultOptions allocator;
    if (session_.GetInputCount() != 1 || session_.GetOutputCount() < 1)
      throw Error(ErrorCode::artifact, path + ": a segmentation graph has one input and at least one output, this "
                                              "one has " + std::to_string(session_.GetInputCount()) + " inputs");
    input_name_ = session_.GetInputNameAllocated(0, allocator).get();
    output_name_ = session_.GetOutputNameAllocated(0, allocator).get();
    if (input_name_ != manifest.input().name || output_name_ != manifest.output().name)
      throw Error(ErrorCode::artifact, path + ": the manifest describes input '" + manifest.input().name +
                                           "' and output '" + manifest.output().name + "', the graph has '" +
                                           input_name_ + "' and '" + output_name_ + "'");
  }

  Tensor run(const Tensor& input) override {
    Ort::MemoryInfo memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    // ORT reads the input buffer and never writes it
    Ort::Value value = Ort::Value::CreateTensor(memory, const_cast<void*>(input.data()), input.nbytes(),
                                                input.shape().data(), input.shape().size(), onnx_type(input.dtype()));
    const char* in_names[] = {input_name_.c_str()};
    const char* out_names[] = {output_name_.c_str()};
    std::vector<Ort::Value> outputs;
    try {
      outputs = session_.Run(Ort::RunOptions{nullptr}, in_names, &value, 1, out_names, 1);
    } catch (const Ort::Exception& e) {
      throw Error(ErrorCode::backend, "ONNX Runtime failed on a " + input.shape_string() + " input: " +
                                          first_line(e.what()));
    }
    auto info = outputs[0].GetTensorTypeAndShapeInfo();
    Tensor out(our_type(info.GetElementType()), info.GetShape());
    std::copy_n(static_cast<const unsigned char*>(outputs[0].GetTensorRawData()), out.nbytes(),
                static_cast<unsigned char*>(out.data()));
    return out;
  }

  std::string describe() const override {
    return std::string("onnxruntime ") + library_version_string() + " (" + provider_ + ")";
  }

 private:
  static std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

  Ort::Session session_{nullptr};
  std::string input_name_, output_name_, provider_;
};

}  // namespace

std::unique_ptr<Backend> open_onnxruntime(const std::string& artifact, const Manifest& manifest,
                                          const Options& options) {
  try {
    return std::make_unique<OnnxRuntimeBackend>(artifact, manifest, options);
  } catch (const Ort::Exception& e) {
    throw Error(ErrorCode::backend, std::string("ONNX Runtime: ") + e.what());
  }
}

std::string onnxruntime_version_string() { return library_version_string(); }

std::vector<std::string> onnxruntime_provider_names() {
  init_api();
  return Ort::GetAvailableProviders();
}

}  // namespace segdeploy
