// Errors: every failure the library reports is a segdeploy::Error with a code (the C API's status) and one line
// that says what went wrong and, where there is one, what to do about it.
#pragma once

#include <stdexcept>
#include <string>

namespace segdeploy {

enum class ErrorCode {
  invalid_argument = 1,  // a null pointer, a negative size, an unknown option value
  not_found = 2,         // a file that does not exist
  artifact = 3,          // an artifact or manifest that cannot be read or is inconsistent
  schema_version = 4,    // a manifest of another schema version (or segdeploy 0.1's untyped metadata)
  incompatible = 5,      // a TensorRT engine built for another TensorRT version or GPU
  unsupported = 6,       // a backend or execution provider that this build or this machine does not have
  input = 7,             // an image or tensor that cannot be used (unreadable, empty, wrong shape or type)
  backend = 8,           // the inference runtime failed
  internal = 9,          // out of memory, or a bug
};

const char* error_code_name(ErrorCode code) noexcept;

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

}  // namespace segdeploy
