// The SQL-Copilot runner: loads an export folder (manifest.json + TorchScript decoder) and generates greedily or with
// beams, with a fixed-size key/value cache, exactly as sqlcopilot_core.decoder.greedy_generate and beam_generate do
// in Python. The caches of recent prompt prefixes (a database's schema) are kept and reused.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <filesystem>
#include <list>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "sqlcopilot/beams.h"

namespace sqlcopilot {

constexpr const char* kExportFormat = "sqlcopilot-export";
// 2: the manifest lists every file's sha256 and size; 3: "stop_token_ids", the tokens that end a statement.
constexpr int64_t kExportFormatVersion = 3;
constexpr int64_t kOldestReadableVersion = 2;  // a version-2 manifest reads as one without stop tokens

// A manifest the runner cannot use; the message names the file, the problem and the stage to re-run.
class ManifestError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Manifest {
  std::filesystem::path dir;
  std::string graph;  // file name of the TorchScript decoder inside dir
  std::string dtype;  // "float32" or "bfloat16"
  int64_t max_seq_len = 0;
  int64_t vocab_size = 0;
  int64_t eos_token_id = -1;  // -1: the model has none; generation stops at the token limit only
  int64_t num_layers = 0;
  std::vector<int64_t> stop_token_ids;  // tokens whose text ends a statement (';' or a blank line)
  int64_t checked_bytes = 0;  // size of the files whose checksums were verified at load
  double check_ms = 0.0;      // time that verification took
};

// Reads and checks <dir>/manifest.json: refuses a foreign format, an unknown format_version, and any listed file that
// is missing or whose size or sha256 differs from the manifest (naming the file).
Manifest load_manifest(const std::filesystem::path& dir);

// What a request adds to the prompt and token limit.
struct DecodeOptions {
  int64_t prefix_len = 0;         // input_ids[:prefix_len] is a reusable prefix: its cache is kept for the next request
  std::vector<int64_t> stop_ids;  // decoding ends after one of these tokens (kept in the output)
  bool stop_at_eos = true;        // false: end-of-text is an ordinary token (how decode speed is measured)
  // beams only: every token must advance this schema constraint (Runner::constraint); null: unconstrained
  std::shared_ptr<SchemaConstraint> constraint;
};

struct Generation {
  std::vector<int64_t> output_ids;  // the new tokens only, ending with EOS when the model produced it
  double prefill_ms = 0.0;          // prompt pass and first token
  double decode_ms = 0.0;           // all later tokens together
  bool prefix_reused = false;       // the prefix's cache came from an earlier request
  std::vector<float> first_logits;  // logits the first token was chosen from, when asked for
  std::vector<float> step_logits;   // logits the second token was chosen from (the first decode step), when asked for
};

struct BeamGeneration {
  std::vector<Hypothesis> beams;  // best first (by score / length), at most num_beams
  double prefill_ms = 0.0;        // prompt pass
  double decode_ms = 0.0;         // every beam step and its bookkeeping
  int64_t steps = 0;              // decode steps (each advances every live beam by one token)
  double walk_ms = 0.0;           // part of decode_ms: choosing the candidates (with the constraint, if any)
  int64_t constraint_checks = 0;  // candidates the constraint was asked about
  bool prefix_reused = false;
};

constexpr int64_t kMaxBeams = 16;

// One prompt of a batch (Runner::beams_batch).
struct BeamRequest {
  std::vector<int64_t> input_ids;
  int64_t num_beams = 1;
  int64_t max_new_tokens = 0;
  DecodeOptions options;
};

class KernelDecoder;

// How the runner decodes after the prompt pass: "kernel" runs the hand-written kernels (sqlcopilot/kernels.h) over
// the graph's weights, "graph" runs the graph's decode_step with weights packed for oneDNN, "auto" picks "kernel"
// when the CPU has the instructions for the dtype, else "graph".
enum class DecodeMode { Auto, Graph, Kernel };
DecodeMode parse_decode_mode(const std::string& name);  // throws std::invalid_argument for an unknown name

class Runner {
 public:
  // Loads the graph; for "graph" decoding packs its weights for one-row products (Decoder.pack in decoder.py).
  // Throws std::runtime_error when "kernel" is asked for on a CPU without the instructions it needs.
  explicit Runner(const std::filesystem::path& export_dir, DecodeMode mode = DecodeMode::Auto);
  ~Runner();

  // Greedy new tokens after `input_ids`: stops after EOS (unless options.stop_at_eos is false), after a stop id,
  // after `max_new_tokens`, or when the cache is full. Throws std::invalid_argument for an empty prompt, an id
  // outside the vocabulary, a prompt too long or a prefix length outside 0..len(input_ids).
  Generation generate(const std::vector<int64_t>& input_ids, int64_t max_new_tokens, bool want_logits = false,
                      const DecodeOptions& options = {});

  // Beam candidates after `input_ids` (see sqlcopilot/beams.h for the rule). The prompt's cache is computed once
  // and shared by the beams; each beam keeps the keys and values of the tokens it generated in its row of small
  // beam caches, reordered by parent each step; one decode step advances all beams (the weights are read once).
  // A full cache ends decoding as the token limit does. Throws std::invalid_argument as generate does, and for
  // num_beams outside 1..kMaxBeams.
  BeamGeneration beams(const std::vector<int64_t>& input_ids, int64_t num_beams, int64_t max_new_tokens,
                       const DecodeOptions& options = {});

  // Beam candidates of several prompts, each as beams() gives them. When the kernels decode and every prompt has the
  // same prefix (options.prefix_len > 0: questions about one database), they are decoded together: the prefix's
  // cache is computed (or reused) once, a prompt's own tokens are prefilled when it starts, and each kernel step
  // advances the live beams of every prompt in progress as rows of one product (at most kMaxBeams rows; a prompt
  // starts as soon as rows are free), so the weights are read once per step for all of them. Otherwise they are
  // decoded one after another. A prompt's decode_ms is the time from its start to its end (shared with the others).
  // Throws std::invalid_argument as beams() does, naming the prompt (0-based).
  std::vector<BeamGeneration> beams_batch(const std::vector<BeamRequest>& requests);

  // The schema constraint of a request's spec ({"tables": {table: [column, ...]}}, sqlconstraint.constraint_spec),
  // built once per spec (the last few kept). The first call loads the export's token texts (token_texts.json); an
  // export without them is refused naming the file. Throws std::invalid_argument for that and for a malformed spec.
  std::shared_ptr<SchemaConstraint> constraint(const Json& spec);

  // How many prefix caches are kept (least recently used dropped first) and their largest total size; 0 entries
  // keeps none.
  void set_prefix_cache(size_t entries, int64_t max_bytes);

  const Manifest& manifest() const { return manifest_; }
  bool packed() const { return packed_; }
  const char* decode_path() const { return kernel_ ? "kernel" : "graph"; }

 private:
  struct Prefix {
    std::vector<int64_t> ids;
    std::vector<at::Tensor> caches;  // positions 0..len(ids)-1 of every layer's key and value cache
    at::Tensor logits;               // the prefix's last position
    int64_t bytes = 0;
  };
  void check_prompt(const std::vector<int64_t>& input_ids, const DecodeOptions& options) const;
  // Fills the cache with the prompt (the prefix from the kept ones when it is there) and returns the logits of its
  // last position.
  at::Tensor prefill(const std::vector<int64_t>& input_ids, int64_t prefix_len, bool* reused);
  // Positions 0..len(prefix)-1 of the cache hold the prefix (from the kept ones when it is there); returns the logits
  // of its last position.
  at::Tensor prefill_prefix(const std::vector<int64_t>& prefix, bool* reused);
  void remember_prefix(std::vector<int64_t> ids, const at::Tensor& logits);

  Manifest manifest_;
  torch::jit::Module module_;
  c10::IValue caches_;  // allocated once; a prefill overwrites what a previous request left
  std::vector<at::Tensor> cache_tensors_;  // the same tensors, for the kernels
  std::unique_ptr<KernelDecoder> kernel_;
  bool packed_ = false;
  std::list<Prefix> prefixes_;  // most recently used first
  size_t max_prefixes_ = 4;
  std::unique_ptr<SchemaConstraintCache> constraints_;  // built on the first constrained request
  int64_t max_prefix_bytes_ = int64_t{1} << 30;
};

}  // namespace sqlcopilot
