// The manifest reader: the sample parses into the right fields; other schema versions, malformed documents and
// inconsistent ones are refused with one line; ONNX files give their embedded manifest or their sidecar.
#include "segdeploy/manifest.hpp"

#include <functional>

#include "segdeploy/engine_header.hpp"

#include "segdeploy/error.hpp"
#include "test_util.hpp"

using namespace segdeploy;
using namespace segdeploy_test;

namespace {

// The error a document gives, or "" when it parses.
std::pair<ErrorCode, std::string> failure(const json& doc) {
  try {
    Manifest::parse(doc.dump(), "m.json");
  } catch (const Error& e) {
    return {e.code(), e.what()};
  }
  return {ErrorCode::internal, ""};
}

void expect_failure(const json& doc, ErrorCode code, const std::string& fragment) {
  const auto [got, message] = failure(doc);
  EXPECT_EQ(int(got), int(code)) << message;
  EXPECT_NE(message.find(fragment), std::string::npos) << "message: " << message;
}

}  // namespace

TEST(Manifest, SampleParsesIntoTheFieldsTheLibraryUses) {
  const Manifest m = Manifest::parse(sample_manifest().dump());
  EXPECT_EQ(m.schema_version, 2);
  EXPECT_EQ(m.format, "onnx");
  EXPECT_EQ(m.model.name, "cgrseg_t");
  EXPECT_EQ(m.model.num_classes, 4);
  EXPECT_EQ(m.model.class_names.at(3), "class_3");
  EXPECT_EQ(m.model.palette.at(3), (std::array<uint8_t, 3>{3, 6, 9}));
  EXPECT_EQ(m.input().name, "input");
  EXPECT_EQ(m.input().layout, "NCHW");
  EXPECT_EQ(m.input().channel_order, "RGB");
  ASSERT_EQ(m.input().shape.size(), 4u);
  EXPECT_EQ(m.input().shape[2].size, 512);
  EXPECT_EQ(m.output().kind, "logits");
  EXPECT_EQ(m.output().stride, 8);
  EXPECT_TRUE(m.profile.is_static());
  EXPECT_EQ(m.profile.height.opt, 512);
  EXPECT_FALSE(m.preprocessing.in_graph);
  EXPECT_DOUBLE_EQ(m.preprocessing.mean[0], 123.675);
  EXPECT_DOUBLE_EQ(m.preprocessing.std[2], 57.375);
  EXPECT_EQ(m.preprocessing.resize.scale, (std::array<int, 2>{2048, 512}));
  EXPECT_EQ(m.preprocessing.resize.round_to, 32);
  EXPECT_FALSE(m.engine.has_value());
}

TEST(Manifest, DynamicAxesAndProfileChecks) {
  json doc = sample_manifest();
  doc["inputs"][0]["shape"] = {"batch", 3, "height", "width"};
  doc["inputs"][0]["dynamic_axes"] = {{{"axis", 0}, {"name", "batch"}, {"min", 1}, {"opt", 1}, {"max", 4}},
                                      {{"axis", 2}, {"name", "height"}, {"min", 256}, {"opt", 512}, {"max", 1024}}};
  doc["profile"]["batch"] = {{"min", 1}, {"opt", 1}, {"max", 4}};
  doc["profile"]["height"] = {{"min", 256}, {"opt", 512}, {"max", 1024}};
  doc["profile"]["width"] = {{"min", 256}, {"opt", 512}, {"max", 1024}};
  doc["export"]["dynamic"] = true;
  const Manifest m = Manifest::parse(doc.dump());
  EXPECT_FALSE(m.profile.is_static());
  EXPECT_EQ(m.input().shape[0].name, "batch");
  ASSERT_NE(m.input().axis(2), nullptr);
  EXPECT_EQ(m.input().axis(2)->max, 1024);
  EXPECT_EQ(m.input().axis(1), nullptr);
  EXPECT_EQ(m.profile.check(1, 512, 640), "");
  EXPECT_EQ(m.profile.check(5, 520, 2048),
            "batch 5 outside 1-4; width 2048 outside 256-1024; 520x2048 is not a multiple of 32");
}

TEST(Manifest, OtherSchemaVersionsAreRefused) {
  json doc = sample_manifest();
  doc["schema_version"] = 3;
  expect_failure(doc, ErrorCode::schema_version, "m.json has manifest schema_version 3; libsegdeploy");
  expect_failure(doc, ErrorCode::schema_version, "newer segdeploy");
  doc["schema_version"] = 1;
  expect_failure(doc, ErrorCode::schema_version, "export the artifact again");
  doc.erase("schema_version");
  expect_failure(doc, ErrorCode::schema_version, "schema_version None");
  expect_failure(json{{"segdeploy_metadata_version", "1"}}, ErrorCode::schema_version, "written by segdeploy 0.1");
}

TEST(Manifest, MalformedDocumentsNameTheField) {
  const auto [code, message] = failure(json::array());
  EXPECT_EQ(code, ErrorCode::artifact);
  EXPECT_NE(message.find("a manifest is a JSON object, not an array"), std::string::npos);
  try {
    Manifest::parse("{\"schema_version\": 2,", "m.json");
    FAIL() << "truncated JSON parsed";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::artifact);
    EXPECT_NE(std::string(e.what()).find("m.json is not valid JSON"), std::string::npos);
  }
  json doc = sample_manifest();
  doc["model"]["num_classes"] = "four";
  expect_failure(doc, ErrorCode::artifact, "m.json: invalid manifest at model/num_classes: must be an integer");
  doc = sample_manifest();
  doc["preprocessing"].erase("mean");
  expect_failure(doc, ErrorCode::artifact, "preprocessing/mean: is missing");
  doc = sample_manifest();
  doc["preprocessing"]["std"][1] = 0;
  expect_failure(doc, ErrorCode::artifact, "preprocessing/std/1: must be positive");
  doc = sample_manifest();
  doc["inputs"][0]["layout"] = "NCWH";
  expect_failure(doc, ErrorCode::artifact, "inputs/0/layout: is 'NCWH', not one of NCHW, NHW, NHWC");
  doc = sample_manifest();
  doc["model"]["palette"][0] = {1, 2, 300};
  expect_failure(doc, ErrorCode::artifact, "model/palette/0: is 300, outside 0..255");
  doc = sample_manifest();
  doc["outputs"] = json::array();
  expect_failure(doc, ErrorCode::artifact, "outputs: needs at least 1 item(s)");
}

TEST(Manifest, InconsistentPartsAreRefused) {
  json doc = sample_manifest();
  doc["model"]["palette"].erase(0);
  expect_failure(doc, ErrorCode::artifact, "3 palette colours for 4 classes");
  doc = sample_manifest();
  doc["outputs"][0]["shape"][1] = 5;
  expect_failure(doc, ErrorCode::artifact, "output 'logits' has 5 channels for 4 classes");
  doc = sample_manifest();
  doc["profile"]["height"] = {{"min", 512}, {"opt", 256}, {"max", 1024}};
  expect_failure(doc, ErrorCode::artifact, "profile height: min <= opt <= max does not hold");
  doc = engine_manifest();
  doc["format"] = "onnx";
  expect_failure(doc, ErrorCode::artifact, "engine facts belong to (and only to) an engine's manifest");
}

TEST(Manifest, SidecarPath) {
  EXPECT_EQ(sidecar_path("a/b/model_512x512.onnx"), "a/b/model_512x512.json");
  EXPECT_EQ(sidecar_path("a.b/model"), "a.b/model.json");
}

TEST(ReadManifest, OnnxFilesGiveTheirEmbeddedManifestOrTheirSidecar) {
  ScratchDir dir;
  const std::string doc = sample_manifest().dump();
  // embedded only
  write_file(dir.file("embedded.onnx"), onnx_bytes({{"producer", "x"}, {kOnnxMetadataKey, doc}}));
  EXPECT_EQ(read_manifest(dir.file("embedded.onnx")).model.name, "cgrseg_t");
  // sidecar only
  write_file(dir.file("side.onnx"), onnx_bytes({}));
  write_file(dir.file("side.json"), doc);
  EXPECT_EQ(read_manifest(dir.file("side.onnx")).model.num_classes, 4);
  EXPECT_EQ(read_manifest(dir.file("side.json")).model.num_classes, 4);
  // both, the same document in another spelling
  write_file(dir.file("embedded.json"), sample_manifest().dump(2));
  EXPECT_EQ(read_manifest(dir.file("embedded.onnx")).model.name, "cgrseg_t");
  // both, different
  json other = sample_manifest();
  other["graph_sha256"] = std::string(64, 'a');
  write_file(dir.file("embedded.json"), other.dump());
  try {
    read_manifest(dir.file("embedded.onnx"));
    FAIL() << "a mismatched sidecar was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("does not match the manifest inside"), std::string::npos) << e.what();
  }
}

TEST(ReadManifest, MissingCorruptAndForeignFiles) {
  ScratchDir dir;
  auto code_of = [](const std::string& path) {
    try {
      read_manifest(path);
    } catch (const Error& e) {
      return std::make_pair(e.code(), std::string(e.what()));
    }
    return std::make_pair(ErrorCode::internal, std::string());
  };
  auto [code, message] = code_of(dir.file("missing.onnx"));
  EXPECT_EQ(code, ErrorCode::not_found);
  EXPECT_NE(message.find("artifact not found: "), std::string::npos) << message;

  std::string noise;
  for (int i = 0; i < 4096; ++i) noise.push_back(char((i * 7919 + 13) % 251));
  write_file(dir.file("noise.onnx"), noise);
  std::tie(code, message) = code_of(dir.file("noise.onnx"));
  EXPECT_EQ(code, ErrorCode::artifact);
  EXPECT_NE(message.find("not a"), std::string::npos) << message;

  write_file(dir.file("truncated.onnx"), onnx_bytes({{kOnnxMetadataKey, sample_manifest().dump()}}).substr(0, 40));
  std::tie(code, message) = code_of(dir.file("truncated.onnx"));
  EXPECT_EQ(code, ErrorCode::artifact);
  EXPECT_NE(message.find("runs past the end of the file"), std::string::npos) << message;

  write_file(dir.file("foreign.onnx"), onnx_bytes({{"producer", "pytorch"}}));
  std::tie(code, message) = code_of(dir.file("foreign.onnx"));
  EXPECT_EQ(code, ErrorCode::artifact);
  EXPECT_NE(message.find("carries no segdeploy manifest"), std::string::npos) << message;

  write_file(dir.file("legacy.onnx"), onnx_bytes({{"segdeploy_metadata_version", "1"}, {"model", "cgrseg_t"}}));
  std::tie(code, message) = code_of(dir.file("legacy.onnx"));
  EXPECT_EQ(code, ErrorCode::schema_version);
  EXPECT_NE(message.find("written by segdeploy 0.1"), std::string::npos) << message;

  json v3 = sample_manifest();
  v3["schema_version"] = 3;
  write_file(dir.file("v3.onnx"), onnx_bytes({{kOnnxMetadataKey, v3.dump()}}));
  std::tie(code, message) = code_of(dir.file("v3.onnx"));
  EXPECT_EQ(code, ErrorCode::schema_version);
  EXPECT_NE(message.find("(embedded manifest) has manifest schema_version 3"), std::string::npos) << message;

  fs::create_directories(dir.file("folder.onnx"));
  std::tie(code, message) = code_of(dir.file("folder.onnx"));
  EXPECT_EQ(code, ErrorCode::not_found);
  EXPECT_NE(message.find("is a folder"), std::string::npos) << message;
}

// What Python refuses, the library refuses (issue: segdeploy-infer ran a tampered mean, a wrong graph hash and
// zeroed weights). The graph hash is always checked, whatever the file says.
TEST(ReadManifest, TheGraphHashIsAlwaysChecked) {
  ScratchDir dir;
  const std::string graph = "a graph of 64 bytes, standing in for the weights, its convolutions...";
  write_file(dir.file("good.onnx"), hashed_onnx(sample_manifest(), graph));
  EXPECT_EQ(read_manifest(dir.file("good.onnx")).model.name, "cgrseg_t");
  auto refusal = [](const std::string& path) {
    try {
      read_manifest(path);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::artifact) << e.what();
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  // zeroed weights: the graph changed after its manifest was written
  std::string zeroed = graph;
  std::fill(zeroed.begin() + 10, zeroed.begin() + 40, '\0');
  json doc = sample_manifest();
  doc["graph_sha256"] = sha256_hex(onnx_bytes({}, graph));
  write_file(dir.file("zeroed.onnx"), onnx_bytes({{kOnnxMetadataKey, doc.dump()}}, zeroed));
  EXPECT_NE(refusal(dir.file("zeroed.onnx")).find("does not hash to what its manifest records"), std::string::npos);
  // a wrong hash in the manifest (embedded and sidecar alike)
  doc["graph_sha256"] = std::string(64, 'a');
  write_file(dir.file("wrong.onnx"), onnx_bytes({{kOnnxMetadataKey, doc.dump()}}, graph));
  write_file(dir.file("wrong.json"), doc.dump());
  EXPECT_NE(refusal(dir.file("wrong.onnx")).find("does not hash"), std::string::npos);
  // a manifest that names no segdeploy release cannot switch the check off: it is refused
  json anonymous = sample_manifest();
  anonymous["tool_versions"].erase("segdeploy");
  write_file(dir.file("anonymous.onnx"), hashed_onnx(anonymous, graph));
  EXPECT_NE(refusal(dir.file("anonymous.onnx")).find("name no segdeploy release"), std::string::npos);
}

TEST(ReadManifest, TheRegistrysFactsAreChecked) {
  ScratchDir dir;
  const std::pair<const char*, std::function<void(json&)>> lies[] = {
      {"preprocessing mean", [](json& d) { d["preprocessing"]["mean"] = {0, 0, 0}; }},
      {"preprocessing std", [](json& d) { d["preprocessing"]["std"] = {1, 1, 1}; }},
      {"channel order", [](json& d) { d["preprocessing"]["channel_order"] = "BGR"; }},
      {"variant", [](json& d) { d["model"]["variant"] = "L"; }},
      {"align_corners", [](json& d) { d["preprocessing"]["align_corners"] = true; }},
  };
  for (const auto& [what, lie] : lies) {
    json doc = sample_manifest();
    lie(doc);
    write_file(dir.file("lie.onnx"), hashed_onnx(doc));
    try {
      read_manifest(dir.file("lie.onnx"));
      ADD_FAILURE() << what << ": accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  }
  json unknown = sample_manifest();  // a model this release does not know: nothing to check it against
  unknown["model"]["name"] = "segnext_xl";
  unknown["preprocessing"]["mean"] = {0, 0, 0};
  write_file(dir.file("unknown.onnx"), hashed_onnx(unknown));
  EXPECT_EQ(read_manifest(dir.file("unknown.onnx")).model.name, "segnext_xl");
}

TEST(ReadManifest, FilesAreRecognisedByContent) {
  ScratchDir dir;
  write_file(dir.file("model.engine"), hashed_onnx(sample_manifest()));  // an ONNX file renamed
  EXPECT_EQ(sniff(dir.file("model.engine")), "onnx");
  EXPECT_EQ(read_manifest(dir.file("model.engine")).format, "onnx");
  write_file(dir.file("manifest.plan"), sample_manifest().dump());  // a manifest renamed
  EXPECT_EQ(sniff(dir.file("manifest.plan")), "json");
  try {
    read_engine_header(dir.file("model.engine"));
    FAIL() << "an ONNX file was read as a bare plan";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("is not a TensorRT engine: it holds an ONNX model"), std::string::npos)
        << e.what();
  }
  try {
    read_engine_header(dir.file("manifest.plan"));
    FAIL() << "a manifest was read as a bare plan";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("is not a TensorRT engine"), std::string::npos) << e.what();
  }
}

TEST(Sha256, KnownAnswers) {  // FIPS 180-4's examples, and a million bytes across many blocks
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256_hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}
