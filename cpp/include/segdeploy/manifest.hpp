// The artifact manifest (schema 2): what an exported artifact is, read from its sidecar <artifact>.json, from the
// ONNX metadata_props entry "segdeploy.manifest", or from a segdeploy engine's header. The definition lives in
// segdeploy/artifact/manifest.py and manifest.schema.json; this reader takes the fields the C++ library uses, checks
// their types and the cross-field rules the Python reader checks, and refuses any other schema version.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace segdeploy {

constexpr int kSchemaVersion = 2;
constexpr const char* kOnnxMetadataKey = "segdeploy.manifest";
// segdeploy 0.1's untyped metadata: recognised only to refuse it with a clear line
constexpr const char* kLegacyMetadataKey = "segdeploy_metadata_version";

struct Range {
  int min = 1, opt = 1, max = 1;
  bool contains(int value) const { return min <= value && value <= max; }
};

struct Axis {
  int axis = 0;
  std::string name;
  int min = 1, opt = 1, max = 1;
};

// One dimension of a tensor: a size, or the name of a dynamic axis ("batch", "height/8").
struct Dim {
  int64_t size = -1;
  std::string name;
  bool is_static() const { return name.empty(); }
};

struct TensorSpec {
  std::string name;
  std::string dtype;   // numpy names: float32, float16, uint8, int64 ...
  std::string layout;  // inputs: NCHW | NHWC; outputs: NCHW (logits) | NHW (masks)
  std::vector<Dim> shape;
  std::vector<Axis> dynamic_axes;
  std::string channel_order;  // image inputs: RGB | BGR; empty otherwise
  std::string kind;           // image | tensor | logits | mask; empty when not given
  int stride = 0;             // outputs: input pixels per output pixel; 0 when not given
  const Axis* axis(int index) const;
};

struct Profile {
  Range batch, height, width;
  int multiple = 1;
  bool is_static() const;
  // Why (batch, height, width) is outside the profile, or "" when it is inside.
  std::string check(int batch, int height, int width) const;
};

struct Resize {
  std::string kind = "fit";             // mmseg's keep-ratio Resize
  std::array<int, 2> scale{2048, 512};  // fit inside (long side, short side)
  int round_to = 32;                    // then each side rounded to the nearest multiple
  std::string interpolation = "bilinear";
};

struct Preprocessing {
  bool in_graph = false;
  std::array<double, 3> mean{}, std{};
  std::string channel_order;  // what the network's first layer expects (images are read as BGR)
  int size_multiple = 1;
  bool align_corners = false;
  Resize resize;
};

struct ModelInfo {
  std::string name, family, variant;
  int num_classes = 0;
  std::vector<std::string> class_names;
  std::vector<std::array<uint8_t, 3>> palette;  // RGB
};

struct EngineInfo {
  std::string tensorrt_version, gpu_name, compute_capability, onnx_sha256, builder;
  bool version_compatible = false;
  std::string hardware_compatibility = "none";  // none | ampere_plus | same_compute_capability
  std::optional<int> dla_core;
  bool gpu_fallback = false;
  bool tf32 = false;
  std::string platform;  // x86_64 | aarch64 | jetson; empty when the header does not record it
  std::string plan_sha256;  // the plan's SHA-256; every engine reader checks it
};

struct Manifest {
  int schema_version = kSchemaVersion;
  std::string format;  // onnx | engine
  ModelInfo model;
  std::string precision;  // fp32 | fp16 | int8
  std::vector<TensorSpec> inputs, outputs;
  Profile profile;
  Preprocessing preprocessing;
  bool dynamic = false;
  std::string export_outputs;  // logits | mask
  std::string graph_sha256;
  std::string segdeploy_version;  // tool_versions.segdeploy: the release that wrote it (required)
  std::optional<bool> validation_passed;  // validation.passed: false is warned about on every use
  std::optional<EngineInfo> engine;
  std::string document;  // the JSON text as read

  const TensorSpec& input() const { return inputs.front(); }
  const TensorSpec& output() const { return outputs.front(); }

  // Parse and check one manifest document; `source` names it in error messages.
  static Manifest parse(const std::string& json_text, const std::string& source = "manifest");
};

// <artifact minus its extension>.json
std::string sidecar_path(const std::string& artifact);

Manifest read_sidecar(const std::string& path);

// The manifest of an artifact, whatever its name says: a manifest (JSON), an ONNX model (its embedded copy, else its
// sidecar; both present and different is an error; its graph must hash to the manifest's graph_sha256, always), or
// a segdeploy engine (its header; the plan must hash to its plan_sha256). Throws when there is none.
Manifest read_manifest(const std::string& artifact);

// What the file at `path` holds, by content: "engine", "json", "onnx" or "unknown" (formats.py::sniff).
std::string sniff(const std::string& path);

// SHA-256 of an ONNX model without its metadata_props: the graph_sha256 segdeploy records (onnx_file.py).
std::string onnx_graph_sha256(const std::string& path);

// SHA-256 of bytes, lower-case hex.
std::string sha256_hex(const std::string& bytes);

// Throws when the manifest names a registered model but not that model's facts (family, variant, preprocessing),
// as segdeploy/models/facts.py does: a tampered mean is refused, not used.
void check_model_facts(const Manifest& manifest, const std::string& source);

}  // namespace segdeploy
