// Small file helpers shared by the readers: each failure is one segdeploy::Error line naming the file.
#pragma once

#include <cstdint>
#include <string>

namespace segdeploy {

bool is_regular_file(const std::string& path);

// Throws not_found for a missing file or a folder; `what` names the kind of file in the message.
void require_file(const std::string& path, const std::string& what);

uint64_t file_size(const std::string& path);

std::string read_text_file(const std::string& path, const std::string& what);

// Reads `size` bytes at `offset`; throws when the file is shorter.
std::string read_bytes(const std::string& path, uint64_t offset, uint64_t size);

// ".onnx" for "a/b.ONNX"; "" when there is no extension.
std::string lower_extension(const std::string& path);

}  // namespace segdeploy
