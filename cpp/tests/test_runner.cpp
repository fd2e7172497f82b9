// C++ tests of the runner library, run by ctest. The manifest and JSON checks need nothing; the generation checks
// run when SQLCOPILOT_TEST_EXPORT names an export folder and SQLCOPILOT_TEST_CASES a JSON file of
// [{"input_ids": [...], "max_new_tokens": N, "expected": [...]}] whose expected tokens come from transformers
// (tests/cpp/test_runner.py writes both).
#include <ATen/Parallel.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>

#include "sqlcopilot/beams.h"
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
  run("a version-2 manifest loads, without stop tokens", [] {
    auto manifest = sqlcopilot::load_manifest(manifest_dir("v2", manifest_text(sqlcopilot::kExportFormat, "2")));
    check(manifest.stop_token_ids.empty() && manifest.eos_token_id == 9, "fields");
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

// Beam search bookkeeping on given logits; the expected candidates are sqlcopilot_core.beams.beam_search's.
void beam_search_tests() {
  using sqlcopilot::beam_search;
  auto zeros = [](const std::vector<int64_t>& tokens, const std::vector<int64_t>&) {
    return at::zeros({static_cast<int64_t>(tokens.size()), 3});
  };
  auto tokens_of = [](const sqlcopilot::BeamSearchResult& result) {
    std::vector<std::vector<int64_t>> out;
    for (const auto& hypothesis : result.hypotheses) out.push_back(hypothesis.tokens);
    return out;
  };
  using Tokens = std::vector<std::vector<int64_t>>;
  run("beam search walks equal scores by flat index", [&] {
    check(tokens_of(beam_search(at::zeros({1, 3}), zeros, 2, 2, -1, {})) == Tokens{{0, 0}, {0, 1}}, "two steps");
    check(tokens_of(beam_search(at::zeros({1, 3}), zeros, 3, 4, -1, {})) == Tokens{{0, 0, 0, 0}, {0, 0, 0, 1},
                                                                                   {0, 0, 0, 2}}, "four steps");
  });
  run("beam search leaves end-of-text out and keeps a stop token", [&] {
    auto ended = beam_search(at::zeros({1, 3}), zeros, 2, 3, 0, {});
    check(tokens_of(ended) == Tokens{{}, {1}}, "end-of-text excluded");
    check(std::abs(ended.hypotheses[0].score + std::log(3.0)) < 1e-6, "score of one token");
    check(tokens_of(beam_search(at::zeros({1, 3}), zeros, 2, 3, -1, {1})) == Tokens{{1}, {0, 1}}, "stop kept");
  });
  run("beam search equals the Python bookkeeping on random logits", [&] {
  const std::vector<float> first{0.8032760620117188f, 0.17483338713645935f, 0.08897809684276581f, -0.6137180328369141f, 0.04618244990706444f};
  const std::vector<std::vector<float>> steps{
      {-0.3397901654243469f, 0.22252526879310608f, 0.3169765770435333f, 1.1059221029281616f, -0.47603094577789307f, -0.2929125428199768f, -0.3480893075466156f, 0.3487463593482971f, 0.037066876888275146f, -0.06768558919429779f, 0.4290330410003662f, -0.8681192398071289f, -0.2712145745754242f, 0.1416284739971161f, 0.1295178234577179f, 0.68141108751297f, -0.9583004117012024f, 0.06392408162355423f, 0.6589139103889465f, 0.8194591999053955f},
      {-0.4554239511489868f, 2.2124183177948f, -0.3769857585430145f, -0.14368392527103424f, -1.5834941864013672f, 1.396010398864746f, -1.0318877696990967f, 1.139088749885559f, 0.7247462868690491f, 1.0795444250106812f, 1.7302472591400146f, -1.4712682962417603f, -0.6336275339126587f, -0.7893383502960205f, -0.8977332711219788f, -1.887571930885315f, 0.33604028820991516f, 0.5009264945983887f, 0.54664146900177f, -0.2644413411617279f},
      {1.985876202583313f, 0.3624759018421173f, -1.3898112773895264f, -0.1593458503484726f, 0.6622939705848694f, 0.6229128241539001f, 0.44629180431365967f, 0.7688117027282715f, 1.5659347772598267f, 0.5320292711257935f, -1.4387000799179077f, 1.6551365852355957f, 1.1658138036727905f, 0.5865955352783203f, 0.7771251201629639f, 0.4042048156261444f, -0.8635967969894409f, -0.20782116055488586f, 0.6749412417411804f, -0.32824742794036865f},
      {-1.1930874586105347f, -0.1355794221162796f, 0.2841276526451111f, -0.7730647325515747f, -0.004910103976726532f, 1.1813240051269531f, 0.749763011932373f, 1.4698725938796997f, -0.7927440404891968f, 1.054685354232788f, 1.2911229133605957f, 0.15998074412345886f, -0.19182737171649933f, -0.12418173998594284f, 0.9562766551971436f, -0.11481881886720657f, -0.4096315801143646f, -0.03513122349977493f, -0.5313589572906494f, 0.07762913405895233f},
      {1.7882674932479858f, 1.2003782987594604f, -0.10646245628595352f, -0.7082407474517822f, -0.6555156111717224f, -1.7448302507400513f, -1.0484509468078613f, 0.32687434554100037f, 2.269596576690674f, -1.2888683080673218f, 2.35880970954895f, 1.4992918968200684f, -0.35192355513572693f, -0.9714972376823425f, -1.576499342918396f, -0.6823283433914185f, 0.6351849436759949f, -0.025467637926340103f, -0.3331815004348755f, 1.9829663038253784f},
      {0.3362199068069458f, 0.5766449570655823f, 0.20281292498111725f, 1.5771853923797607f, 1.1798197031021118f, 1.3848446607589722f, -0.5435452461242676f, 0.258341521024704f, 0.42427095770835876f, -0.9968201518058777f, -0.943638026714325f, -0.9895361661911011f, 2.685619354248047f, 0.4110358953475952f, -0.18234893679618835f, -0.447324275970459f, -1.1935678720474243f, 0.04493316262960434f, 1.0485483407974243f, -1.5466477870941162f},
  };
  const std::vector<std::vector<int64_t>> tokens{{0, 3}, {2, 0, 3}, {}, {3}};
  const std::vector<double> scores{-1.842672049999237, -4.095452785491943, -1.7630155086517334, -2.4229159355163574};
    size_t next = 0;
    auto step = [&](const std::vector<int64_t>& fed, const std::vector<int64_t>&) {
      auto logits = at::tensor(steps.at(next++)).view({4, 5});
      return logits.narrow(0, 0, static_cast<int64_t>(fed.size()));
    };
    auto result = beam_search(at::tensor(first).view({1, 5}), step, 4, 5, 4, {3});
    check(tokens_of(result) == tokens, "tokens");
    for (size_t i = 0; i < scores.size(); ++i) check(std::abs(result.hypotheses[i].score - scores[i]) < 1e-9, "score");
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
  run("one beam gives the greedy tokens, end-of-text left out", [&] {
    for (const Json& item : cases.as_array()) {
      const auto prompt = ints(item.at("input_ids"));
      auto greedy = runner.generate(prompt, 12).output_ids;
      if (!greedy.empty() && greedy.back() == runner.manifest().eos_token_id) greedy.pop_back();
      const auto beams = runner.beams(prompt, 1, 12).beams;
      check(beams.size() == 1 && beams[0].tokens == greedy, "one beam");
    }
  });
  run("beams come best first, at most num_beams of them", [&] {
    const auto found = runner.beams(ints(cases.as_array().front().at("input_ids")), 4, 12);
    check(found.beams.size() == 4 && found.steps >= 1, "four beams");
    for (size_t i = 1; i < found.beams.size(); ++i)
      check(found.beams[i - 1].normalized() >= found.beams[i].normalized(), "order");
  });
  run("a reused prefix gives the tokens of a full prefill", [&] {
    const auto prompt = ints(cases.as_array().back().at("input_ids"));
    sqlcopilot::DecodeOptions options;
    options.prefix_len = static_cast<int64_t>(prompt.size()) / 2;
    const auto full = runner.generate(prompt, 12).output_ids;
    const auto first = runner.generate(prompt, 12, false, options);
    const auto again = runner.generate(prompt, 12, false, options);
    check(!first.prefix_reused && again.prefix_reused, "second request reuses the prefix");
    check(first.output_ids == full && again.output_ids == full, "same tokens");
  });
  run("bad beam counts are refused", [&] {
    for (int64_t count : {0, 17}) {
      try {
        runner.beams({1, 2, 3}, count, 4);
        throw std::runtime_error("accepted num_beams " + std::to_string(count));
      } catch (const std::invalid_argument& error) {
        check(contains(error.what(), "num_beams"), error.what());
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
  beam_search_tests();
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
