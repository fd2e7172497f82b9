#include "sqlcopilot/runner.h"

#include <ATen/Context.h>
#include <torch/csrc/jit/runtime/graph_executor.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>
#include <unordered_set>

#include "sqlcopilot/json.h"
#include "sqlcopilot/kernels.h"
#include "sqlcopilot/sha256.h"

namespace sqlcopilot {

static_assert(kMaxBeams <= KernelDecoder::kMaxRows, "the kernels decode every beam in one step");

namespace {

const char* kRerun = "; re-run the export stage";

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ManifestError(path.string() + ": cannot be read" + kRerun);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

double elapsed_ms(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

int64_t greedy_token(const at::Tensor& logits) { return logits.argmax(-1).item<int64_t>(); }

// ids[0..count) as a [1, count] tensor the graph can keep
at::Tensor ids_tensor(const int64_t* ids, int64_t count) {
  return torch::from_blob(const_cast<int64_t*>(ids), {1, count}, torch::kLong).clone();
}

void check_num_beams(int64_t num_beams) {
  if (num_beams < 1 || num_beams > kMaxBeams)
    throw std::invalid_argument("num_beams " + std::to_string(num_beams) + " is outside 1.." +
                                std::to_string(kMaxBeams));
}

std::vector<float> float_values(const at::Tensor& logits) {
  auto flat = logits.to(torch::kFloat).contiguous().view(-1);
  return std::vector<float>(flat.data_ptr<float>(), flat.data_ptr<float>() + flat.numel());
}

// Every file the manifest lists, present with its size and sha256; returns the bytes checked.
int64_t verify_files(const std::filesystem::path& dir, const Json& files) {
  int64_t checked = 0;
  for (const auto& [name, expected] : files.as_object()) {
    const auto file = dir / name;
    if (!std::filesystem::is_regular_file(file)) throw ManifestError(file.string() + ": listed file missing" + kRerun);
    const auto size = static_cast<int64_t>(std::filesystem::file_size(file));
    if (size != expected.at("bytes").as_int() || sha256_file(file) != expected.at("sha256").as_string())
      throw ManifestError(file.string() + ": checksum differs from the manifest (the file changed after export)" +
                          kRerun);
    checked += size;
  }
  return checked;
}

}  // namespace

Manifest load_manifest(const std::filesystem::path& dir) {
  const auto path = dir / "manifest.json";
  if (!std::filesystem::exists(path)) throw ManifestError(path.string() + ": not found" + kRerun);
  Json json;
  try {
    json = Json::parse(read_file(path));
    const std::string format = json.has("format") && json.at("format").is_string() ? json.at("format").as_string()
                                                                                     : "";
    if (format != kExportFormat)
      throw ManifestError(path.string() + ": format '" + format + "' is not '" + kExportFormat + "'" + kRerun);
    const int64_t version = json.at("format_version").as_int();
    if (version < kOldestReadableVersion || version > kExportFormatVersion)
      throw ManifestError(path.string() + ": format_version " + std::to_string(version) +
                          " is not understood (this runner reads versions " + std::to_string(kOldestReadableVersion) +
                          " to " + std::to_string(kExportFormatVersion) + ")" + kRerun);
    Manifest manifest;
    manifest.dir = dir;
    manifest.graph = json.at("graph").as_string();
    manifest.dtype = json.at("dtype").as_string();
    manifest.max_seq_len = json.at("max_seq_len").as_int();
    manifest.vocab_size = json.at("vocab_size").as_int();
    manifest.eos_token_id = json.at("eos_token_id").as_int();
    manifest.num_layers = json.at("num_layers").as_int();
    if (version >= 3)
      for (const Json& id : json.at("stop_token_ids").as_array()) manifest.stop_token_ids.push_back(id.as_int());
    if (manifest.dtype != "float32" && manifest.dtype != "bfloat16")
      throw ManifestError(path.string() + ": dtype '" + manifest.dtype + "' is not float32 or bfloat16" + kRerun);
    if (!std::filesystem::exists(dir / manifest.graph))
      throw ManifestError((dir / manifest.graph).string() + ": graph file missing" + kRerun);
    const Json& files = json.at("files");
    if (!files.has(manifest.graph))
      throw ManifestError(path.string() + ": 'files' lists no checksum of the graph " + manifest.graph + kRerun);
    const auto start = std::chrono::steady_clock::now();
    manifest.checked_bytes = verify_files(dir, files);
    manifest.check_ms = elapsed_ms(start);
    return manifest;
  } catch (const JsonError& error) {
    throw ManifestError(path.string() + ": " + error.what() + kRerun);
  }
}

DecodeMode parse_decode_mode(const std::string& name) {
  if (name == "auto") return DecodeMode::Auto;
  if (name == "graph") return DecodeMode::Graph;
  if (name == "kernel") return DecodeMode::Kernel;
  throw std::invalid_argument("decode mode '" + name + "' is not auto, graph or kernel");
}

Runner::Runner(const std::filesystem::path& export_dir, DecodeMode mode) : manifest_(load_manifest(export_dir)) {
  // The graph is already written for speed (fused projections, in-place cache); the profiling executor would only
  // re-specialise it for every prompt length. Python's ExportedModel runs it the same way.
  torch::jit::setGraphExecutorOptimize(false);
  module_ = torch::jit::load((export_dir / manifest_.graph).string(), torch::kCPU);
  module_.eval();
  const bool supported = kernel_decode_supported(manifest_.dtype);
  if (mode == DecodeMode::Kernel && !supported)
    throw std::runtime_error("decode mode 'kernel' needs AVX-512F" +
                             std::string(manifest_.dtype == "bfloat16" ? ", AVX-512BW and AVX-512 BF16" : "") +
                             " for " + manifest_.dtype + ", which this CPU lacks; use --decode graph");
  if (mode != DecodeMode::Graph && supported)
    kernel_ = std::make_unique<KernelDecoder>(module_, manifest_.dtype);  // keeps the plain weights it reads
  if (at::hasMKLDNN()) {
    module_.run_method("pack");
    packed_ = true;
  }
  caches_ = module_.run_method("new_caches");
  cache_tensors_ = caches_.toTensorVector();
}

Runner::~Runner() = default;

void Runner::check_prompt(const std::vector<int64_t>& input_ids, const DecodeOptions& options) const {
  const auto prompt_length = static_cast<int64_t>(input_ids.size());
  if (prompt_length == 0) throw std::invalid_argument("input_ids is empty");
  if (prompt_length >= manifest_.max_seq_len)
    throw std::invalid_argument("prompt of " + std::to_string(prompt_length) + " tokens: this export holds at most " +
                                std::to_string(manifest_.max_seq_len - 1) + " (max_seq_len)");
  for (int64_t id : input_ids)
    if (id < 0 || id >= manifest_.vocab_size)
      throw std::invalid_argument("token id " + std::to_string(id) + " is outside the vocabulary of " +
                                  std::to_string(manifest_.vocab_size));
  if (options.prefix_len < 0 || options.prefix_len > prompt_length)
    throw std::invalid_argument("prefix_len " + std::to_string(options.prefix_len) + " is outside 0.." +
                                std::to_string(prompt_length) + " (the prompt's length)");
}

std::shared_ptr<SchemaConstraint> Runner::constraint(const Json& spec) {
  if (!constraints_) {
    const auto texts = manifest_.dir / "token_texts.json";
    if (!std::filesystem::is_regular_file(texts))
      throw std::invalid_argument(texts.string() + ": not found; the schema constraint needs each token's text, "
                                  "which exports made before the C++ constraint lack" + std::string(kRerun));
    try {
      constraints_ = std::make_unique<SchemaConstraintCache>(ConstraintVocabulary::load(manifest_.dir));
    } catch (const std::exception& error) {
      throw std::invalid_argument(texts.string() + ": cannot be used for the schema constraint (" + error.what() +
                                  ")" + kRerun);
    }
  }
  try {
    return constraints_->get(spec);
  } catch (const JsonError& error) {
    throw std::invalid_argument(std::string("constraint: ") + error.what() +
                                " (expected {\"tables\": {table: [column, ...]}})");
  }
}

void Runner::set_prefix_cache(size_t entries, int64_t max_bytes) {
  max_prefixes_ = entries;
  max_prefix_bytes_ = max_bytes;
  while (prefixes_.size() > max_prefixes_) prefixes_.pop_back();
}

at::Tensor Runner::prefill(const std::vector<int64_t>& input_ids, int64_t prefix_len, bool* reused) {
  const auto length = static_cast<int64_t>(input_ids.size());
  *reused = false;
  if (prefix_len == 0) return module_.get_method("prefill")({ids_tensor(input_ids.data(), length), caches_}).toTensor();
  if (!module_.find_method("prefill_at"))
    throw std::invalid_argument("this export's graph has no prefill_at (it predates prefix reuse); re-run the export "
                                "stage");
  const at::Tensor logits = prefill_prefix({input_ids.begin(), input_ids.begin() + prefix_len}, reused);
  if (prefix_len == length) return logits;
  return module_.get_method("prefill_at")({ids_tensor(input_ids.data() + prefix_len, length - prefix_len), prefix_len,
                                          caches_}).toTensor();
}

at::Tensor Runner::prefill_prefix(const std::vector<int64_t>& prefix, bool* reused) {
  const auto prefix_len = static_cast<int64_t>(prefix.size());
  *reused = false;
  auto kept = std::find_if(prefixes_.begin(), prefixes_.end(), [&](const Prefix& p) { return p.ids == prefix; });
  if (kept != prefixes_.end()) {
    for (size_t i = 0; i < cache_tensors_.size(); ++i) cache_tensors_[i].narrow(2, 0, prefix_len).copy_(kept->caches[i]);
    prefixes_.splice(prefixes_.begin(), prefixes_, kept);
    *reused = true;
    return kept->logits;
  }
  at::Tensor logits = module_.get_method("prefill_at")({ids_tensor(prefix.data(), prefix_len), int64_t{0}, caches_})
                          .toTensor();
  remember_prefix(prefix, logits);
  return logits;
}

void Runner::remember_prefix(std::vector<int64_t> ids, const at::Tensor& logits) {
  if (max_prefixes_ == 0) return;
  Prefix entry;
  const auto length = static_cast<int64_t>(ids.size());
  entry.ids = std::move(ids);
  entry.logits = logits.clone();
  for (const at::Tensor& cache : cache_tensors_) {
    entry.caches.push_back(cache.narrow(2, 0, length).clone());
    entry.bytes += static_cast<int64_t>(entry.caches.back().nbytes());
  }
  if (entry.bytes > max_prefix_bytes_) return;
  prefixes_.push_front(std::move(entry));
  int64_t total = 0;
  for (const Prefix& kept : prefixes_) total += kept.bytes;
  while (prefixes_.size() > max_prefixes_ || total > max_prefix_bytes_) {
    total -= prefixes_.back().bytes;
    prefixes_.pop_back();
  }
}

Generation Runner::generate(const std::vector<int64_t>& input_ids, int64_t max_new_tokens, bool want_logits,
                            const DecodeOptions& options) {
  check_prompt(input_ids, options);
  const auto prompt_length = static_cast<int64_t>(input_ids.size());
  Generation result;
  if (max_new_tokens <= 0) return result;
  if (options.constraint)
    throw std::invalid_argument("a schema constraint applies to beam decoding: ask for num_beams (1: constrained "
                                "greedy decoding)");
  const std::unordered_set<int64_t> stop(options.stop_ids.begin(), options.stop_ids.end());

  c10::InferenceMode inference;
  auto start = std::chrono::steady_clock::now();
  auto logits = prefill(input_ids, options.prefix_len, &result.prefix_reused);
  result.output_ids.push_back(greedy_token(logits));
  result.prefill_ms = elapsed_ms(start);
  if (want_logits) result.first_logits = float_values(logits);

  start = std::chrono::steady_clock::now();
  auto decode_step = module_.get_method("decode_step");
  for (int64_t pos = prompt_length; static_cast<int64_t>(result.output_ids.size()) < max_new_tokens; ++pos) {
    const int64_t last = result.output_ids.back();
    if ((options.stop_at_eos && last == manifest_.eos_token_id) || stop.count(last) || pos >= manifest_.max_seq_len)
      break;
    const bool first_step = want_logits && result.step_logits.empty();
    if (kernel_) {
      result.output_ids.push_back(kernel_->step(last, pos, cache_tensors_));
      if (first_step) result.step_logits = kernel_->last_logits();
    } else {
      logits = decode_step({last, pos, caches_}).toTensor();
      result.output_ids.push_back(greedy_token(logits));
      if (first_step) result.step_logits = float_values(logits);
    }
  }
  result.decode_ms = elapsed_ms(start);
  return result;
}

BeamGeneration Runner::beams(const std::vector<int64_t>& input_ids, int64_t num_beams, int64_t max_new_tokens,
                             const DecodeOptions& options) {
  check_prompt(input_ids, options);
  check_num_beams(num_beams);
  if (!kernel_ && !module_.find_method("decode_beams"))
    throw std::invalid_argument("this export's graph has no decode_beams (it predates beam decoding); re-run the "
                                "export stage");
  BeamGeneration result;
  if (max_new_tokens <= 0) return result;
  const auto prompt_length = static_cast<int64_t>(input_ids.size());
  const std::unordered_set<int64_t> stop(options.stop_ids.begin(), options.stop_ids.end());

  c10::InferenceMode inference;
  auto start = std::chrono::steady_clock::now();
  const at::Tensor first = prefill(input_ids, options.prefix_len, &result.prefix_reused);
  result.prefill_ms = elapsed_ms(start);

  start = std::chrono::steady_clock::now();
  // a full cache ends decoding like the token limit: the last token is chosen from the last position, never fed
  const int64_t limit = std::min(max_new_tokens, manifest_.max_seq_len - prompt_length + 1);
  const int64_t capacity = std::max<int64_t>(1, limit - 1);  // tokens a beam feeds
  std::vector<at::Tensor> beam_caches;
  c10::List<at::Tensor> beam_cache_list;
  for (const at::Tensor& cache : cache_tensors_) {
    beam_caches.push_back(at::empty({num_beams, cache.size(1), capacity, cache.size(3)}, cache.options()));
    beam_cache_list.push_back(beam_caches.back());
  }
  const c10::IValue beam_cache_value(beam_cache_list);
  int64_t fed = 0;  // slots written in every beam's cache
  auto step = [&](const std::vector<int64_t>& tokens, const std::vector<int64_t>& parents) {
    const auto rows = static_cast<int64_t>(tokens.size());
    if (fed > 0) {  // row j becomes a copy of row parents[j]: at most max_new_tokens slots, never the prompt
      const auto index = torch::tensor(parents, torch::kLong);
      for (at::Tensor& cache : beam_caches) {
        at::Tensor filled = cache.narrow(2, 0, fed);
        filled.narrow(0, 0, rows).copy_(filled.index_select(0, index));
      }
    }
    at::Tensor logits;
    if (kernel_) {
      logits = kernel_->step_rows(tokens, prompt_length + fed, prompt_length, cache_tensors_, beam_caches);
    } else {
      logits = module_.get_method("decode_beams")({torch::tensor(tokens, torch::kLong), prompt_length + fed,
                                                   prompt_length, caches_, beam_cache_value}).toTensor();
    }
    ++fed;
    return logits;
  };
  auto found = beam_search(first, step, num_beams, limit, options.stop_at_eos ? manifest_.eos_token_id : -1, stop,
                           nullptr, options.constraint.get());
  result.beams = std::move(found.hypotheses);
  result.steps = found.steps;
  result.walk_ms = found.walk_ms;
  result.constraint_checks = found.constraint_checks;
  result.decode_ms = elapsed_ms(start);
  return result;
}

std::vector<BeamGeneration> Runner::beams_batch(const std::vector<BeamRequest>& requests) {
  std::vector<BeamGeneration> results;
  if (requests.empty()) return results;
  const BeamRequest& head = requests.front();
  const int64_t prefix_len = head.options.prefix_len;
  bool together = kernel_ && requests.size() > 1 && prefix_len > 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    const BeamRequest& request = requests[i];
    try {
      check_prompt(request.input_ids, request.options);
      check_num_beams(request.num_beams);
    } catch (const std::invalid_argument& error) {
      throw std::invalid_argument("batch prompt " + std::to_string(i) + ": " + error.what());
    }
    together = together && request.options.prefix_len == prefix_len &&
               std::equal(head.input_ids.begin(), head.input_ids.begin() + prefix_len, request.input_ids.begin());
  }
  if (!together) {
    for (const BeamRequest& request : requests)
      results.push_back(beams(request.input_ids, request.num_beams, request.max_new_tokens, request.options));
    return results;
  }
  results.resize(requests.size());

  c10::InferenceMode inference;
  auto start = std::chrono::steady_clock::now();
  bool reused = false;
  const at::Tensor prefix_logits = prefill_prefix({head.input_ids.begin(), head.input_ids.begin() + prefix_len},
                                                  &reused);
  const double prefix_ms = elapsed_ms(start);

  // Row caches: a prompt's own tokens (after the prefix) and then what its beams generate, kMaxRows rows.
  auto limit_of = [&](const BeamRequest& r) {  // a full cache ends decoding like the token limit
    return std::min(r.max_new_tokens, manifest_.max_seq_len - static_cast<int64_t>(r.input_ids.size()) + 1);
  };
  int64_t capacity = 1;
  for (const BeamRequest& r : requests)
    capacity = std::max(capacity, static_cast<int64_t>(r.input_ids.size()) - prefix_len + limit_of(r) - 1);
  std::vector<at::Tensor> row_caches;
  for (const at::Tensor& cache : cache_tensors_)
    row_caches.push_back(at::empty({kMaxBeams, cache.size(1), capacity, cache.size(3)}, cache.options()));

  struct Active {
    size_t index;                         // of the request
    std::vector<int64_t> rows;            // the row cache rows it holds (num_beams of them)
    std::unique_ptr<BeamSearch> search;
    int64_t filled = 0;                   // slots written in its rows: own prompt tokens, then fed tokens
    std::chrono::steady_clock::time_point started;
  };
  std::vector<Active> active;
  std::vector<int64_t> free_rows;
  for (int64_t row = kMaxBeams - 1; row >= 0; --row) free_rows.push_back(row);
  size_t next = 0;
  auto finish = [&](Active& a) {
    auto found = a.search->result();
    BeamGeneration& out = results[a.index];
    out.beams = std::move(found.hypotheses);
    out.steps = found.steps;
    out.walk_ms = found.walk_ms;
    out.constraint_checks = found.constraint_checks;
    out.decode_ms = elapsed_ms(a.started);
    free_rows.insert(free_rows.end(), a.rows.begin(), a.rows.end());
  };
  while (true) {
    // start prompts while rows are free
    while (next < requests.size() && static_cast<int64_t>(free_rows.size()) >= requests[next].num_beams) {
      const BeamRequest& request = requests[next];
      const auto begin = std::chrono::steady_clock::now();
      const auto length = static_cast<int64_t>(request.input_ids.size());
      const int64_t own = length - prefix_len;
      at::Tensor first = prefix_logits;
      Active a;
      a.index = next++;
      for (int64_t b = 0; b < request.num_beams; ++b) {
        a.rows.push_back(free_rows.back());
        free_rows.pop_back();
      }
      if (own > 0) {  // the prompt's own tokens go through the shared cache after the prefix, then to its first row
        first = module_.get_method("prefill_at")({ids_tensor(request.input_ids.data() + prefix_len, own), prefix_len,
                                                  caches_}).toTensor();
        for (size_t i = 0; i < cache_tensors_.size(); ++i)
          row_caches[i][a.rows[0]].narrow(1, 0, own).copy_(cache_tensors_[i][0].narrow(1, prefix_len, own));
      }
      a.filled = own;
      BeamGeneration& out = results[a.index];
      out.prefix_reused = reused || a.index > 0;
      out.prefill_ms = elapsed_ms(begin) + (a.index == 0 ? prefix_ms : 0.0);
      a.started = std::chrono::steady_clock::now();
      const int64_t eos = request.options.stop_at_eos ? manifest_.eos_token_id : -1;
      a.search = std::make_unique<BeamSearch>(
          first, request.num_beams, limit_of(request), eos,
          std::unordered_set<int64_t>(request.options.stop_ids.begin(), request.options.stop_ids.end()), nullptr,
          request.options.constraint.get());
      if (a.search->done()) finish(a);
      else active.push_back(std::move(a));
    }
    if (active.empty()) break;
    // one step for every live beam of every prompt in progress
    std::vector<int64_t> tokens, positions, rows;
    for (Active& a : active) {
      const auto& parents = a.search->parents();
      std::vector<int64_t> from, to;  // row j of the prompt becomes a copy of row parents[j] (when it is another)
      for (size_t j = 0; j < parents.size(); ++j)
        if (parents[j] != static_cast<int64_t>(j)) {
          from.push_back(a.rows[parents[j]]);
          to.push_back(a.rows[j]);
        }
      if (a.filled > 0 && !from.empty()) {  // the sources are read (index_select) before any row is written
        const auto from_index = torch::tensor(from, torch::kLong), to_index = torch::tensor(to, torch::kLong);
        for (at::Tensor& cache : row_caches) {
          at::Tensor filled = cache.narrow(2, 0, a.filled);
          filled.index_copy_(0, to_index, filled.index_select(0, from_index));
        }
      }
      for (size_t j = 0; j < parents.size(); ++j) {
        tokens.push_back(a.search->tokens()[j]);
        positions.push_back(prefix_len + a.filled);
        rows.push_back(a.rows[j]);
      }
    }
    const at::Tensor logits = kernel_->step_rows(tokens, positions, rows, prefix_len, cache_tensors_, row_caches);
    int64_t offset = 0;
    std::vector<Active> still;
    for (Active& a : active) {
      const auto count = static_cast<int64_t>(a.search->tokens().size());
      a.search->advance(logits.narrow(0, offset, count));
      offset += count;
      ++a.filled;
      if (a.search->done()) finish(a);
      else still.push_back(std::move(a));
    }
    active = std::move(still);
  }
  return results;
}

}  // namespace sqlcopilot
