// The engine header: read without TensorRT, headerless plans recognised, damaged files refused with one line, and
// the compatibility rules of engine_header.py::compatibility_problem.
#include "segdeploy/engine_header.hpp"

#include "segdeploy/error.hpp"
#include "test_util.hpp"

using namespace segdeploy;
using namespace segdeploy_test;

namespace {

std::string read_error(const std::string& path) {
  try {
    read_engine_header(path);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::artifact) << e.what();
    return e.what();
  }
  return "";
}

}  // namespace

TEST(EngineHeader, RoundTrip) {
  ScratchDir dir;
  const std::string header = engine_manifest().dump();
  write_file(dir.file("m.engine"), engine_bytes(header, fake_plan()));
  const EngineFile file = read_engine_header(dir.file("m.engine"));
  ASSERT_TRUE(file.manifest.has_value());
  EXPECT_EQ(file.manifest->engine->compute_capability, "8.7");
  EXPECT_EQ(file.plan_offset, 4 + header.size());
  EXPECT_EQ(file.plan_size, fake_plan().size());
  EXPECT_EQ(read_file(dir.file("m.engine")).substr(file.plan_offset), fake_plan());
  EXPECT_EQ(read_manifest(dir.file("m.engine")).engine->tensorrt_version, "10.3.0");
}

TEST(EngineHeader, HeaderlessPlansAreRecognised) {
  ScratchDir dir;
  write_file(dir.file("trtexec.engine"), fake_plan());
  const EngineFile file = read_engine_header(dir.file("trtexec.engine"));
  EXPECT_FALSE(file.manifest.has_value());
  EXPECT_EQ(file.plan_offset, 0u);
  try {
    read_manifest(dir.file("trtexec.engine"));
    FAIL() << "a headerless engine gave a manifest";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no segdeploy header"), std::string::npos) << e.what();
  }
}

TEST(EngineHeader, BarePlanIsDescribedByTheManifestBesideIt) {
  // build_engine.sh writes <model>.plan beside the bundle's <model>.json
  ScratchDir dir;
  write_file(dir.file("cgrseg_t.plan"), fake_plan());
  write_file(dir.file("cgrseg_t.json"), sample_manifest().dump());
  const Manifest m = read_manifest(dir.file("cgrseg_t.plan"));
  EXPECT_EQ(m.model.name, "cgrseg_t");
  EXPECT_FALSE(m.engine.has_value());
  const std::string warning = bare_plan_warning(dir.file("cgrseg_t.plan"));
  EXPECT_NE(warning.find("has no segdeploy header (a bare plan from trtexec or build_engine.sh?)"),
            std::string::npos);
  EXPECT_NE(warning.find("its host code is allowed (a version-compatible plan needs it)"), std::string::npos);
}

TEST(EngineHeader, PlatformAndTf32AreRead) {
  const Manifest m = Manifest::parse(engine_manifest({{"platform", "jetson"}, {"tf32", true}}).dump());
  EXPECT_EQ(m.engine->platform, "jetson");
  EXPECT_TRUE(m.engine->tf32);
  EXPECT_EQ(Manifest::parse(engine_manifest().dump()).engine->platform, "");
}

TEST(EngineHeader, DamagedEnginesAreOneLine) {
  ScratchDir dir;
  const std::string header = engine_manifest().dump();
  write_file(dir.file("corrupt.engine"), engine_bytes("{" + std::string(header.size() - 1, 'x'), fake_plan()));
  EXPECT_NE(read_error(dir.file("corrupt.engine")).find("corrupt (not JSON)"), std::string::npos);
  write_file(dir.file("truncated.engine"), engine_bytes(header, ""));
  EXPECT_NE(read_error(dir.file("truncated.engine")).find("truncated"), std::string::npos);
  write_file(dir.file("short.engine"), "abc");
  EXPECT_NE(read_error(dir.file("short.engine")).find("3 bytes: not an engine"), std::string::npos);
  write_file(dir.file("onnx.engine"), engine_bytes(sample_manifest().dump(), fake_plan()));
  EXPECT_NE(read_error(dir.file("onnx.engine")).find("describes a onnx artifact, not an engine"), std::string::npos);
  json v3 = engine_manifest();
  v3["schema_version"] = 3;
  write_file(dir.file("v3.engine"), engine_bytes(v3.dump(), fake_plan()));
  try {
    read_engine_header(dir.file("v3.engine"));
    FAIL() << "schema 3 accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::schema_version);
  }
  try {
    read_engine_header(dir.file("missing.engine"));
    FAIL() << "a missing engine was read";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::not_found);
  }
}

struct CompatibilityCase {
  std::string name;
  json facts;
  std::string tensorrt, compute_capability, problem;  // problem: "" for none, else a fragment of the reason
  std::string platform = "";
};

void PrintTo(const CompatibilityCase& c, std::ostream* os) { *os << c.name; }

class Compatibility : public ::testing::TestWithParam<CompatibilityCase> {};

TEST_P(Compatibility, FollowsThePythonRules) {
  const CompatibilityCase& c = GetParam();
  const Manifest m = Manifest::parse(engine_manifest(c.facts).dump());
  const std::string found = compatibility_problem(*m.engine, c.tensorrt, c.compute_capability, c.platform);
  if (c.problem.empty())
    EXPECT_EQ(found, "");
  else
    EXPECT_NE(found.find(c.problem), std::string::npos) << found;
}

// the cases of tests/artifact/test_engine_header.py::test_compatibility
INSTANTIATE_TEST_SUITE_P(
    EngineHeader, Compatibility,
    ::testing::Values(
        CompatibilityCase{"same", json::object(), "10.3.0", "8.7", ""},
        CompatibilityCase{"same_patch_other_build", json::object(), "10.3.0.26", "8.7", ""},
        CompatibilityCase{"other_minor", json::object(), "10.4.0", "8.7", "built by TensorRT 10.3.0"},
        CompatibilityCase{"version_compatible_newer", {{"version_compatible", true}}, "11.4.0", "8.7", ""},
        CompatibilityCase{"version_compatible_older", {{"version_compatible", true}}, "10.2.0", "8.7",
                          "not on 10.2.0"},
        CompatibilityCase{"other_gpu", json::object(), "10.3.0", "9.0", "compute capability 8.7"},
        CompatibilityCase{"ampere_plus_on_hopper", {{"hardware_compatibility", "ampere_plus"}}, "10.3.0", "9.0", ""},
        CompatibilityCase{"ampere_plus_on_turing", {{"hardware_compatibility", "ampere_plus"}}, "10.3.0", "7.5",
                          "SM >= 8.0"},
        CompatibilityCase{"same_cc_on_other_cc", {{"hardware_compatibility", "same_compute_capability"}}, "10.3.0",
                          "8.6", "compute capability 8.7"},
        CompatibilityCase{"same_build", {{"tensorrt_version", "10.3.0.26"}}, "10.3.0.26", "8.7", ""},
        CompatibilityCase{"other_build", {{"tensorrt_version", "10.3.0.26"}}, "10.3.0.30", "8.7",
                          "built by TensorRT 10.3.0.26"},
        CompatibilityCase{"x86_ampere_plus_on_orin",
                          {{"hardware_compatibility", "ampere_plus"}, {"platform", "x86_64"},
                           {"compute_capability", "8.0"}},
                          "10.3.0", "8.7", "Jetson and discrete-GPU engines do not run on each other", "jetson"},
        CompatibilityCase{"ampere_plus_unrecorded_on_orin",
                          {{"hardware_compatibility", "ampere_plus"}, {"compute_capability", "8.0"}}, "10.3.0", "8.7",
                          "which Jetsons do not run", "jetson"},
        CompatibilityCase{"x86_ampere_plus_on_l4",
                          {{"hardware_compatibility", "ampere_plus"}, {"platform", "x86_64"},
                           {"compute_capability", "8.0"}},
                          "10.3.0", "8.9", "", "x86_64"}),
    [](const ::testing::TestParamInfo<CompatibilityCase>& info) { return info.param.name; });

TEST(EngineHeader, ThePlanHashIsAlwaysChecked) {
  ScratchDir dir;
  std::string plan = fake_plan();
  plan[100] ^= 0x55;  // a damaged (or swapped) plan behind an intact header
  write_file(dir.file("damaged.engine"), engine_bytes(engine_manifest().dump(), plan));
  EXPECT_NE(read_error(dir.file("damaged.engine")).find("does not hash to the sha256 its header records"),
            std::string::npos);
  json anonymous = engine_manifest();
  anonymous["engine"].erase("plan_sha256");
  write_file(dir.file("anonymous.engine"), engine_bytes(anonymous.dump(), fake_plan()));
  EXPECT_NE(read_error(dir.file("anonymous.engine")).find("records no plan_sha256"), std::string::npos);
  write_file(dir.file("text.engine"), "this is not an engine at all, just text");
  EXPECT_NE(read_error(dir.file("text.engine")).find("not a TensorRT engine"), std::string::npos);
}
