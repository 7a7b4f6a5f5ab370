#include "onnx_metadata.hpp"

#include <algorithm>
#include <fstream>
#include <istream>
#include <sstream>

#include "file_util.hpp"
#include "sha256.hpp"
#include "segdeploy/error.hpp"

namespace segdeploy {
namespace {

// ModelProto field numbers (onnx.proto)
constexpr uint64_t kGraphField = 7;
constexpr uint64_t kMetadataPropsField = 14;
constexpr uint64_t kMaxEntryBytes = 64u << 20;

enum WireType { kVarint = 0, kFixed64 = 1, kBytes = 2, kFixed32 = 5 };

class Scanner {
 public:
  Scanner(std::istream& in, uint64_t size, std::string source) : in_(in), size_(size), source_(std::move(source)) {}

  bool at_end() { return pos_ >= size_; }
  uint64_t pos() const { return pos_; }

  uint64_t varint() {
    uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      const int c = in_.get();
      if (c == EOF) corrupt("truncated varint");
      ++pos_;
      value |= uint64_t(c & 0x7f) << shift;
      if (!(c & 0x80)) return value;
    }
    corrupt("varint longer than 10 bytes");
  }

  void skip(uint64_t n) {
    if (n > size_ - pos_) corrupt("a field runs past the end of the file");
    in_.seekg(std::streamoff(n), std::ios::cur);
    pos_ += n;
  }

  std::string bytes(uint64_t n) {
    if (n > size_ - pos_) corrupt("a field runs past the end of the file");
    std::string out(n, '\0');
    in_.read(out.data(), std::streamsize(n));
    if (uint64_t(in_.gcount()) != n) corrupt("read failed");
    pos_ += n;
    return out;
  }

  [[noreturn]] void corrupt(const std::string& why) const {
    throw Error(ErrorCode::artifact, source_ + " is not a readable ONNX model (" + why + " at byte " +
                                         std::to_string(pos_) + ")");
  }

 private:
  std::istream& in_;
  uint64_t size_;
  uint64_t pos_ = 0;
  std::string source_;
};

std::pair<std::string, std::string> parse_entry(const std::string& entry, const std::string& source) {
  std::istringstream in(entry);
  Scanner s(in, entry.size(), source + " (a metadata_props entry)");
  std::pair<std::string, std::string> kv;
  while (!s.at_end()) {
    const uint64_t tag = s.varint();
    const uint64_t field = tag >> 3, wire = tag & 7;
    if (wire != kBytes) {
      if (wire == kVarint) s.varint();
      else if (wire == kFixed64) s.skip(8);
      else if (wire == kFixed32) s.skip(4);
      else s.corrupt("unknown wire type " + std::to_string(wire));
      continue;
    }
    const uint64_t n = s.varint();
    if (field == 1) kv.first = s.bytes(n);
    else if (field == 2) kv.second = s.bytes(n);
    else s.skip(n);
  }
  return kv;
}

// `metadata`: where the metadata_props records lie ([begin, end) byte ranges), for the graph hash.
std::vector<std::pair<std::string, std::string>> scan(std::istream& in, uint64_t size, const std::string& source,
                                                      std::vector<std::pair<uint64_t, uint64_t>>* metadata = nullptr) {
  Scanner s(in, size, source);
  std::vector<std::pair<std::string, std::string>> props;
  bool has_graph = false;
  while (!s.at_end()) {
    const uint64_t begin = s.pos();
    const uint64_t tag = s.varint();
    const uint64_t field = tag >> 3, wire = tag & 7;
    if (field == 0) s.corrupt("field number 0");
    switch (wire) {
      case kVarint: s.varint(); break;
      case kFixed64: s.skip(8); break;
      case kFixed32: s.skip(4); break;
      case kBytes: {
        const uint64_t n = s.varint();
        if (field == kMetadataPropsField) {
          if (n > kMaxEntryBytes) s.corrupt("a metadata entry of " + std::to_string(n) + " bytes");
          props.push_back(parse_entry(s.bytes(n), source));
          if (metadata) metadata->emplace_back(begin, s.pos());
        } else {
          has_graph = has_graph || field == kGraphField;
          s.skip(n);
        }
        break;
      }
      default: s.corrupt("unknown wire type " + std::to_string(wire));
    }
  }
  if (!has_graph) throw Error(ErrorCode::artifact, source + " is not an ONNX model (it has no graph)");
  return props;
}

}  // namespace

std::vector<std::pair<std::string, std::string>> read_onnx_metadata(const std::string& path) {
  require_file(path, "artifact");
  const uint64_t size = file_size(path);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorCode::not_found, "cannot open " + path);
  return scan(in, size, path);
}

std::string onnx_graph_sha256(const std::string& path) {
  require_file(path, "artifact");
  const uint64_t size = file_size(path);
  std::vector<std::pair<uint64_t, uint64_t>> metadata;
  {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(ErrorCode::not_found, "cannot open " + path);
    scan(in, size, path, &metadata);
  }
  // the serialized model without its metadata_props, as onnx_file.py::graph_sha256 hashes it: segdeploy writes
  // ModelProto's fields in field order, so leaving those records out is serializing the model without them
  std::ifstream in(path, std::ios::binary);
  Sha256 digest;
  std::vector<char> buffer(1 << 20);
  uint64_t pos = 0;
  auto hash_until = [&](uint64_t end) {
    while (pos < end) {
      const uint64_t take = std::min<uint64_t>(end - pos, buffer.size());
      in.read(buffer.data(), std::streamsize(take));
      if (uint64_t(in.gcount()) != take) throw Error(ErrorCode::artifact, path + " ends early while hashing it");
      digest.update(buffer.data(), size_t(take));
      pos += take;
    }
  };
  for (const auto& [begin, end] : metadata) {
    hash_until(begin);
    in.seekg(std::streamoff(end));
    pos = end;
  }
  hash_until(size);
  return digest.hex();
}

std::vector<std::pair<std::string, std::string>> parse_onnx_metadata(const std::string& bytes,
                                                                     const std::string& source) {
  std::istringstream in(bytes);
  return scan(in, bytes.size(), source);
}

}  // namespace segdeploy
