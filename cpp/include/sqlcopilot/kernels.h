// Hand-written one-token decoding for an exported decoder: the arithmetic of Decoder.decode_step in
// sqlcopilot_core/decoder.py, over the graph's own weight buffers and key/value cache tensors, with the
// matrix-vector products written to stream weights at memory bandwidth (AVX-512 FMA for float32, AVX-512 BF16 dot
// products for bfloat16), where oneDNN's one-row matmul reaches about half of it.
//
// Decoding one token multiplies one row by every weight matrix, so its speed is the speed at which the weights are
// read. The prompt pass (many rows, compute-bound) stays in the TorchScript graph.
#pragma once

#include <torch/script.h>

#include "sqlcopilot/team.h"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace sqlcopilot {

// Whether this CPU runs the kernels for `dtype`: "float32" needs AVX-512F, "bfloat16" also AVX-512 BF16.
bool kernel_decode_supported(const std::string& dtype);

class KernelDecoder {
 public:
  static constexpr int kMaxThreads = 64;
  static constexpr int64_t kMaxRows = 16;  // beams decoded together in one step

  // Reads the weights of a loaded, unpacked export module (see Decoder in decoder.py) and starts a team of
  // at::get_num_threads() threads. Throws ManifestError when a buffer is missing or shaped differently from what
  // the export stage writes.
  KernelDecoder(const torch::jit::Module& module, const std::string& dtype);

  // Feeds `token` at position `pos`, writes that position of `caches` (k0, v0, k1, v1, ..., each
  // [1, kv_heads, max_seq_len, head_dim]) and returns the greedy next token (the first of equal largest logits).
  int64_t step(int64_t token, int64_t pos, const std::vector<at::Tensor>& caches);

  // Decoder.decode_beams: feeds tokens[n] of each beam row n at position `pos`; row n attends over positions
  // 0..prompt_len-1 of `caches` (shared by all rows) and slots 0..pos-prompt_len of its own row of `beam_caches`
  // (k0, v0, ..., each [rows or more, kv_heads, capacity, head_dim]), the last of which it writes. Every weight
  // matrix is read once for all rows. Returns the logits [rows, vocab] as float32.
  at::Tensor step_rows(const std::vector<int64_t>& tokens, int64_t pos, int64_t prompt_len,
                       const std::vector<at::Tensor>& caches, const std::vector<at::Tensor>& beam_caches);

  // Rows of several questions at once (questions about one database, decoded together): row n feeds tokens[n] at
  // position positions[n] and attends over positions 0..shared_len-1 of `caches` (the database's schema, shared by
  // every row) and slots 0..positions[n]-shared_len of row cache_rows[n] of `beam_caches` (its question's own prompt
  // tokens, then what it generated), the last of which it writes. Every weight matrix is read once for all rows.
  // Returns the logits [rows, vocab] as float32.
  at::Tensor step_rows(const std::vector<int64_t>& tokens, const std::vector<int64_t>& positions,
                       const std::vector<int64_t>& cache_rows, int64_t shared_len,
                       const std::vector<at::Tensor>& caches, const std::vector<at::Tensor>& beam_caches);

  // The logits of the last step's first row, as float32.
  std::vector<float> last_logits() const;

 private:
  struct Layer {
    at::Tensor attn_norm, mlp_norm, qkv, out, gate_up, down;
    int64_t heads = 0, kv_heads = 0, width = 0;
  };
  // What the rows attend over: positions [0, shared) of the shared cache and, with beam caches, slots
  // [0, positions[n] - shared + 1) of row cache_rows[n] of them (`capacity` slots per head), the last of which takes
  // the new key and value; with no beam caches (one-row decoding) the new key and value go to shared position
  // shared - 1.
  struct Span {
    int64_t shared = 0, capacity = 0;
    const int64_t* positions = nullptr;   // per row
    const int64_t* cache_rows = nullptr;  // per row (beam caches only)
  };
  template <typename T>
  void run_as(const int64_t* tokens, int64_t rows, const Span& span, const std::vector<at::Tensor>& caches,
              const std::vector<at::Tensor>* beam_caches);
  void check_token(int64_t token) const;

  bool bf16_ = false;
  int64_t hidden_ = 0, head_dim_ = 0, vocab_ = 0, max_seq_len_ = 0;
  double eps_ = 0.0, scale_ = 0.0;
  at::Tensor embed_, lm_head_, norm_, cos_, sin_;
  std::vector<Layer> layers_;
  // Scratch, allocated once (see the constructor), kMaxRows rows each: shared x_ .. logits_, per member normed_ ..
  // shares_.
  at::Tensor x_, h_, qkv_, gate_up_, act_, logits_;
  at::Tensor normed_, queries_, attn_, scores_, shares_;
  int64_t last_rows_ = 1;
  Team team_;  // at::get_num_threads() members (at most kMaxThreads), fixed when the decoder is made
  std::vector<float> partial_;  // per member and row: its slice's sum of squares before a norm
};

}  // namespace sqlcopilot
