#include "segdeploy/manifest.hpp"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "file_util.hpp"
#include "onnx_metadata.hpp"
#include "sha256.hpp"
#include "segdeploy/engine_header.hpp"
#include "segdeploy/error.hpp"

namespace segdeploy {

using nlohmann::json;

namespace {

std::string type_name(const json& value) {
  if (value.is_number_integer()) return "an integer";
  if (value.is_number()) return "a number";
  if (value.is_string()) return "a string";
  if (value.is_boolean()) return "a boolean";
  if (value.is_null()) return "null";
  if (value.is_array()) return "an array";
  return "an object";
}

// Reads the fields of one JSON object; every error names the manifest and the field's path in it.
class Fields {
 public:
  Fields(const json& object, std::string source, std::string path)
      : object_(object), source_(std::move(source)), path_(std::move(path)) {
    if (!object_.is_object()) fail(path_.empty() ? "(top level)" : path_, "must be an object, not " + type_name(object_));
  }

  bool has(const std::string& key) const { return object_.contains(key) && !object_.at(key).is_null(); }

  const json& at(const std::string& key) const {
    if (!object_.contains(key)) fail(where(key), "is missing");
    return object_.at(key);
  }

  Fields object(const std::string& key) const { return Fields(at(key), source_, where(key)); }

  std::string string(const std::string& key) const {
    const json& v = at(key);
    if (!v.is_string()) fail(where(key), "must be a string, not " + type_name(v));
    return v.get<std::string>();
  }

  std::string string_or(const std::string& key, const std::string& fallback) const {
    return has(key) ? string(key) : fallback;
  }

  std::string one_of(const std::string& key, const std::set<std::string>& allowed, bool optional = false) const {
    if (optional && !has(key)) return "";
    std::string v = string(key);
    if (!allowed.count(v)) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      fail(where(key), "is '" + v + "', not one of " + list);
    }
    return v;
  }

  int64_t integer(const std::string& key, int64_t min = INT64_MIN, int64_t max = INT64_MAX) const {
    return integer_value(at(key), where(key), min, max);
  }

  int64_t integer_value(const json& v, const std::string& path, int64_t min, int64_t max) const {
    if (!v.is_number_integer()) fail(path, "must be an integer, not " + type_name(v));
    int64_t value = v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX) ? INT64_MAX : v.get<int64_t>();
    if (value < min || value > max)
      fail(path, "is " + std::to_string(value) + ", outside " + std::to_string(min) + ".." + std::to_string(max));
    return value;
  }

  bool boolean(const std::string& key) const {
    const json& v = at(key);
    if (!v.is_boolean()) fail(where(key), "must be a boolean, not " + type_name(v));
    return v.get<bool>();
  }

  const json& array(const std::string& key, size_t min_items = 0) const {
    const json& v = at(key);
    if (!v.is_array()) fail(where(key), "must be an array, not " + type_name(v));
    if (v.size() < min_items) fail(where(key), "needs at least " + std::to_string(min_items) + " item(s)");
    return v;
  }

  std::array<double, 3> triple(const std::string& key, bool positive) const {
    const json& v = array(key);
    if (v.size() != 3) fail(where(key), "must have 3 numbers, not " + std::to_string(v.size()));
    std::array<double, 3> out{};
    for (size_t i = 0; i < 3; ++i) {
      if (!v[i].is_number()) fail(where(key) + "/" + std::to_string(i), "must be a number");
      out[i] = v[i].get<double>();
      if (positive && !(out[i] > 0)) fail(where(key) + "/" + std::to_string(i), "must be positive");
    }
    return out;
  }

  std::string where(const std::string& key) const { return path_.empty() ? key : path_ + "/" + key; }
  const std::string& source() const { return source_; }

  [[noreturn]] void fail(const std::string& path, const std::string& what) const {
    throw Error(ErrorCode::artifact, source_ + ": invalid manifest at " + path + ": " + what);
  }

 private:
  const json& object_;
  std::string source_, path_;
};

const std::set<std::string> kDtypes = {"float32", "float16", "bfloat16", "float64", "uint8",
                                       "int8",    "int32",   "int64",    "bool"};
const std::set<std::string> kLayouts = {"NCHW", "NHWC", "NHW"};
const std::set<std::string> kOrders = {"RGB", "BGR"};
const std::set<std::string> kKinds = {"image", "tensor", "logits", "mask"};

Range read_range(const Fields& f) {
  Range r{int(f.integer("min", 1, INT32_MAX)), int(f.integer("opt", 1, INT32_MAX)), int(f.integer("max", 1, INT32_MAX))};
  return r;
}

TensorSpec read_tensor(const Fields& f) {
  TensorSpec t;
  t.name = f.string("name");
  if (t.name.empty()) f.fail(f.where("name"), "must not be empty");
  t.dtype = f.one_of("dtype", kDtypes);
  t.layout = f.one_of("layout", kLayouts);
  const json& shape = f.array("shape", 1);
  for (size_t i = 0; i < shape.size(); ++i) {
    const json& d = shape[i];
    Dim dim;
    if (d.is_string() && !d.get<std::string>().empty())
      dim.name = d.get<std::string>();
    else
      dim.size = f.integer_value(d, f.where("shape") + "/" + std::to_string(i), 1, INT32_MAX);
    t.shape.push_back(dim);
  }
  if (f.has("dynamic_axes")) {
    const json& axes = f.array("dynamic_axes");
    for (size_t i = 0; i < axes.size(); ++i) {
      Fields a(axes[i], f.source(), f.where("dynamic_axes") + "/" + std::to_string(i));
      Axis axis{int(a.integer("axis", 0, 7)), a.string("name"), 0, 0, 0};
      Range r = read_range(a);
      axis.min = r.min, axis.opt = r.opt, axis.max = r.max;
      t.dynamic_axes.push_back(axis);
    }
  }
  t.channel_order = f.one_of("channel_order", kOrders, true);
  t.kind = f.one_of("kind", kKinds, true);
  if (f.has("stride")) t.stride = int(f.integer("stride", 1, 1 << 16));
  return t;
}

void check_version(const json& doc, const std::string& source) {
  if (!doc.is_object())
    throw Error(ErrorCode::artifact, source + ": a manifest is a JSON object, not " + type_name(doc));
  if (doc.contains(kLegacyMetadataKey) && !doc.contains("schema_version"))
    throw Error(ErrorCode::schema_version,
                source + " was written by segdeploy 0.1 (untyped metadata version " +
                    doc.at(kLegacyMetadataKey).dump() + "); this library reads manifest schema " +
                    std::to_string(kSchemaVersion) + ": export the artifact again");
  const json version = doc.contains("schema_version") ? doc.at("schema_version") : json();
  if (version.is_number_integer() && version.get<int64_t>() == kSchemaVersion) return;
  std::string hint = version.is_number_integer() && version.get<int64_t>() > kSchemaVersion
                         ? "it was written by a newer segdeploy: upgrade libsegdeploy to read it"
                         : "export the artifact again with this segdeploy";
  throw Error(ErrorCode::schema_version, source + " has manifest schema_version " +
                                             (version.is_null() ? std::string("None") : version.dump()) +
                                             "; libsegdeploy " SEGDEPLOY_VERSION " reads schema " +
                                             std::to_string(kSchemaVersion) + ": " + hint);
}

bool is_sha256(const std::string& text) {
  return text.size() == 64 &&
         std::all_of(text.begin(), text.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

struct ModelFacts {
  const char* name;
  const char* family;
  const char* variant;
  std::array<double, 3> mean, std;
  const char* channel_order;
  int size_multiple;
  bool align_corners;
};

const ModelFacts kModelFacts[] = {
#include "model_facts.inc"
};

void fail_consistency(const std::string& source, const std::string& what) {
  throw Error(ErrorCode::artifact, source + ": " + what);
}

// What a schema cannot say: the parts of one manifest agree with each other (manifest.py::_check_consistency).
void check_consistency(const Manifest& m, const std::string& source) {
  const int k = m.model.num_classes;
  if (int(m.model.class_names.size()) != k)
    fail_consistency(source, std::to_string(m.model.class_names.size()) + " class names for " + std::to_string(k) +
                                 " classes");
  if (int(m.model.palette.size()) != k)
    fail_consistency(source, std::to_string(m.model.palette.size()) + " palette colours for " + std::to_string(k) +
                                 " classes");
  auto check_tensor = [&](const TensorSpec& t) {
    for (const Axis& a : t.dynamic_axes) {
      if (a.axis >= int(t.shape.size()))
        fail_consistency(source, "tensor '" + t.name + "' has a dynamic axis " + std::to_string(a.axis) +
                                     " but rank " + std::to_string(t.shape.size()));
      if (!(a.min <= a.opt && a.opt <= a.max))
        fail_consistency(source, "tensor '" + t.name + "' axis '" + a.name + "': min <= opt <= max does not hold");
    }
  };
  for (const auto& t : m.inputs) check_tensor(t);
  for (const auto& t : m.outputs) {
    check_tensor(t);
    if (t.kind == "logits" && t.shape.size() > 1 && t.shape[1].is_static() && t.shape[1].size != k)
      fail_consistency(source, "output '" + t.name + "' has " + std::to_string(t.shape[1].size) + " channels for " +
                                   std::to_string(k) + " classes");
  }
  const std::pair<const char*, const Range*> ranges[] = {
      {"batch", &m.profile.batch}, {"height", &m.profile.height}, {"width", &m.profile.width}};
  for (const auto& [name, r] : ranges)
    if (!(r->min <= r->opt && r->opt <= r->max))
      fail_consistency(source, std::string("profile ") + name + ": min <= opt <= max does not hold");
  if ((m.format == "engine") != m.engine.has_value())
    fail_consistency(source, "engine facts belong to (and only to) an engine's manifest");
}

}  // namespace

const Axis* TensorSpec::axis(int index) const {
  for (const Axis& a : dynamic_axes)
    if (a.axis == index) return &a;
  return nullptr;
}

bool Profile::is_static() const {
  return batch.min == batch.max && height.min == height.max && width.min == width.max;
}

std::string Profile::check(int b, int h, int w) const {
  std::string problems;
  auto add = [&](const std::string& p) { problems += (problems.empty() ? "" : "; ") + p; };
  const std::tuple<const char*, int, const Range&> dims[] = {{"batch", b, batch}, {"height", h, height},
                                                             {"width", w, width}};
  for (const auto& [what, value, r] : dims)
    if (!r.contains(value))
      add(std::string(what) + " " + std::to_string(value) + " outside " + std::to_string(r.min) + "-" +
          std::to_string(r.max));
  if (multiple > 1 && (h % multiple || w % multiple))
    add(std::to_string(h) + "x" + std::to_string(w) + " is not a multiple of " + std::to_string(multiple));
  return problems;
}

Manifest Manifest::parse(const std::string& json_text, const std::string& source) {
  json doc;
  try {
    doc = json::parse(json_text);
  } catch (const json::parse_error& e) {
    throw Error(ErrorCode::artifact, source + " is not valid JSON (byte " + std::to_string(e.byte) + ")");
  }
  check_version(doc, source);
  Fields top(doc, source, "");
  Manifest m;
  m.document = json_text;
  m.format = top.one_of("format", {"onnx", "engine"});

  Fields model = top.object("model");
  m.model.name = model.string("name");
  m.model.family = model.string("family");
  m.model.variant = model.string("variant");
  m.model.num_classes = int(model.integer("num_classes", 1, 65535));
  for (const json& n : model.array("class_names")) {
    if (!n.is_string()) model.fail(model.where("class_names"), "must hold strings");
    m.model.class_names.push_back(n.get<std::string>());
  }
  const json& palette = model.array("palette");
  for (size_t i = 0; i < palette.size(); ++i) {
    const std::string path = model.where("palette") + "/" + std::to_string(i);
    if (!palette[i].is_array() || palette[i].size() != 3) model.fail(path, "must be [r, g, b]");
    std::array<uint8_t, 3> rgb{};
    for (size_t c = 0; c < 3; ++c) rgb[c] = uint8_t(model.integer_value(palette[i][c], path, 0, 255));
    m.model.palette.push_back(rgb);
  }

  m.precision = top.object("precision").one_of("mode", {"fp32", "fp16", "int8"});
  for (const char* key : {"inputs", "outputs"}) {
    const json& tensors = top.array(key, 1);
    for (size_t i = 0; i < tensors.size(); ++i)
      (key == std::string("inputs") ? m.inputs : m.outputs)
          .push_back(read_tensor(Fields(tensors[i], source, std::string(key) + "/" + std::to_string(i))));
  }

  Fields profile = top.object("profile");
  m.profile.batch = read_range(profile.object("batch"));
  m.profile.height = read_range(profile.object("height"));
  m.profile.width = read_range(profile.object("width"));
  m.profile.multiple = int(profile.integer("multiple", 1, 1 << 16));

  Fields pre = top.object("preprocessing");
  m.preprocessing.in_graph = pre.boolean("in_graph");
  m.preprocessing.mean = pre.triple("mean", false);
  m.preprocessing.std = pre.triple("std", true);
  m.preprocessing.channel_order = pre.one_of("channel_order", kOrders);
  m.preprocessing.size_multiple = int(pre.integer("size_multiple", 1, 1 << 16));
  m.preprocessing.align_corners = pre.boolean("align_corners");
  if (pre.has("resize")) {
    Fields resize = pre.object("resize");
    m.preprocessing.resize.kind = resize.one_of("kind", {"fit"});
    const json& scale = resize.array("scale");
    if (scale.size() != 2) resize.fail(resize.where("scale"), "must have 2 integers");
    for (size_t i = 0; i < 2; ++i)
      m.preprocessing.resize.scale[i] = int(resize.integer_value(scale[i], resize.where("scale"), 1, 1 << 20));
    m.preprocessing.resize.round_to = int(resize.integer("round_to", 1, 1 << 16));
    m.preprocessing.resize.interpolation = resize.one_of("interpolation", {"bilinear"});
  }

  Fields exported = top.object("export");
  m.dynamic = exported.boolean("dynamic");
  m.export_outputs = exported.one_of("outputs", {"logits", "mask"});
  m.graph_sha256 = top.string("graph_sha256");
  if (!is_sha256(m.graph_sha256)) top.fail("graph_sha256", "must be 64 lower-case hex digits");
  Fields tools = top.object("tool_versions");
  const json& writer = tools.has("segdeploy") ? tools.at("segdeploy") : json();
  if (!writer.is_string() || writer.get<std::string>().empty())
    throw Error(ErrorCode::artifact, source + ": its tool_versions name no segdeploy release, so nothing vouches for "
                                              "its graph_sha256: not a manifest segdeploy wrote (export the "
                                              "artifact again)");
  m.segdeploy_version = writer.get<std::string>();
  if (top.has("validation")) {
    Fields validation = top.object("validation");
    if (validation.has("passed")) m.validation_passed = validation.boolean("passed");
  }

  if (top.has("engine")) {
    Fields e = top.object("engine");
    EngineInfo info;
    info.tensorrt_version = e.string("tensorrt_version");
    info.gpu_name = e.string("gpu_name");
    info.compute_capability = e.string("compute_capability");
    info.onnx_sha256 = e.string("onnx_sha256");
    info.builder = e.string("builder");
    info.version_compatible = e.has("version_compatible") && e.boolean("version_compatible");
    if (e.has("hardware_compatibility"))
      info.hardware_compatibility = e.one_of("hardware_compatibility", {"none", "ampere_plus", "same_compute_capability"});
    if (e.has("dla_core")) info.dla_core = int(e.integer("dla_core", 0, 16));
    info.gpu_fallback = e.has("gpu_fallback") && e.boolean("gpu_fallback");
    info.tf32 = e.has("tf32") && e.boolean("tf32");
    if (e.has("platform"))
      info.platform = e.one_of("platform", {"x86_64", "aarch64", "jetson"});
    if (e.has("plan_sha256")) {
      info.plan_sha256 = e.string("plan_sha256");
      if (!is_sha256(info.plan_sha256)) e.fail(e.where("plan_sha256"), "must be 64 lower-case hex digits");
    }
    m.engine = info;
  }
  check_consistency(m, source);
  return m;
}

std::string sidecar_path(const std::string& artifact) {
  const size_t slash = artifact.find_last_of('/');
  const size_t dot = artifact.find_last_of('.');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash)) return artifact + ".json";
  return artifact.substr(0, dot) + ".json";
}

Manifest read_sidecar(const std::string& path) {
  return Manifest::parse(read_text_file(path, "manifest"), path);
}

std::string sha256_hex(const std::string& bytes) {
  Sha256 digest;
  digest.update(bytes);
  return digest.hex();
}

void check_model_facts(const Manifest& m, const std::string& source) {
  for (const ModelFacts& f : kModelFacts) {
    if (m.model.name != f.name) continue;
    auto differs = [&](const std::string& what, const std::string& recorded, const std::string& truth) {
      throw Error(ErrorCode::artifact, source + ": its manifest's " + what + " " + recorded + " is not " + f.name +
                                           "'s " + truth + ": the manifest does not describe this model");
    };
    auto triple = [](const std::array<double, 3>& v) {
      std::ostringstream out;
      out << "[" << v[0] << ", " << v[1] << ", " << v[2] << "]";
      return out.str();
    };
    if (m.model.family != f.family) differs("family", m.model.family, f.family);
    if (m.model.variant != f.variant) differs("variant", m.model.variant, f.variant);
    const Preprocessing& p = m.preprocessing;
    if (p.mean != f.mean) differs("preprocessing mean", triple(p.mean), triple(f.mean));
    if (p.std != f.std) differs("preprocessing std", triple(p.std), triple(f.std));
    if (p.channel_order != f.channel_order) differs("preprocessing channel order", p.channel_order, f.channel_order);
    if (p.size_multiple != f.size_multiple)
      differs("size multiple", std::to_string(p.size_multiple), std::to_string(f.size_multiple));
    if (p.align_corners != f.align_corners)
      differs("align_corners", p.align_corners ? "true" : "false", f.align_corners ? "true" : "false");
    if (m.profile.multiple % f.size_multiple)
      throw Error(ErrorCode::artifact, source + ": its manifest's profile steps by " +
                                           std::to_string(m.profile.multiple) + ", but " + f.name +
                                           " takes multiples of " + std::to_string(f.size_multiple));
  }
}

std::string sniff(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "unknown";
  std::string head(8, '\0');
  in.read(head.data(), 8);
  head.resize(size_t(in.gcount()));
  if (head.compare(0, 4, "ftrt") == 0) return "engine";
  std::error_code ec;
  const uint64_t size = std::filesystem::file_size(path, ec);
  if (head.size() > 4 && head[4] == '{') {
    const uint32_t n = uint32_t(uint8_t(head[0])) | uint32_t(uint8_t(head[1])) << 8 |
                       uint32_t(uint8_t(head[2])) << 16 | uint32_t(uint8_t(head[3])) << 24;
    if (n > 0 && !ec && n <= size - 4) return "engine";
  }
  const size_t first = head.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && (head[first] == '{' || head[first] == '[')) return "json";
  try {
    read_onnx_metadata(path);
    return "onnx";
  } catch (const Error&) {
    return "unknown";
  }
}

namespace {

Manifest read_any_manifest(const std::string& artifact) {
  require_file(artifact, "artifact");
  std::string kind = sniff(artifact);
  if (kind == "unknown") {  // read as its suffix says, so that its reader names what is wrong with it
    const std::string suffix = lower_extension(artifact);
    kind = suffix == ".json" ? "json" : (suffix == ".engine" || suffix == ".plan") ? "engine" : "onnx";
  }
  if (kind == "json") return read_sidecar(artifact);
  if (kind == "engine") {
    EngineFile engine = read_engine_header(artifact);
    if (engine.manifest) return *engine.manifest;
    // a bare plan (trtexec, build_engine.sh) is described by the ONNX artifact's manifest beside it, as in a bundle
    const std::string side = sidecar_path(artifact);
    if (!is_regular_file(side))
      throw Error(ErrorCode::artifact, artifact + " has no segdeploy header (built by trtexec?) and no manifest " +
                                           side + " beside it; it carries no manifest");
    return read_sidecar(side);
  }
  std::optional<std::string> inside;
  for (const auto& [key, value] : read_onnx_metadata(artifact)) {
    if (key == kOnnxMetadataKey) inside = value;
    if (key == kLegacyMetadataKey && !inside) check_version(json{{kLegacyMetadataKey, value}}, artifact);
  }
  const std::string side = sidecar_path(artifact);
  const bool has_side = is_regular_file(side);
  if (!inside && !has_side)
    throw Error(ErrorCode::artifact, artifact + " carries no segdeploy manifest (no embedded one, no sidecar " + side +
                                         ")");
  Manifest manifest = inside ? Manifest::parse(*inside, artifact + " (embedded manifest)") : read_sidecar(side);
  if (inside && has_side) {
    Manifest beside = read_sidecar(side);
    if (json::parse(beside.document) != json::parse(manifest.document))
      throw Error(ErrorCode::artifact, side + " does not match the manifest inside " + artifact + " (graph sha256 " +
                                           beside.graph_sha256.substr(0, 12) + " vs " +
                                           manifest.graph_sha256.substr(0, 12) +
                                           "): they were not written together; export again");
  }
  if (manifest.format != "onnx")
    throw Error(ErrorCode::artifact, artifact + ": its manifest describes " + manifest.format +
                                         " artifact, not an ONNX graph");
  // always checked: nothing in the file can switch it off (onnx_file.py::check_graph_unchanged)
  if (onnx_graph_sha256(artifact) != manifest.graph_sha256)
    throw Error(ErrorCode::artifact, artifact + ": its graph does not hash to what its manifest records (sha256 " +
                                         manifest.graph_sha256.substr(0, 12) +
                                         "): it was edited or damaged since export; export it again");
  return manifest;
}

}  // namespace

Manifest read_manifest(const std::string& artifact) {
  Manifest manifest = read_any_manifest(artifact);
  check_model_facts(manifest, artifact);
  return manifest;
}

}  // namespace segdeploy
