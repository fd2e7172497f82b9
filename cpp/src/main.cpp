// sqlcopilot-runner: greedy generation from an export folder, one JSON request per stdin line, one JSON reply per
// stdout line.
//
//   echo '{"id": 1, "input_ids": [1, 2, 3], "max_new_tokens": 8}' | sqlcopilot-runner --model work/export
//
// Reply: {"id":1,"output_ids":[...],"new_tokens":N,"prefill_ms":...,"decode_ms":...} (output_ids are the new
// tokens only); "return_logits": true in a request adds "first_logits" and "step_logits" (the logits the first and
// second tokens were chosen from). A bad request gets {"id":..,"error":".."}
// and the runner keeps serving; a model it cannot load ends it with exit code 2.
// On a machine busy with other work, run it with OMP_WAIT_POLICY=PASSIVE (or --threads 1): spinning OpenMP threads
// that wait for a descheduled partner slow a 2-thread decode about twentyfold.
#include <ATen/Parallel.h>

#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>

#include "sqlcopilot/json.h"
#include "sqlcopilot/runner.h"

namespace {

const char* kUsage =
    "usage: sqlcopilot-runner --model EXPORT_DIR [--max-new-tokens N] [--threads N] [--decode auto|graph|kernel]";

struct Options {
  std::string model;
  int64_t max_new_tokens = 128;
  int threads = 0;  // 0: one per core
  sqlcopilot::DecodeMode decode = sqlcopilot::DecodeMode::Auto;
};

Options parse_options(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::cout << kUsage << std::endl;
      std::exit(0);
    }
    if (i + 1 >= argc) throw std::invalid_argument("missing value after " + flag);
    const std::string value = argv[++i];
    if (flag == "--model") options.model = value;
    else if (flag == "--max-new-tokens") options.max_new_tokens = std::stoll(value);
    else if (flag == "--threads") options.threads = std::stoi(value);
    else if (flag == "--decode") options.decode = sqlcopilot::parse_decode_mode(value);
    else throw std::invalid_argument("unknown option " + flag);
  }
  if (options.model.empty()) throw std::invalid_argument("--model is required");
  return options;
}

sqlcopilot::Json reply_for(sqlcopilot::Runner& runner, const std::string& line, int64_t default_max_new_tokens) {
  using sqlcopilot::Json;
  Json id;
  try {
    Json request = Json::parse(line);
    if (request.has("id")) id = request.at("id");
    std::vector<int64_t> input_ids;
    for (const Json& token : request.at("input_ids").as_array()) input_ids.push_back(token.as_int());
    const int64_t max_new = request.has("max_new_tokens") ? request.at("max_new_tokens").as_int()
                                                          : default_max_new_tokens;
    const bool want_logits = request.has("return_logits") && request.at("return_logits").as_bool();
    // stop_at_eos=false decodes exactly max_new_tokens tokens: how decode speed is measured
    const bool stop_at_eos = !request.has("stop_at_eos") || request.at("stop_at_eos").as_bool();
    auto generation = runner.generate(input_ids, max_new, want_logits, stop_at_eos);
    std::vector<Json> output;
    for (int64_t token : generation.output_ids) output.push_back(Json::of_number(static_cast<double>(token)));
    std::map<std::string, Json> reply{{"id", id},
                                      {"output_ids", Json::of_array(std::move(output))},
                                      {"new_tokens", Json::of_number(static_cast<double>(generation.output_ids.size()))},
                                      {"prefill_ms", Json::of_number(generation.prefill_ms)},
                                      {"decode_ms", Json::of_number(generation.decode_ms)},
                                      {"decode", Json::of_string(runner.decode_path())}};
    if (want_logits) {
      std::vector<Json> logits;
      for (float value : generation.first_logits) logits.push_back(Json::of_number(value));
      reply["first_logits"] = Json::of_array(std::move(logits));
      std::vector<Json> step;
      for (float value : generation.step_logits) step.push_back(Json::of_number(value));
      reply["step_logits"] = Json::of_array(std::move(step));
    }
    return Json::of_object(std::move(reply));
  } catch (const std::exception& error) {  // JsonError, invalid_argument and c10::Error: answer and keep serving
    return Json::of_object({{"id", id}, {"error", Json::of_string(error.what())}});
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  try {
    options = parse_options(argc, argv);
  } catch (const std::exception& error) {
    std::cerr << "sqlcopilot-runner: " << error.what() << "\n" << kUsage << std::endl;
    return 1;
  }
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_interop_threads(1);
  at::set_num_threads(options.threads > 0 ? options.threads : cores);
  try {
    sqlcopilot::Runner runner(options.model, options.decode);
    const auto& manifest = runner.manifest();
    std::cerr << "sqlcopilot-runner: " << manifest.num_layers << "-layer " << manifest.dtype << " model from "
              << options.model << ", " << at::get_num_threads() << " thread(s)"
              << ", " << runner.decode_path() << " decoding" << (runner.packed() ? ", packed weights" : "")
              << ", checksums of " << manifest.checked_bytes << " bytes verified in " << manifest.check_ms << " ms"
              << std::endl;
    std::string line;
    while (std::getline(std::cin, line)) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      std::cout << reply_for(runner, line, options.max_new_tokens).dump() << std::endl;
    }
  } catch (const sqlcopilot::ManifestError& error) {
    std::cerr << "sqlcopilot-runner: " << error.what() << std::endl;
    return 2;
  } catch (const c10::Error& error) {
    std::cerr << "sqlcopilot-runner: cannot load " << options.model << ": " << error.what_without_backtrace()
              << std::endl;
    return 2;
  } catch (const std::runtime_error& error) {
    std::cerr << "sqlcopilot-runner: " << error.what() << std::endl;
    return 2;
  }
  return 0;
}
