// The metadata_props of an ONNX file, read without ONNX Runtime or protobuf: a scan of ModelProto's top-level
// fields that seeks past the graph, so a 100 MB model costs a few reads.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace segdeploy {

// (key, value) pairs in file order. Throws not_found for a missing file and artifact for a file that is not a
// protobuf-encoded ModelProto with a graph.
std::vector<std::pair<std::string, std::string>> read_onnx_metadata(const std::string& path);

// SHA-256 of the model without its metadata_props: the graph_sha256 a segdeploy manifest records.
std::string onnx_graph_sha256(const std::string& path);

// The same for a serialized model held in memory.
std::vector<std::pair<std::string, std::string>> parse_onnx_metadata(const std::string& bytes,
                                                                     const std::string& source);

}  // namespace segdeploy
