#include "sqlcopilot/kernels.h"

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "sqlcopilot/runner.h"

namespace sqlcopilot {

namespace {

using bf16 = c10::BFloat16;

// ---- element conversions: every op of the TorchScript graph rounds its result to the model's dtype ----------------
inline float as_float(float v) { return v; }
inline float as_float(bf16 v) { return static_cast<float>(v); }
template <typename T>
inline T round_to(float v);
template <>
inline float round_to<float>(float v) { return v; }
template <>
inline bf16 round_to<bf16>(float v) { return bf16(v); }  // round to nearest even, as PyTorch does

// ---- matrix-vector products y = W x, W [rows, cols] row-major ----------------------------------------------------
//
// Each thread takes one contiguous block of rows and reads it front to back, one row at a time with four independent
// accumulators, prefetching kPrefetch bytes ahead: a single sequential stream per core is what the memory system
// serves fastest (measured here: about 12% faster than four interleaved row streams).

constexpr int64_t kPrefetch = 1024;

__attribute__((target("avx512f"))) void gemv_rows_f32(const float* w, const float* x, float* y, int64_t begin,
                                                      int64_t end, int64_t cols) {
  const int64_t full = cols / 16 * 16;
  const __mmask16 tail = static_cast<__mmask16>((1u << (cols - full)) - 1u);
  for (int64_t r = begin; r < end; ++r) {
    const float* row = w + r * cols;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 64 <= full; k += 64) {
      const char* ahead = reinterpret_cast<const char*>(row + k) + kPrefetch;
      for (int line = 0; line < 4; ++line) _mm_prefetch(ahead + 64 * line, _MM_HINT_T0);
      a0 = _mm512_fmadd_ps(_mm512_loadu_ps(row + k), _mm512_loadu_ps(x + k), a0);
      a1 = _mm512_fmadd_ps(_mm512_loadu_ps(row + k + 16), _mm512_loadu_ps(x + k + 16), a1);
      a2 = _mm512_fmadd_ps(_mm512_loadu_ps(row + k + 32), _mm512_loadu_ps(x + k + 32), a2);
      a3 = _mm512_fmadd_ps(_mm512_loadu_ps(row + k + 48), _mm512_loadu_ps(x + k + 48), a3);
    }
    for (; k < full; k += 16) a0 = _mm512_fmadd_ps(_mm512_loadu_ps(row + k), _mm512_loadu_ps(x + k), a0);
    if (tail) a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, row + full), _mm512_maskz_loadu_ps(tail, x + full), a0);
    y[r] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
  }
}

#define SQLCOPILOT_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512bf16")))

SQLCOPILOT_BF16_TARGET inline __m512i load(const bf16* p) { return _mm512_loadu_si512(reinterpret_cast<const void*>(p)); }
SQLCOPILOT_BF16_TARGET inline __m512 dot(__m512 acc, __m512i a, __m512i b) {
  return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b);
}

// bfloat16 weights and input, float32 accumulation (VDPBF16PS multiplies pairs exactly and adds in float32), the
// result rounded to bfloat16 like oneDNN's bfloat16 matmul output.
SQLCOPILOT_BF16_TARGET void gemv_rows_bf16(const bf16* w, const bf16* x, bf16* y, int64_t begin, int64_t end,
                                           int64_t cols) {
  const int64_t full = cols / 32 * 32;
  const __mmask32 tail = static_cast<__mmask32>((cols - full) == 0 ? 0u : ((1ull << (cols - full)) - 1ull));
  for (int64_t r = begin; r < end; ++r) {
    const bf16* row = w + r * cols;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 128 <= full; k += 128) {
      const char* ahead = reinterpret_cast<const char*>(row + k) + kPrefetch;
      for (int line = 0; line < 4; ++line) _mm_prefetch(ahead + 64 * line, _MM_HINT_T0);
      a0 = dot(a0, load(row + k), load(x + k));
      a1 = dot(a1, load(row + k + 32), load(x + k + 32));
      a2 = dot(a2, load(row + k + 64), load(x + k + 64));
      a3 = dot(a3, load(row + k + 96), load(x + k + 96));
    }
    for (; k < full; k += 32) a0 = dot(a0, load(row + k), load(x + k));
    if (tail) a0 = dot(a0, _mm512_maskz_loadu_epi16(tail, row + full), _mm512_maskz_loadu_epi16(tail, x + full));
    y[r] = bf16(_mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3))));
  }
}

void gemv_rows(const float* w, const float* x, float* y, int64_t begin, int64_t end, int64_t cols) {
  gemv_rows_f32(w, x, y, begin, end, cols);
}
void gemv_rows(const bf16* w, const bf16* x, bf16* y, int64_t begin, int64_t end, int64_t cols) {
  gemv_rows_bf16(w, x, y, begin, end, cols);
}

// Thread `thread` of `threads`: its share [begin, end) of `count` items, in blocks of `align`.
std::pair<int64_t, int64_t> share(int64_t count, int thread, int threads, int64_t align = 1) {
  const int64_t per = ((count + threads - 1) / threads + align - 1) / align * align;
  return {std::min(count, per * thread), std::min(count, per * (thread + 1))};
}

// This thread's rows of y = W x.
template <typename T>
void gemv(const at::Tensor& weight, const T* x, T* y, int thread, int threads) {
  const auto [begin, end] = share(weight.size(0), thread, threads, 16);
  gemv_rows(reinterpret_cast<const T*>(weight.const_data_ptr()), x, y, begin, end, weight.size(1));
}

// ---- the elementwise parts, in the graph's order of operations and roundings ----------------------------------------

#define SQLCOPILOT_AVX512 __attribute__((target("avx512f")))

SQLCOPILOT_AVX512 inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
SQLCOPILOT_AVX512 inline __m512 load16(const bf16* p) {  // bfloat16 is the top half of a float32
  const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}

// float32 bits rounded to the nearest bfloat16, ties to even (NaN stays a quiet NaN), as c10::BFloat16 rounds.
SQLCOPILOT_AVX512 inline __m512i bf16_bits(__m512 v) {
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_add_epi32(bits, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF)));
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  return _mm512_mask_mov_epi32(_mm512_srli_epi32(rounded, 16), nan, _mm512_set1_epi32(0x7FC0));
}
SQLCOPILOT_AVX512 inline void store16(float* p, __m512 v) { _mm512_storeu_ps(p, v); }
SQLCOPILOT_AVX512 inline void store16(bf16* p, __m512 v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(bf16_bits(v)));
}
// v rounded to T and back to float32: what one elementwise op of the graph leaves
SQLCOPILOT_AVX512 inline __m512 rounded(__m512 v, float) { return v; }
SQLCOPILOT_AVX512 inline __m512 rounded(__m512 v, bf16) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(bf16_bits(v), 16));
}

// x[i] = x[i] + h[i] over [begin, end), returning the float32 sum of squares of the new x there. Vector steps need
// begin and end at multiples of 16 (`share` keeps them so; the scalar loop takes any remainder).
template <typename T>
SQLCOPILOT_AVX512 float add_and_square(T* x, const T* h, int64_t begin, int64_t end) {
  __m512 acc = _mm512_setzero_ps();
  int64_t i = begin;
  for (; i + 16 <= end; i += 16) {
    const __m512 sum = rounded(_mm512_add_ps(load16(x + i), load16(h + i)), T());
    store16(x + i, sum);
    acc = _mm512_fmadd_ps(sum, sum, acc);
  }
  float squares = _mm512_reduce_add_ps(acc);
  for (; i < end; ++i) {
    x[i] = round_to<T>(as_float(x[i]) + as_float(h[i]));
    squares += as_float(x[i]) * as_float(x[i]);
  }
  return squares;
}

// The sum of squares of x over [begin, end) (the first norm of a token, before any residual add).
template <typename T>
SQLCOPILOT_AVX512 float sum_of_squares(const T* x, int64_t begin, int64_t end) {
  __m512 acc = _mm512_setzero_ps();
  int64_t i = begin;
  for (; i + 16 <= end; i += 16) acc = _mm512_fmadd_ps(load16(x + i), load16(x + i), acc);
  float squares = _mm512_reduce_add_ps(acc);
  for (; i < end; ++i) squares += as_float(x[i]) * as_float(x[i]);
  return squares;
}

// out = weight * rms_norm(x.float()).to(dtype) over [begin, end), with r = 1 / sqrt(mean square + eps) given
template <typename T>
SQLCOPILOT_AVX512 void scale_norm(const T* x, const T* weight, T* out, float r, int64_t begin, int64_t end) {
  const __m512 rv = _mm512_set1_ps(r);
  int64_t i = begin;
  for (; i + 16 <= end; i += 16)
    store16(out + i, _mm512_mul_ps(load16(weight + i), rounded(_mm512_mul_ps(load16(x + i), rv), T())));
  for (; i < end; ++i) out[i] = round_to<T>(as_float(weight[i]) * as_float(round_to<T>(as_float(x[i]) * r)));
}

inline float inverse_rms(float squares, int64_t n, double eps) {
  return 1.0f / std::sqrt(squares / static_cast<float>(n) + static_cast<float>(eps));
}

// x * cos + roll(x, head_dim / 2) * sin, in place on one head
template <typename T>
SQLCOPILOT_AVX512 void rotate(T* head, const T* cos, const T* sin, int64_t head_dim) {
  const int64_t half = head_dim / 2;
  if (half % 16 == 0) {
    for (int64_t d = 0; d < half; d += 16) {
      const __m512 lo = load16(head + d), hi = load16(head + half + d);
      const __m512 new_lo = rounded(_mm512_add_ps(rounded(_mm512_mul_ps(lo, load16(cos + d)), T()),
                                                  rounded(_mm512_mul_ps(hi, load16(sin + d)), T())), T());
      const __m512 new_hi = rounded(_mm512_add_ps(rounded(_mm512_mul_ps(hi, load16(cos + half + d)), T()),
                                                  rounded(_mm512_mul_ps(lo, load16(sin + half + d)), T())), T());
      store16(head + d, new_lo);
      store16(head + half + d, new_hi);
    }
    return;
  }
  float tmp[1024];
  for (int64_t d = 0; d < head_dim; ++d) tmp[d] = as_float(head[d]);
  for (int64_t d = 0; d < head_dim; ++d) {
    const float a = as_float(round_to<T>(tmp[d] * as_float(cos[d])));
    const float b = as_float(round_to<T>(tmp[(d + half) % head_dim] * as_float(sin[d])));
    head[d] = round_to<T>(a + b);
  }
}

// ---- attention of one query head over `positions` cached keys and values, in float32 (Decoder.attend_one) ----------

// head_dim a multiple of 16: the query stays in registers' worth of float32, one reduction per position.
template <typename T>
SQLCOPILOT_AVX512 void attend_one_avx512(const T* q, const T* keys, const T* values, int64_t positions, int64_t hd,
                                         float scale, float* scores, float* out) {
  float top = -std::numeric_limits<float>::infinity();
  for (int64_t t = 0; t < positions; ++t) {
    const T* key = keys + t * hd;
    __m512 acc = _mm512_setzero_ps();
    for (int64_t d = 0; d < hd; d += 16) acc = _mm512_fmadd_ps(load16(q + d), load16(key + d), acc);
    scores[t] = _mm512_reduce_add_ps(acc) * scale;
    top = std::max(top, scores[t]);
  }
  float total = 0.0f;
  for (int64_t t = 0; t < positions; ++t) total += (scores[t] = std::exp(scores[t] - top));
  for (int64_t d = 0; d < hd; d += 16) _mm512_storeu_ps(out + d, _mm512_setzero_ps());
  for (int64_t t = 0; t < positions; ++t) {
    const __m512 p = _mm512_set1_ps(scores[t] / total);
    const T* value = values + t * hd;
    for (int64_t d = 0; d < hd; d += 16)
      _mm512_storeu_ps(out + d, _mm512_fmadd_ps(p, load16(value + d), _mm512_loadu_ps(out + d)));
  }
}

template <typename T>
void attend_one(const T* q, const T* keys, const T* values, int64_t positions, int64_t hd, float scale, float* scores,
                float* out) {
  if (hd % 16 == 0) return attend_one_avx512(q, keys, values, positions, hd, scale, scores, out);
  float top = -std::numeric_limits<float>::infinity();
  for (int64_t t = 0; t < positions; ++t) {
    const T* key = keys + t * hd;
    float dot = 0.0f;
    for (int64_t d = 0; d < hd; ++d) dot += as_float(q[d]) * as_float(key[d]);
    scores[t] = dot * scale;
    top = std::max(top, scores[t]);
  }
  float total = 0.0f;
  for (int64_t t = 0; t < positions; ++t) total += (scores[t] = std::exp(scores[t] - top));
  std::fill(out, out + hd, 0.0f);
  for (int64_t t = 0; t < positions; ++t) {
    const float p = scores[t] / total;
    const T* value = values + t * hd;
    for (int64_t d = 0; d < hd; ++d) out[d] += p * as_float(value[d]);
  }
}

}  // namespace

bool kernel_decode_supported(const std::string& dtype) {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512f")) return false;
  if (dtype == "float32") return true;
  return dtype == "bfloat16" && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512bf16");
}

KernelDecoder::KernelDecoder(const torch::jit::Module& module, const std::string& dtype)
    : bf16_(dtype == "bfloat16"), team_(at::get_num_threads()) {
  const auto expected = bf16_ ? at::kBFloat16 : at::kFloat;
  auto buffer = [&](const torch::jit::Module& owner, const std::string& prefix, const std::string& name,
                    int64_t dims) {
    if (!owner.hasattr(name)) throw ManifestError("graph has no buffer '" + prefix + name + "'; re-run the export stage");
    at::Tensor tensor = owner.attr(name).toTensor();
    if (tensor.is_mkldnn() || tensor.scalar_type() != expected || tensor.dim() != dims || !tensor.is_contiguous())
      throw ManifestError("graph buffer '" + prefix + name + "' is not a contiguous " + dtype + " tensor of " +
                          std::to_string(dims) + " dimension(s); re-run the export stage");
    return tensor;
  };
  embed_ = buffer(module, "", "embed", 2);
  lm_head_ = buffer(module, "", "lm_head", 2);
  norm_ = buffer(module, "", "norm", 1);
  cos_ = buffer(module, "", "cos", 2);
  sin_ = buffer(module, "", "sin", 2);
  eps_ = module.attr("eps").toDouble();
  max_seq_len_ = module.attr("max_seq_len").toInt();
  vocab_ = lm_head_.size(0);
  hidden_ = embed_.size(1);
  head_dim_ = cos_.size(1);
  scale_ = 1.0 / std::sqrt(static_cast<double>(head_dim_));
  auto shape_error = [](const std::string& what) {
    return ManifestError("graph " + what + " does not match the decoder layout; re-run the export stage");
  };
  if (lm_head_.size(1) != hidden_ || norm_.size(0) != hidden_ || cos_.size(0) < max_seq_len_ || head_dim_ % 2 ||
      head_dim_ > 1024)
    throw shape_error("embedding, output or rotary table shape");
  int64_t max_rows = 0, max_width = 0, max_heads = 0;
  for (const auto& child : module.attr("layers").toModule().named_children()) {
    const std::string prefix = "layers." + child.name + ".";
    Layer layer;
    layer.attn_norm = buffer(child.value, prefix, "attn_norm", 1);
    layer.mlp_norm = buffer(child.value, prefix, "mlp_norm", 1);
    layer.qkv = buffer(child.value, prefix, "qkv", 2);
    layer.out = buffer(child.value, prefix, "out", 2);
    layer.gate_up = buffer(child.value, prefix, "gate_up", 2);
    layer.down = buffer(child.value, prefix, "down", 2);
    layer.heads = child.value.attr("heads").toInt();
    layer.kv_heads = child.value.attr("kv_heads").toInt();
    layer.width = child.value.attr("width").toInt();
    const int64_t attn_width = layer.heads * head_dim_;
    if (child.value.attr("head_dim").toInt() != head_dim_ || layer.kv_heads <= 0 || layer.heads % layer.kv_heads ||
        layer.qkv.size(0) != (layer.heads + 2 * layer.kv_heads) * head_dim_ || layer.qkv.size(1) != hidden_ ||
        layer.out.size(0) != hidden_ || layer.out.size(1) != attn_width || layer.gate_up.size(0) != 2 * layer.width ||
        layer.gate_up.size(1) != hidden_ || layer.down.size(0) != hidden_ || layer.down.size(1) != layer.width)
      throw shape_error("layer " + child.name);
    max_rows = std::max(max_rows, layer.qkv.size(0));
    max_width = std::max(max_width, layer.width);
    max_heads = std::max(max_heads, layer.heads);
    layers_.push_back(std::move(layer));
  }
  if (layers_.empty()) throw shape_error("layer list");
  const auto options = at::TensorOptions().dtype(expected);
  x_ = at::empty({hidden_}, options);
  h_ = at::empty({hidden_}, options);
  qkv_ = at::empty({max_rows}, options);
  attn_ = at::empty({max_heads * head_dim_}, options);
  gate_up_ = at::empty({2 * max_width}, options);
  act_ = at::empty({max_width}, options);
  logits_ = at::empty({vocab_}, options);
  scores_ = at::empty({max_heads, max_seq_len_ + head_dim_}, at::kFloat);
  partial_.assign(team_.size(), 0.0f);
  best_.assign(team_.size(), {0.0f, 0});
}

int64_t KernelDecoder::step(int64_t token, int64_t pos, const std::vector<at::Tensor>& caches) {
  if (token < 0 || token >= embed_.size(0)) throw std::invalid_argument("token id " + std::to_string(token) +
                                                                        " is outside the vocabulary");
  if (pos < 0 || pos >= max_seq_len_) throw std::invalid_argument("position " + std::to_string(pos) +
                                                                  " is outside the cache");
  if (caches.size() != 2 * layers_.size()) throw std::invalid_argument("expected one key and one value cache per layer");
  return bf16_ ? step_as<bf16>(token, pos, caches) : step_as<float>(token, pos, caches);
}

template <typename T>
int64_t KernelDecoder::step_as(int64_t token, int64_t pos, const std::vector<at::Tensor>& caches) {
  auto ptr = [](const at::Tensor& t) { return reinterpret_cast<T*>(t.data_ptr()); };
  auto cptr = [](const at::Tensor& t) { return reinterpret_cast<const T*>(t.const_data_ptr()); };
  T* x = ptr(x_);
  T* h = ptr(h_);
  T* qkv = ptr(qkv_);
  T* attn = ptr(attn_);
  T* gate_up = ptr(gate_up_);
  T* act = ptr(act_);
  T* logits = ptr(logits_);
  const T* cos = cptr(cos_) + pos * head_dim_;
  const T* sin = cptr(sin_) + pos * head_dim_;
  const float scale = static_cast<float>(scale_);
  const int64_t hd = head_dim_;
  float* scores_all = scores_.data_ptr<float>();
  const int64_t stride = scores_.size(1);

  // One team run per token: every thread walks all layers, taking its rows of each matrix product, its heads of the
  // rotation and the attention, and its slice of each elementwise step; a barrier separates dependent steps. A norm
  // needs the sum of squares of the whole vector: each thread adds up its slice into partial_, and after a barrier
  // every thread adds the partials in the same order, so all get the same scale.
  std::vector<float>& partial = partial_;
  std::vector<std::pair<float, int64_t>>& best = best_;
  team_.run([&](int thread, int threads) {
    const auto [lo, hi] = share(hidden_, thread, threads, 16);
    auto norm_into = [&](const at::Tensor& weight) {  // h = norm(x) * weight, after partial[] is written
      team_.barrier();
      float squares = 0.0f;
      for (int t = 0; t < threads; ++t) squares += partial[t];
      scale_norm(x, cptr(weight), h, inverse_rms(squares, hidden_, eps_), lo, hi);
      team_.barrier();
    };
    std::copy(cptr(embed_) + token * hidden_ + lo, cptr(embed_) + token * hidden_ + hi, x + lo);
    partial[thread] = sum_of_squares(x, lo, hi);
    norm_into(layers_[0].attn_norm);
    for (size_t index = 0; index < layers_.size(); ++index) {
      const Layer& layer = layers_[index];
      T* k_cache = ptr(caches[2 * index]);  // [1, kv_heads, max_seq_len, head_dim]
      T* v_cache = ptr(caches[2 * index + 1]);
      gemv<T>(layer.qkv, h, qkv, thread, threads);
      team_.barrier();
      // rotate query and key heads; a key head's thread also writes it and its value head into the cache
      const auto [first_rotated, end_rotated] = share(layer.heads + layer.kv_heads, thread, threads);
      for (int64_t j = first_rotated; j < end_rotated; ++j) {
        rotate(qkv + j * hd, cos, sin, hd);
        if (j < layer.heads) continue;
        const int64_t g = j - layer.heads;
        const T* value = qkv + (layer.heads + layer.kv_heads + g) * hd;
        std::copy(qkv + j * hd, qkv + (j + 1) * hd, k_cache + (g * max_seq_len_ + pos) * hd);
        std::copy(value, value + hd, v_cache + (g * max_seq_len_ + pos) * hd);
      }
      team_.barrier();
      // one query over positions 0..pos, in float32 (Decoder.attend_one); query head j uses key/value head
      // j / (heads / kv_heads)
      const auto [first_head, end_head] = share(layer.heads, thread, threads);
      for (int64_t j = first_head; j < end_head; ++j) {
        const int64_t g = j / (layer.heads / layer.kv_heads);
        float* scores = scores_all + j * stride;
        float* out = scores + max_seq_len_;  // the head's output in float32, after the scores
        attend_one(qkv + j * hd, k_cache + g * max_seq_len_ * hd, v_cache + g * max_seq_len_ * hd, pos + 1, hd, scale,
                   scores, out);
        for (int64_t d = 0; d < hd; ++d) attn[j * hd + d] = round_to<T>(out[d]);
      }
      team_.barrier();
      gemv<T>(layer.out, attn, h, thread, threads);
      team_.barrier();
      partial[thread] = add_and_square(x, h, lo, hi);
      norm_into(layer.mlp_norm);
      gemv<T>(layer.gate_up, h, gate_up, thread, threads);
      team_.barrier();
      const auto [first, end] = share(layer.width, thread, threads);
      for (int64_t i = first; i < end; ++i) {
        const float g = as_float(gate_up[i]);
        const float silu = as_float(round_to<T>(g / (1.0f + std::exp(-g))));
        act[i] = round_to<T>(silu * as_float(gate_up[layer.width + i]));
      }
      team_.barrier();
      gemv<T>(layer.down, act, h, thread, threads);
      team_.barrier();
      partial[thread] = add_and_square(x, h, lo, hi);
      norm_into(index + 1 == layers_.size() ? norm_ : layers_[index + 1].attn_norm);
    }
    // this thread's rows of the logits, and the first largest among them
    const auto [first_row, end_row] = share(vocab_, thread, threads, 16);
    gemv<T>(lm_head_, h, logits, thread, threads);
    std::pair<float, int64_t> top{-std::numeric_limits<float>::infinity(), first_row};
    for (int64_t i = first_row; i < end_row; ++i) {
      const float value = as_float(logits[i]);
      if (value > top.first || (std::isnan(value) && !std::isnan(top.first))) top = {value, i};
    }
    best[thread] = top;
  });
  // the first largest logit overall (NaN counts as largest, as torch.argmax has it): threads hold ascending rows
  std::pair<float, int64_t> top = best[0];
  for (int t = 1; t < team_.size(); ++t) {
    const auto& candidate = best[t];
    if (candidate.first > top.first || (std::isnan(candidate.first) && !std::isnan(top.first))) top = candidate;
  }
  return top.second;
}

std::vector<float> KernelDecoder::last_logits() const {
  at::Tensor flat = logits_.to(at::kFloat).contiguous();
  return std::vector<float>(flat.data_ptr<float>(), flat.data_ptr<float>() + flat.numel());
}

}  // namespace sqlcopilot
