// C++ tests of the runner library, run by ctest. The manifest and JSON checks need nothing; the generation checks
// run when SQLCOPILOT_TEST_EXPORT names an export folder and SQLCOPILOT_TEST_CASES a JSON file of
// [{"input_ids": [...], "max_new_tokens": N, "expected": [...]}] whose expected tokens come from transformers
// (tests/cpp/test_runner.py writes both).
#include <ATen/Parallel.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>

#include "sqlcopilot/json.h"
#include "sqlcopilot/runner.h"
#include "sqlcopilot/sha256.h"

namespace fs = std::filesystem;
using sqlcopilot::Json;

namespace {

int passed = 0, failed = 0;

void check(bool condition, const std::string& what) {
  if (!condition) throw std::runtime_error("check failed: " + what);
}

void run(const std::string& name, const std::function<void()>& test) {
  try {
    test();
    ++passed;
    std::cout << "PASS " << name << std::endl;
  } catch (const std::exception& error) {
    ++failed;
    std::cout << "FAIL " << name << ": " << error.what() << std::endl;
  }
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

fs::path manifest_dir(const std::string& name, const std::string& manifest_text) {
  fs::path dir = fs::temp_directory_path() / ("sqlcopilot_test_" + name + "_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "manifest.json") << manifest_text;
  std::ofstream(dir / "decoder.pt") << "not a graph";
  return dir;
}

// sha256 of "not a graph", the decoder.pt that manifest_dir writes
const std::string kFakeGraphSha256 = "895e68762bdb5ab0ea5d47bb1e70087dc75c721be8bf957051796f004e80ba23";

std::string manifest_text(const std::string& format, const std::string& version,
                          const std::string& graph_sha256 = kFakeGraphSha256) {
  return "{\"format\": \"" + format + "\", \"format_version\": " + version +
         ", \"graph\": \"decoder.pt\", \"dtype\": \"float32\", \"max_seq_len\": 64, \"vocab_size\": 10,"
         " \"eos_token_id\": 9, \"num_layers\": 1, \"stop_token_ids\": [3, 5], \"files\": {\"decoder.pt\": {\"sha256\": \"" + graph_sha256 +
         "\", \"bytes\": 11}}}";
}

// The message of the ManifestError that loading `dir` throws (fails the test when nothing is thrown).
std::string refusal(const fs::path& dir) {
  try {
    sqlcopilot::load_manifest(dir);
  } catch (const sqlcopilot::ManifestError& error) {
    return error.what();
  }
  throw std::runtime_error("manifest in " + dir.string() + " was accepted");
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

void json_tests() {
  run("json parses nested values and escapes", [] {
    Json value = Json::parse(R"({"a": [1, -2.5e1, true, null], "s": "q\"\\\n\u00e9", "o": {}})");
    check(value.at("a").as_array().size() == 4, "array length");
    check(value.at("a").as_array()[1].as_number() == -25.0, "number");
    check(value.at("s").as_string() == "q\"\\\n\xc3\xa9", "string escapes");
    check(Json::parse(value.dump()).dump() == value.dump(), "dump round trip");
  });
  run("json errors name the position", [] {
    for (const char* bad : {"{\"a\": }", "[1, 2", "{\"a\" 1}", "tru", "[1] x"}) {
      try {
        Json::parse(bad);
        throw std::runtime_error(std::string("accepted ") + bad);
      } catch (const sqlcopilot::JsonError& error) {
        check(contains(error.what(), "at character"), error.what());
      }
    }
  });
  run("json float32 values round-trip", [] {
    const float value = 0.1234567f;
    check(static_cast<float>(Json::parse(Json::of_number(value).dump()).as_number()) == value, "float round trip");
  });
}

void manifest_tests() {
  run("manifest with an unknown format_version is refused, naming the export stage", [] {
    auto message = refusal(manifest_dir("version", manifest_text(sqlcopilot::kExportFormat, "4")));
    check(contains(message, "format_version 4") && contains(message, "re-run the export stage"), message);
  });
  run("manifest of another format is refused", [] {
    auto message = refusal(manifest_dir("format", manifest_text("llama.cpp", "2")));
    check(contains(message, "llama.cpp") && contains(message, "export"), message);
  });
  run("manifest missing a field names it", [] {
    auto message = refusal(manifest_dir("field", "{\"format\": \"sqlcopilot-export\", \"format_version\": 2}"));
    check(contains(message, "'graph'") && contains(message, "export"), message);
  });
  run("a folder without manifest is refused", [] {
    auto dir = fs::temp_directory_path() / "sqlcopilot_test_empty";
    fs::create_directories(dir);
    check(contains(refusal(dir), "not found"), "message names the missing manifest");
  });
  run("a valid manifest loads, its files verified", [] {
    auto manifest = sqlcopilot::load_manifest(manifest_dir("ok", manifest_text(sqlcopilot::kExportFormat, "3")));
    check(manifest.max_seq_len == 64 && manifest.eos_token_id == 9 && manifest.graph == "decoder.pt", "fields");
    check(manifest.stop_token_ids == std::vector<int64_t>{3, 5}, "stop token ids");
    check(manifest.checked_bytes == 11, "the graph's 11 bytes checked");
  });
  run("a file whose checksum differs is refused, naming the file", [] {
    const std::string other(64, '0');
    auto message = refusal(manifest_dir("checksum", manifest_text(sqlcopilot::kExportFormat, "2", other)));
    check(contains(message, "decoder.pt: checksum differs") && contains(message, "re-run the export stage"), message);
  });
  run("sha256 of known inputs", [] {
    auto dir = manifest_dir("sha", manifest_text(sqlcopilot::kExportFormat, "2"));
    check(sqlcopilot::sha256_file(dir / "decoder.pt") == kFakeGraphSha256, "not a graph");
    std::ofstream(dir / "empty");
    check(sqlcopilot::sha256_file(dir / "empty") ==
          "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "empty file");
  });
}

std::vector<int64_t> ints(const Json& array) {
  std::vector<int64_t> out;
  for (const auto& item : array.as_array()) out.push_back(item.as_int());
  return out;
}

void generation_tests(const fs::path& export_dir, const fs::path& cases_file) {
  sqlcopilot::Runner runner(export_dir);
  const Json cases = Json::parse(read_text(cases_file));
  run("generation equals transformers' greedy tokens", [&] {
    int index = 0;
    for (const Json& item : cases.as_array()) {
      auto got = runner.generate(ints(item.at("input_ids")), item.at("max_new_tokens").as_int()).output_ids;
      check(got == ints(item.at("expected")), "case " + std::to_string(index));
      ++index;
    }
    check(index > 0, "at least one case");
  });
  run("a request is unaffected by the cache a longer one left", [&] {
    const auto& all = cases.as_array();
    auto first = runner.generate(ints(all.front().at("input_ids")), 6).output_ids;
    runner.generate(ints(all.back().at("input_ids")), 12);
    check(runner.generate(ints(all.front().at("input_ids")), 6).output_ids == first, "same tokens again");
  });
  run("generation stops at the cache end", [&] {
    const auto max_seq = runner.manifest().max_seq_len;
    std::vector<int64_t> prompt(static_cast<size_t>(max_seq - 3), 1);
    auto out = runner.generate(prompt, 100).output_ids;
    const bool ended_by_eos = !out.empty() && out.back() == runner.manifest().eos_token_id;
    // 3 fed tokens fill the cache; the 4th is chosen from the last position and never fed.
    check(out.size() == 4 || (ended_by_eos && out.size() < 4), "got " + std::to_string(out.size()) + " tokens");
  });
  run("bad prompts are refused with a reason", [&] {
    for (const auto& prompt : {std::vector<int64_t>{}, std::vector<int64_t>{runner.manifest().vocab_size},
                               std::vector<int64_t>(static_cast<size_t>(runner.manifest().max_seq_len), 1)}) {
      try {
        runner.generate(prompt, 4);
        throw std::runtime_error("accepted a bad prompt of " + std::to_string(prompt.size()) + " tokens");
      } catch (const std::invalid_argument&) {
      }
    }
  });
  run("first logits are returned on request", [&] {
    auto generation = runner.generate(ints(cases.as_array().front().at("input_ids")), 2, true);
    check(static_cast<int64_t>(generation.first_logits.size()) == runner.manifest().vocab_size, "one per token");
  });
}

}  // namespace

int main(int argc, char** argv) {
  at::set_num_threads(1);
  json_tests();
  manifest_tests();
  const char* export_dir = argc > 1 ? argv[1] : std::getenv("SQLCOPILOT_TEST_EXPORT");
  const char* cases = argc > 2 ? argv[2] : std::getenv("SQLCOPILOT_TEST_CASES");
  if (export_dir && cases) {
    try {
      generation_tests(export_dir, cases);
    } catch (const std::exception& error) {  // the export itself could not be loaded
      ++failed;
      std::cout << "FAIL loading " << export_dir << ": " << error.what() << std::endl;
    }
  } else {
    std::cout << "generation tests not run: set SQLCOPILOT_TEST_EXPORT and SQLCOPILOT_TEST_CASES" << std::endl;
  }
  std::cout << passed << " passed, " << failed << " failed" << std::endl;
  return failed == 0 ? 0 : 1;
}
