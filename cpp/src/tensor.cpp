#include "segdeploy/tensor.hpp"

#include "segdeploy/error.hpp"

namespace segdeploy {

DType dtype_from_name(const std::string& name) {
  if (name == "float32") return DType::float32;
  if (name == "float16") return DType::float16;
  if (name == "uint8") return DType::uint8;
  if (name == "int8") return DType::int8;
  if (name == "int32") return DType::int32;
  if (name == "int64") return DType::int64;
  throw Error(ErrorCode::unsupported, "tensors of dtype " + name + " are not supported by libsegdeploy");
}

const char* dtype_name(DType dtype) noexcept {
  switch (dtype) {
    case DType::float32: return "float32";
    case DType::float16: return "float16";
    case DType::uint8: return "uint8";
    case DType::int8: return "int8";
    case DType::int32: return "int32";
    case DType::int64: return "int64";
  }
  return "?";
}

size_t dtype_size(DType dtype) noexcept {
  switch (dtype) {
    case DType::uint8:
    case DType::int8: return 1;
    case DType::float16: return 2;
    case DType::float32:
    case DType::int32: return 4;
    case DType::int64: return 8;
  }
  return 1;
}

Tensor::Tensor(DType dtype, std::vector<int64_t> shape) : dtype_(dtype), shape_(std::move(shape)) {
  for (int64_t d : shape_)
    if (d < 0) throw Error(ErrorCode::invalid_argument, "tensor shape " + segdeploy::shape_string(shape_) + " has a negative size");
  nbytes_ = numel() * dtype_size(dtype_);
  storage_.assign((nbytes_ + 7) / 8, 0);
}

size_t Tensor::numel() const {
  size_t n = 1;
  for (int64_t d : shape_) n *= size_t(d);
  return n;
}

std::string Tensor::shape_string() const { return segdeploy::shape_string(shape_); }

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string out;
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? "x" : "") + std::to_string(shape[i]);
  return out;
}

}  // namespace segdeploy
