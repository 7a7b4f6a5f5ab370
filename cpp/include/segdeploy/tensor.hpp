// A dense host tensor: dtype, shape and owned bytes. The unit that crosses the backend boundary.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace segdeploy {

enum class DType { float32, float16, uint8, int8, int32, int64 };

// numpy's names, as the manifest spells them; throws unsupported for a dtype the library cannot feed or read
DType dtype_from_name(const std::string& name);
const char* dtype_name(DType dtype) noexcept;
size_t dtype_size(DType dtype) noexcept;

class Tensor {
 public:
  Tensor() = default;
  Tensor(DType dtype, std::vector<int64_t> shape);

  DType dtype() const { return dtype_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  size_t numel() const;
  size_t nbytes() const { return nbytes_; }
  bool empty() const { return nbytes_ == 0; }

  void* data() { return storage_.data(); }
  const void* data() const { return storage_.data(); }
  template <typename T>
  T* data_as() { return reinterpret_cast<T*>(storage_.data()); }
  template <typename T>
  const T* data_as() const { return reinterpret_cast<const T*>(storage_.data()); }

  // "1x3x512x512"
  std::string shape_string() const;

 private:
  DType dtype_ = DType::float32;
  std::vector<int64_t> shape_;
  size_t nbytes_ = 0;
  std::vector<uint64_t> storage_;  // 8-byte elements keep every dtype aligned
};

std::string shape_string(const std::vector<int64_t>& shape);

}  // namespace segdeploy
