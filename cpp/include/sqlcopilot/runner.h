// The SQL-Copilot runner: loads an export folder (manifest.json + TorchScript decoder) and generates greedily
// with a fixed-size key/value cache, exactly as sqlcopilot_core.decoder.greedy_generate does in Python.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

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

struct Generation {
  std::vector<int64_t> output_ids;  // the new tokens only, ending with EOS when the model produced it
  double prefill_ms = 0.0;          // prompt pass and first token
  double decode_ms = 0.0;           // all later tokens together
  std::vector<float> first_logits;  // logits the first token was chosen from, when asked for
  std::vector<float> step_logits;   // logits the second token was chosen from (the first decode step), when asked for
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

  // Greedy new tokens after `input_ids`: stops after EOS, after `max_new_tokens`, or when the cache is full.
  // Throws std::invalid_argument for an empty prompt, an id outside the vocabulary or a prompt too long.
  Generation generate(const std::vector<int64_t>& input_ids, int64_t max_new_tokens, bool want_logits = false,
                      bool stop_at_eos = true);

  const Manifest& manifest() const { return manifest_; }
  bool packed() const { return packed_; }
  const char* decode_path() const { return kernel_ ? "kernel" : "graph"; }

 private:
  Manifest manifest_;
  torch::jit::Module module_;
  c10::IValue caches_;  // allocated once; a prefill overwrites what a previous request left
  std::vector<at::Tensor> cache_tensors_;  // the same tensors, for the kernels
  std::unique_ptr<KernelDecoder> kernel_;
  bool packed_ = false;
};

}  // namespace sqlcopilot
