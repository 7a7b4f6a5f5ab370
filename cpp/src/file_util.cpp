#include "file_util.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "segdeploy/error.hpp"

namespace fs = std::filesystem;

namespace segdeploy {

bool is_regular_file(const std::string& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec);
}

void require_file(const std::string& path, const std::string& what) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) throw Error(ErrorCode::not_found, path + " is a folder, not " + what);
  if (!fs::exists(path, ec)) throw Error(ErrorCode::not_found, what + " not found: " + path);
}

uint64_t file_size(const std::string& path) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec) throw Error(ErrorCode::not_found, "cannot read " + path + ": " + ec.message());
  return size;
}

std::string read_bytes(const std::string& path, uint64_t offset, uint64_t size) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorCode::not_found, "cannot read " + path + ": " + std::strerror(errno));
  std::string data(size, '\0');
  in.seekg(std::streamoff(offset));
  in.read(data.data(), std::streamsize(size));
  if (uint64_t(in.gcount()) != size)
    throw Error(ErrorCode::artifact, path + " ends early (wanted " + std::to_string(size) + " bytes at offset " +
                                         std::to_string(offset) + ")");
  return data;
}

std::string read_text_file(const std::string& path, const std::string& what) {
  require_file(path, what);
  return read_bytes(path, 0, file_size(path));
}

std::string lower_extension(const std::string& path) {
  std::string ext = fs::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return ext;
}

}  // namespace segdeploy
