// Native TensorRT 10/11 (name-based I/O: setInputShape, setTensorAddress, enqueueV3), compiled only where NvInfer.h
// exists. The segdeploy header is read and checked (TensorRT version, compute capability, Jetson or not) before
// TensorRT sees the plan, so a foreign engine is one clear line instead of a null engine and a log message. A bare
// plan (trtexec, build_engine.sh) loads with the manifest beside it and the Python runner's warning, with host code
// allowed since it may be version-compatible.
#include <NvInfer.h>
#include <cuda_runtime_api.h>
#include <sys/utsname.h>

#include <algorithm>
#include <iostream>
#include <mutex>

#include "backend.hpp"
#include "file_util.hpp"
#include "segdeploy/engine_header.hpp"

namespace segdeploy {
namespace {

void check_cuda(cudaError_t status, const std::string& what) {
  if (status != cudaSuccess)
    throw Error(ErrorCode::backend, what + ": " + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")");
}

// Keeps TensorRT's last error so a failed call can say why.
class Logger : public nvinfer1::ILogger {
 public:
  void log(Severity severity, const char* message) noexcept override {
    if (severity > Severity::kERROR) return;
    std::lock_guard<std::mutex> lock(mutex_);
    last_ = message;
  }
  std::string last() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return last_.empty() ? "no message" : last_;
  }

 private:
  mutable std::mutex mutex_;
  std::string last_;
};

// "10.3.0" from getInferLibVersion(): major * 10000 + minor * 100 + patch since TensorRT 10
std::string library_version() {
  const int32_t v = getInferLibVersion();
  if (v < 100000)
    throw Error(ErrorCode::unsupported, "TensorRT " + std::to_string(v) + " is older than 10: libsegdeploy needs "
                                                                           "TensorRT 10 or 11");
  return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." + std::to_string(v % 100);
}

DType our_type(nvinfer1::DataType type) {
  switch (type) {
    case nvinfer1::DataType::kFLOAT: return DType::float32;
    case nvinfer1::DataType::kHALF: return DType::float16;
    case nvinfer1::DataType::kUINT8: return DType::uint8;
    case nvinfer1::DataType::kINT8: return DType::int8;
    case nvinfer1::DataType::kINT32: return DType::int32;
    case nvinfer1::DataType::kINT64: return DType::int64;
    default: throw Error(ErrorCode::unsupported, "a TensorRT tensor of data type " + std::to_string(int(type)));
  }
}

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept : ptr_(other.ptr_), size_(other.size_) {
    other.ptr_ = nullptr, other.size_ = 0;
  }
  ~DeviceBuffer() { cudaFree(ptr_); }
  void* reserve(size_t bytes) {
    if (bytes > size_) {
      cudaFree(ptr_);
      ptr_ = nullptr, size_ = 0;
      check_cuda(cudaMalloc(&ptr_, bytes), "cudaMalloc of " + std::to_string(bytes) + " bytes");
      size_ = bytes;
    }
    return ptr_;
  }

 private:
  void* ptr_ = nullptr;
  size_t size_ = 0;
};

// "jetson" for an integrated Tegra GPU, else the CPU architecture, as the engine header records it
std::string platform_name(const cudaDeviceProp& prop) {
  if (prop.integrated) return "jetson";
  utsname name{};
  if (uname(&name) != 0) return "";
  const std::string machine = name.machine;
  return machine == "x86_64" || machine == "aarch64" ? machine : "";
}

class TensorRtBackend : public Backend {
 public:
  TensorRtBackend(const std::string& path, const Manifest& manifest, const Options& options) {
    const EngineFile file = read_engine_header(path);
    check_cuda(cudaSetDevice(options.device_id), "cudaSetDevice(" + std::to_string(options.device_id) + ")");
    cudaDeviceProp prop{};
    check_cuda(cudaGetDeviceProperties(&prop, options.device_id), "cudaGetDeviceProperties");
    const std::string cc = std::to_string(prop.major) + "." + std::to_string(prop.minor);
    version_ = library_version();
    std::optional<EngineInfo> engine;
    if (file.manifest) {
      engine = *file.manifest->engine;
      const std::string problem = compatibility_problem(*engine, version_, cc, platform_name(prop));
      if (!problem.empty()) throw Error(ErrorCode::incompatible, path + ": " + problem);
    } else {
      std::cerr << "segdeploy: warning: " << bare_plan_warning(path) << std::endl;
    }

    runtime_.reset(nvinfer1::createInferRuntime(logger_));
    if (!runtime_) throw Error(ErrorCode::backend, "TensorRT could not create a runtime: " + logger_.last());
    if (engine && engine->dla_core) {
      if (*engine->dla_core >= runtime_->getNbDLACores())
        throw Error(ErrorCode::incompatible, path + " was built for DLA core " + std::to_string(*engine->dla_core) +
                                                 "; this device has " + std::to_string(runtime_->getNbDLACores()));
      runtime_->setDLACore(*engine->dla_core);
    }
    // version-compatible plans carry their own runtime code, which TensorRT runs only when allowed to; a bare plan
    // cannot say whether it is one
    if (!engine || engine->version_compatible) runtime_->setEngineHostCodeAllowed(true);
    const std::string plan = read_bytes(path, file.plan_offset, file.plan_size);
    engine_.reset(runtime_->deserializeCudaEngine(plan.data(), plan.size()));
    if (!engine_) throw Error(ErrorCode::artifact, "TensorRT " + version_ + " could not deserialize " + path + ": " +
                                                       logger_.last());
    context_.reset(engine_->createExecutionContext());
    if (!context_) throw Error(ErrorCode::backend, "TensorRT could not create an execution context: " + logger_.last());
    for (int32_t i = 0; i < engine_->getNbIOTensors(); ++i) {
      const char* name = engine_->getIOTensorName(i);
      (engine_->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT ? inputs_ : outputs_).push_back(name);
    }
    if (inputs_.size() != 1 || outputs_.empty() || inputs_[0] != manifest.input().name ||
        std::find(outputs_.begin(), outputs_.end(), manifest.output().name) == outputs_.end())
      throw Error(ErrorCode::artifact, path + ": the engine's I/O tensors do not match its manifest's ('" +
                                           manifest.input().name + "' -> '" + manifest.output().name + "')");
    output_ = manifest.output().name;
    buffers_.resize(1 + outputs_.size());
    check_cuda(cudaStreamCreate(&stream_), "cudaStreamCreate");
    describe_ = "tensorrt " + version_ + " (" + prop.name + ", SM " + cc +
                (engine && engine->dla_core ? ", DLA core " + std::to_string(*engine->dla_core) : "") +
                (engine ? "" : ", bare plan") + ")";
  }

  ~TensorRtBackend() override {
    if (stream_) cudaStreamDestroy(stream_);
  }

  Tensor run(const Tensor& input) override {
    nvinfer1::Dims dims{};
    dims.nbDims = int32_t(input.shape().size());
    for (int32_t i = 0; i < dims.nbDims; ++i) dims.d[i] = input.shape()[size_t(i)];
    if (!context_->setInputShape(inputs_[0].c_str(), dims))
      throw Error(ErrorCode::input, "TensorRT refused input shape " + input.shape_string() + ": " + logger_.last());
    void* device_input = buffers_[0].reserve(input.nbytes());
    check_cuda(cudaMemcpyAsync(device_input, input.data(), input.nbytes(), cudaMemcpyHostToDevice, stream_),
               "copy to the GPU");
    context_->setTensorAddress(inputs_[0].c_str(), device_input);
    Tensor result;
    void* device_result = nullptr;
    for (size_t i = 0; i < outputs_.size(); ++i) {
      const nvinfer1::Dims shape = context_->getTensorShape(outputs_[i].c_str());
      std::vector<int64_t> dims_out(shape.d, shape.d + shape.nbDims);
      Tensor out(our_type(engine_->getTensorDataType(outputs_[i].c_str())), dims_out);
      void* device = buffers_[1 + i].reserve(std::max<size_t>(out.nbytes(), 1));
      context_->setTensorAddress(outputs_[i].c_str(), device);
      if (outputs_[i] == output_) result = std::move(out), device_result = device;
    }
    if (!context_->enqueueV3(stream_)) throw Error(ErrorCode::backend, "TensorRT enqueueV3 failed: " + logger_.last());
    check_cuda(cudaMemcpyAsync(result.data(), device_result, result.nbytes(), cudaMemcpyDeviceToHost, stream_),
               "copy from the GPU");
    check_cuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    return result;
  }

  std::string describe() const override { return describe_; }

 private:
  Logger logger_;
  std::unique_ptr<nvinfer1::IRuntime> runtime_;
  std::unique_ptr<nvinfer1::ICudaEngine> engine_;
  std::unique_ptr<nvinfer1::IExecutionContext> context_;
  std::vector<std::string> inputs_, outputs_;
  std::string output_, version_, describe_;
  std::vector<DeviceBuffer> buffers_;
  cudaStream_t stream_ = nullptr;
};

}  // namespace

std::unique_ptr<Backend> open_tensorrt(const std::string& artifact, const Manifest& manifest, const Options& options) {
  return std::make_unique<TensorRtBackend>(artifact, manifest, options);
}

}  // namespace segdeploy
