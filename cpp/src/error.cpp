#include "segdeploy/error.hpp"

namespace segdeploy {

const char* error_code_name(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::invalid_argument: return "invalid argument";
    case ErrorCode::not_found: return "not found";
    case ErrorCode::artifact: return "bad artifact";
    case ErrorCode::schema_version: return "unsupported manifest schema version";
    case ErrorCode::incompatible: return "incompatible engine";
    case ErrorCode::unsupported: return "unsupported";
    case ErrorCode::input: return "bad input";
    case ErrorCode::backend: return "backend failure";
    case ErrorCode::internal: return "internal error";
  }
  return "unknown error";
}

}  // namespace segdeploy
