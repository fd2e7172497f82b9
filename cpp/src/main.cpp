// sqlcopilot-runner: greedy or beam generation from an export folder, one JSON request per stdin line, one JSON
// reply per stdout line.
//
//   echo '{"id": 1, "input_ids": [1, 2, 3], "max_new_tokens": 8}' | sqlcopilot-runner --model work/export
//
// Reply: {"id":1,"output_ids":[...],"new_tokens":N,"prefill_ms":...,"decode_ms":...,"decode":"kernel",
// "prefix_reused":false} (output_ids are the new tokens only); "return_logits": true in a request adds
// "first_logits" and "step_logits" (the logits the first and second tokens were chosen from).
// Optional request fields:
//   "num_beams": N (1..16)  beam decoding; the reply holds "beams": [{"output_ids", "score", "normalized_score"}, ...]
//                           best first, "steps" (decode steps, each advancing every live beam), "new_tokens"
//                           (steps + 1: the tokens the longest beams decoded), "prefill_ms", "decode_ms", "decode",
//                           "prefix_reused", "walk_ms" (the part of decode_ms spent choosing candidates, the
//                           constraint included) and "constraint_checks" (candidates the constraint was asked about)
//   "batch": [request, ...] beam requests (each with the fields below; num_beams 1 when absent) decoded together:
//                           when they share a prefix ("prefix_len", the same ids: questions about one database) the
//                           kernels advance the beams of all of them in one step (Runner::beams_batch); the reply is
//                           {"id", "replies": [beam reply, ...] in order, "batch_ms"}
//   "prefix_len": P         input_ids[:P] is a reusable prefix (a database's schema): its cache is kept (the last
//                           few, least recently used dropped) and a later request with the same prefix prefills only
//                           the rest; "prefix_reused" says whether it did
//   "stop_ids": [...]       decoding ends after one of these tokens (kept in the output)
//   "stop_at_statement_end": true   adds the manifest's stop_token_ids (tokens holding ';' or a blank line)
//   "stop_at_eos": false    end-of-text is an ordinary token (decodes exactly max_new_tokens: how speed is measured)
//   "constraint": {"tables": {table: [column, ...]}}   (beams only) the schema constraint of
//                           sqlcopilot_core/sqlconstraint.py (cpp/include/sqlcopilot/constraint.h): every beam's tokens
//                           must stay a valid SQL prefix over these names, as beams.beam_search applies it; num_beams 1
//                           is constrained greedy decoding. The export's token_texts.json is read on the first one.
// A bad request gets {"id":..,"error":".."} and the runner keeps serving; a model it cannot load ends it with exit
// code 2.
// On a machine busy with other work, run it with OMP_WAIT_POLICY=PASSIVE (or --threads 1): spinning OpenMP threads
// that wait for a descheduled partner slow a 2-thread decode about twentyfold.
#include <ATen/Parallel.h>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>

#include "sqlcopilot/json.h"
#include "sqlcopilot/runner.h"

namespace {

const char* kUsage =
    "usage: sqlcopilot-runner --model EXPORT_DIR [--max-new-tokens N] [--threads N] [--decode auto|graph|kernel]\n"
    "                         [--prefix-cache ENTRIES] [--prefix-cache-mb MB]";

struct Options {
  std::string model;
  int64_t max_new_tokens = 128;
  int threads = 0;  // 0: one per core
  sqlcopilot::DecodeMode decode = sqlcopilot::DecodeMode::Auto;
  int64_t prefix_entries = 4;  // prompt prefixes whose caches are kept
  int64_t prefix_mb = 1024;    // and their largest total size
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
    else if (flag == "--prefix-cache") options.prefix_entries = std::stoll(value);
    else if (flag == "--prefix-cache-mb") options.prefix_mb = std::stoll(value);
    else throw std::invalid_argument("unknown option " + flag);
  }
  if (options.model.empty()) throw std::invalid_argument("--model is required");
  if (options.prefix_entries < 0 || options.prefix_mb < 0)
    throw std::invalid_argument("--prefix-cache and --prefix-cache-mb must be at least 0");
  return options;
}

sqlcopilot::Json ids_json(const std::vector<int64_t>& ids) {
  std::vector<sqlcopilot::Json> out;
  for (int64_t token : ids) out.push_back(sqlcopilot::Json::of_number(static_cast<double>(token)));
  return sqlcopilot::Json::of_array(std::move(out));
}

sqlcopilot::Json floats_json(const std::vector<float>& values) {
  std::vector<sqlcopilot::Json> out;
  for (float value : values) out.push_back(sqlcopilot::Json::of_number(value));
  return sqlcopilot::Json::of_array(std::move(out));
}

// The request's stop tokens, prefix and end-of-text rule.
sqlcopilot::DecodeOptions decode_options(const sqlcopilot::Json& request, const sqlcopilot::Manifest& manifest) {
  sqlcopilot::DecodeOptions options;
  if (request.has("prefix_len")) options.prefix_len = request.at("prefix_len").as_int();
  if (request.has("stop_ids"))
    for (const sqlcopilot::Json& token : request.at("stop_ids").as_array()) options.stop_ids.push_back(token.as_int());
  if (request.has("stop_at_statement_end") && request.at("stop_at_statement_end").as_bool())
    options.stop_ids.insert(options.stop_ids.end(), manifest.stop_token_ids.begin(), manifest.stop_token_ids.end());
  // stop_at_eos=false decodes exactly max_new_tokens tokens: how decode speed is measured
  options.stop_at_eos = !request.has("stop_at_eos") || request.at("stop_at_eos").as_bool();
  return options;
}

sqlcopilot::Json beams_reply(const sqlcopilot::Runner& runner, const sqlcopilot::BeamGeneration& found,
                             const sqlcopilot::Json& id) {
  using sqlcopilot::Json;
  std::vector<Json> beams;
  for (const auto& beam : found.beams)
    beams.push_back(Json::of_object({{"output_ids", ids_json(beam.tokens)},
                                     {"score", Json::of_number(beam.score)},
                                     {"normalized_score", Json::of_number(beam.normalized())}}));
  return Json::of_object({{"id", id},
                          {"beams", Json::of_array(std::move(beams))},
                          {"steps", Json::of_number(static_cast<double>(found.steps))},
                          {"new_tokens", Json::of_number(static_cast<double>(found.beams.empty() ? 0 : found.steps + 1))},
                          {"prefill_ms", Json::of_number(found.prefill_ms)},
                          {"decode_ms", Json::of_number(found.decode_ms)},
                          {"walk_ms", Json::of_number(found.walk_ms)},
                          {"constraint_checks", Json::of_number(static_cast<double>(found.constraint_checks))},
                          {"decode", Json::of_string(runner.decode_path())},
                          {"prefix_reused", Json::of_bool(found.prefix_reused)}});
}

// A request's prompt, token limit, beams (1 when absent) and options.
sqlcopilot::BeamRequest beam_request(sqlcopilot::Runner& runner, const sqlcopilot::Json& request,
                                     int64_t default_max_new_tokens) {
  using sqlcopilot::Json;
  sqlcopilot::BeamRequest out;
  for (const Json& token : request.at("input_ids").as_array()) out.input_ids.push_back(token.as_int());
  out.max_new_tokens = request.has("max_new_tokens") ? request.at("max_new_tokens").as_int() : default_max_new_tokens;
  out.num_beams = request.has("num_beams") ? request.at("num_beams").as_int() : 1;
  out.options = decode_options(request, runner.manifest());
  if (request.has("constraint")) out.options.constraint = runner.constraint(request.at("constraint"));
  return out;
}

// {"batch": [request, ...]}: beam requests decoded together (Runner::beams_batch); the reply's "replies" hold one
// beam reply per request, in order, and "batch_ms" the whole batch's time.
sqlcopilot::Json batch_reply(sqlcopilot::Runner& runner, const sqlcopilot::Json& request, int64_t default_max_new_tokens,
                             const sqlcopilot::Json& id) {
  using sqlcopilot::Json;
  std::vector<sqlcopilot::BeamRequest> requests;
  const auto& items = request.at("batch").as_array();
  for (size_t i = 0; i < items.size(); ++i) {
    try {
      requests.push_back(beam_request(runner, items[i], default_max_new_tokens));
    } catch (const std::exception& error) {
      throw std::invalid_argument("batch prompt " + std::to_string(i) + ": " + error.what());
    }
  }
  const auto start = std::chrono::steady_clock::now();
  const auto found = runner.beams_batch(requests);
  const double batch_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  std::vector<Json> replies;
  for (const auto& generation : found) replies.push_back(beams_reply(runner, generation, Json()));
  return Json::of_object({{"id", id}, {"replies", Json::of_array(std::move(replies))},
                          {"batch_ms", Json::of_number(batch_ms)}});
}

sqlcopilot::Json reply_for(sqlcopilot::Runner& runner, const std::string& line, int64_t default_max_new_tokens) {
  using sqlcopilot::Json;
  Json id;
  try {
    Json request = Json::parse(line);
    if (request.has("id")) id = request.at("id");
    if (request.has("batch")) return batch_reply(runner, request, default_max_new_tokens, id);
    const auto beam = beam_request(runner, request, default_max_new_tokens);
    const std::vector<int64_t>& input_ids = beam.input_ids;
    const int64_t max_new = beam.max_new_tokens;
    const auto& options = beam.options;
    if (request.has("num_beams"))
      return beams_reply(runner, runner.beams(input_ids, beam.num_beams, max_new, options), id);
    const bool want_logits = request.has("return_logits") && request.at("return_logits").as_bool();
    auto generation = runner.generate(input_ids, max_new, want_logits, options);
    std::map<std::string, Json> reply{{"id", id},
                                      {"output_ids", ids_json(generation.output_ids)},
                                      {"new_tokens", Json::of_number(static_cast<double>(generation.output_ids.size()))},
                                      {"prefill_ms", Json::of_number(generation.prefill_ms)},
                                      {"decode_ms", Json::of_number(generation.decode_ms)},
                                      {"decode", Json::of_string(runner.decode_path())},
                                      {"prefix_reused", Json::of_bool(generation.prefix_reused)}};
    if (want_logits) {
      reply["first_logits"] = floats_json(generation.first_logits);
      reply["step_logits"] = floats_json(generation.step_logits);
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
    runner.set_prefix_cache(static_cast<size_t>(options.prefix_entries), options.prefix_mb << 20);
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
