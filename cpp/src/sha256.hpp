// SHA-256 (FIPS 180-4), for the hashes segdeploy records: an ONNX artifact's graph, an engine's plan.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace segdeploy {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t size);
  void update(const std::string& bytes) { update(bytes.data(), bytes.size()); }
  std::string hex();  // finishes the digest: lower-case hex, as Python's hexdigest()

 private:
  void block(const uint8_t* p);
  std::array<uint32_t, 8> h_;
  std::array<uint8_t, 64> buffer_{};
  size_t used_ = 0;
  uint64_t bits_ = 0;
};

}  // namespace segdeploy
