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

// ---- matrix products y[n] = W x[n] for up to kMaxRows vectors x[n], W [rows, cols] row-major --------------------
//
// Each thread takes one contiguous block of rows and reads it front to back, one row at a time with four independent
// accumulators: a single sequential stream per core is what the memory system serves fastest (measured here: about
// 12% faster than four interleaved row streams). The hardware prefetchers follow such a stream on their own;
// software prefetches 1 KiB ahead made it 12-15% slower in a streaming microbenchmark here (2026-12-02). That is
// one vector (greedy decoding); several vectors (beams) read the weights once for all of them, see below.

__attribute__((target("avx512f"))) void gemv_rows_f32(const float* w, const float* x, float* y, int64_t begin,
                                                      int64_t end, int64_t cols) {
  const int64_t full = cols / 16 * 16;
  const __mmask16 tail = static_cast<__mmask16>((1u << (cols - full)) - 1u);
  for (int64_t r = begin; r < end; ++r) {
    const float* row = w + r * cols;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 64 <= full; k += 64) {
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

// Several vectors (beams): R rows times G vectors at a time, one accumulator per pair over 16 (float32) or 32
// (bfloat16) wide steps. A weight row is used for G vectors per load and a vector for R rows, so a step takes
// (R + G) loads for R * G products (the one-vector order above, per vector, would take five loads per four). With
// that much arithmetic per byte the hardware prefetchers alone let the weight loads stall (measured with perf: over
// half of an 8-beam step), so the first pass over a block prefetches the next block into L2; an 8-beam step then
// cost about 1.7x a greedy one instead of 2.5x (one thread, float32 SmolLM2-135M, 2026-12-03).
template <int R, int G>
__attribute__((target("avx512f"))) inline void block_f32(const float* w, int64_t cols, const float* x,
                                                         int64_t x_stride, float* y, int64_t y_stride, int64_t full,
                                                         const float* next) {
  const __mmask16 tail = static_cast<__mmask16>((1u << (cols - full)) - 1u);
  __m512 a[R][G];
  for (int r = 0; r < R; ++r)
    for (int g = 0; g < G; ++g) a[r][g] = _mm512_setzero_ps();
  for (int64_t k = 0; k < full; k += 16) {
    __m512 rows[R];
    for (int r = 0; r < R; ++r) rows[r] = _mm512_loadu_ps(w + r * cols + k);
    if (next)
      for (int r = 0; r < R; ++r) _mm_prefetch(reinterpret_cast<const char*>(next + r * cols + k), _MM_HINT_T1);
    for (int g = 0; g < G; ++g) {
      const __m512 v = _mm512_loadu_ps(x + g * x_stride + k);
      for (int r = 0; r < R; ++r) a[r][g] = _mm512_fmadd_ps(rows[r], v, a[r][g]);
    }
  }
  if (tail) {
    __m512 rows[R];
    for (int r = 0; r < R; ++r) rows[r] = _mm512_maskz_loadu_ps(tail, w + r * cols + full);
    for (int g = 0; g < G; ++g) {
      const __m512 v = _mm512_maskz_loadu_ps(tail, x + g * x_stride + full);
      for (int r = 0; r < R; ++r) a[r][g] = _mm512_fmadd_ps(rows[r], v, a[r][g]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int g = 0; g < G; ++g) y[g * y_stride + r] = _mm512_reduce_add_ps(a[r][g]);
}

template <int R, int G>
SQLCOPILOT_BF16_TARGET inline void block_bf16(const bf16* w, int64_t cols, const bf16* x, int64_t x_stride, bf16* y,
                                              int64_t y_stride, int64_t full, const bf16* next) {
  const __mmask32 tail = static_cast<__mmask32>((cols - full) == 0 ? 0u : ((1ull << (cols - full)) - 1ull));
  __m512 a[R][G];
  for (int r = 0; r < R; ++r)
    for (int g = 0; g < G; ++g) a[r][g] = _mm512_setzero_ps();
  for (int64_t k = 0; k < full; k += 32) {
    __m512i rows[R];
    for (int r = 0; r < R; ++r) rows[r] = load(w + r * cols + k);
    if (next)
      for (int r = 0; r < R; ++r) _mm_prefetch(reinterpret_cast<const char*>(next + r * cols + k), _MM_HINT_T1);
    for (int g = 0; g < G; ++g) {
      const __m512i v = load(x + g * x_stride + k);
      for (int r = 0; r < R; ++r) a[r][g] = dot(a[r][g], rows[r], v);
    }
  }
  if (tail) {
    __m512i rows[R];
    for (int r = 0; r < R; ++r) rows[r] = _mm512_maskz_loadu_epi16(tail, w + r * cols + full);
    for (int g = 0; g < G; ++g) {
      const __m512i v = _mm512_maskz_loadu_epi16(tail, x + g * x_stride + full);
      for (int r = 0; r < R; ++r) a[r][g] = dot(a[r][g], rows[r], v);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int g = 0; g < G; ++g) y[g * y_stride + r] = bf16(_mm512_reduce_add_ps(a[r][g]));
}

// y[n][r] = W[r] . x[n] for weight rows [begin, end) and vectors n < count (x[n] = x + n * x_stride, likewise y):
// one vector in the one-vector order (greedy decoding), several in blocks of four rows times up to four vectors.
#define SQLCOPILOT_ROWS_TIMES_VECTORS(ONE, BLOCK, WIDTH)                                          \
  if (count == 1) return ONE(w, x, y, begin, end, cols);                                          \
  const int64_t full = cols / (WIDTH) * (WIDTH);                                                  \
  for (int64_t r = begin; r < end;) {                                                             \
    const bool four = r + 4 <= end;                                                               \
    for (int64_t n = 0; n < count; n += 4) {                                                      \
      const auto* v = x + n * x_stride;                                                           \
      auto* out = y + n * y_stride + r;                                                           \
      const auto* rows = w + r * cols;                                                            \
      const auto* next = four && n == 0 && r + 8 <= end ? rows + 4 * cols : nullptr;              \
      switch (std::min<int64_t>(4, count - n) + (four ? 4 : 0)) {                                 \
        case 1: BLOCK<1, 1>(rows, cols, v, x_stride, out, y_stride, full, next); break;                 \
        case 2: BLOCK<1, 2>(rows, cols, v, x_stride, out, y_stride, full, next); break;                 \
        case 3: BLOCK<1, 3>(rows, cols, v, x_stride, out, y_stride, full, next); break;                 \
        case 4: BLOCK<1, 4>(rows, cols, v, x_stride, out, y_stride, full, next); break;                 \
        case 5: BLOCK<4, 1>(rows, cols, v, x_stride, out, y_stride, full, next); break;                 \
        case 6: BLOCK<4, 2>(rows, cols, v, x_stride, out, y_stride, full, next); break;                 \
        case 7: BLOCK<4, 3>(rows, cols, v, x_stride, out, y_stride, full, next); break;                 \
        default: BLOCK<4, 4>(rows, cols, v, x_stride, out, y_stride, full, next);                     \
      }                                                                                           \
    }                                                                                             \
    r += four ? 4 : 1;                                                                            \
  }

__attribute__((target("avx512f"))) void gemv_rows(const float* w, const float* x, int64_t x_stride, float* y,
                                                  int64_t y_stride, int64_t count, int64_t begin, int64_t end,
                                                  int64_t cols) {
  SQLCOPILOT_ROWS_TIMES_VECTORS(gemv_rows_f32, block_f32, 16)
}
SQLCOPILOT_BF16_TARGET void gemv_rows(const bf16* w, const bf16* x, int64_t x_stride, bf16* y, int64_t y_stride,
                                      int64_t count, int64_t begin, int64_t end, int64_t cols) {
  SQLCOPILOT_ROWS_TIMES_VECTORS(gemv_rows_bf16, block_bf16, 32)
}

// Thread `thread` of `threads`: its share [begin, end) of `count` items, in blocks of `align`.
std::pair<int64_t, int64_t> share(int64_t count, int thread, int threads, int64_t align = 1) {
  const int64_t per = ((count + threads - 1) / threads + align - 1) / align * align;
  return {std::min(count, per * thread), std::min(count, per * (thread + 1))};
}

// This thread's rows of y[n] = W x[n], n < count.
template <typename T>
void gemv(const at::Tensor& weight, const T* x, int64_t x_stride, T* y, int64_t y_stride, int64_t count, int thread,
          int threads) {
  const auto [begin, end] = share(weight.size(0), thread, threads, 16);
  gemv_rows(reinterpret_cast<const T*>(weight.const_data_ptr()), x, x_stride, y, y_stride, count, begin, end,
            weight.size(1));
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

// dst = src * cos + roll(src, head_dim / 2) * sin for one head (src and dst do not overlap)
template <typename T>
SQLCOPILOT_AVX512 void rotate(const T* src, T* dst, const T* cos, const T* sin, int64_t head_dim) {
  const int64_t half = head_dim / 2;
  if (half % 16 == 0) {
    for (int64_t d = 0; d < half; d += 16) {
      const __m512 lo = load16(src + d), hi = load16(src + half + d);
      store16(dst + d, _mm512_add_ps(rounded(_mm512_mul_ps(lo, load16(cos + d)), T()),
                                     rounded(_mm512_mul_ps(hi, load16(sin + d)), T())));
      store16(dst + half + d, _mm512_add_ps(rounded(_mm512_mul_ps(hi, load16(cos + half + d)), T()),
                                            rounded(_mm512_mul_ps(lo, load16(sin + half + d)), T())));
    }
    return;
  }
  for (int64_t d = 0; d < head_dim; ++d) {
    const float a = as_float(round_to<T>(as_float(src[d]) * as_float(cos[d])));
    const float b = as_float(round_to<T>(as_float(src[(d + half) % head_dim]) * as_float(sin[d])));
    dst[d] = round_to<T>(a + b);
  }
}

// e^x in float32 for 16 lanes (Cephes' expf: x = n ln2 + r, a degree-6 polynomial for e^r, scaled by 2^n), within
// about 1 ulp of std::exp; underflows to 0 below -104.
SQLCOPILOT_AVX512 inline __m512 exp16(__m512 x) {
  x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.7f)), _mm512_set1_ps(-104.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 y = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(y, n);
}

// act[i] = silu(gate[i]) * up[i] over [begin, end), rounding after each op as the graph does
template <typename T>
SQLCOPILOT_AVX512 void silu_times(const T* gate, const T* up, T* act, int64_t begin, int64_t end) {
  int64_t i = begin;
  for (; i + 16 <= end; i += 16) {
    const __m512 g = load16(gate + i);
    const __m512 silu = rounded(_mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.0f), exp16(_mm512_sub_ps(
                                                                   _mm512_setzero_ps(), g)))), T());
    store16(act + i, _mm512_mul_ps(silu, load16(up + i)));
  }
  for (; i < end; ++i) {
    const float g = as_float(gate[i]);
    act[i] = round_to<T>(as_float(round_to<T>(g / (1.0f + std::exp(-g)))) * as_float(up[i]));
  }
}

// ---- attention: one query over cached positions, in float32 (Decoder.attend_one) --------------------------------
//
// The positions 0..pos are split between the threads (every thread takes every head over its share), so the work is
// even whatever the head count. Each thread leaves, per head, its running maximum score, its sum of e^(score - max)
// and its unnormalised e^(score - max)-weighted sum of values; the shares are merged as in flash-decoding.

// The 16 sums of v[0..15], one per lane, by a tree of in-register shuffles (instead of 16 horizontal reductions).
SQLCOPILOT_AVX512 inline __m512 sums16(const __m512* v) {
  __m512 w[8], x[4];
  for (int i = 0; i < 8; ++i)  // lanes 0-1: 8 partial sums of v[2i]; lanes 2-3: of v[2i + 1]
    w[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x44),
                         _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xEE));
  for (int i = 0; i < 4; ++i)  // lane k: 4 partial sums of v[4i + k]
    x[i] = _mm512_add_ps(_mm512_shuffle_f32x4(w[2 * i], w[2 * i + 1], 0x88),
                         _mm512_shuffle_f32x4(w[2 * i], w[2 * i + 1], 0xDD));
  const __m512 y0 = _mm512_add_ps(_mm512_unpacklo_ps(x[0], x[1]), _mm512_unpackhi_ps(x[0], x[1]));
  const __m512 y1 = _mm512_add_ps(_mm512_unpacklo_ps(x[2], x[3]), _mm512_unpackhi_ps(x[2], x[3]));
  const __m512 z = _mm512_add_ps(
      _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(y0), _mm512_castps_pd(y1))),
      _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(y0), _mm512_castps_pd(y1))));
  // z[4k + m] is the sum of v[4m + k]
  return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), z);
}

// scores[t] = (q . keys[t]) * scale for t in [begin, end); head_dim = 16 * kVectors
template <typename T, int kVectors>
SQLCOPILOT_AVX512 void head_scores(const T* q, const T* keys, int64_t begin, int64_t end, float scale,
                                   float* scores) {
  constexpr int64_t hd = 16 * kVectors;
  __m512 query[kVectors];
  for (int v = 0; v < kVectors; ++v) query[v] = load16(q + 16 * v);
  int64_t t = begin;
  for (; t + 16 <= end; t += 16) {
    __m512 acc[16];
    for (int i = 0; i < 16; ++i) {
      const T* key = keys + (t + i) * hd;
      acc[i] = _mm512_mul_ps(query[0], load16(key));
      for (int v = 1; v < kVectors; ++v) acc[i] = _mm512_fmadd_ps(query[v], load16(key + 16 * v), acc[i]);
    }
    _mm512_storeu_ps(scores + t, _mm512_mul_ps(sums16(acc), _mm512_set1_ps(scale)));
  }
  for (; t < end; ++t) {
    __m512 acc = _mm512_mul_ps(query[0], load16(keys + t * hd));
    for (int v = 1; v < kVectors; ++v) acc = _mm512_fmadd_ps(query[v], load16(keys + t * hd + 16 * v), acc);
    scores[t] = _mm512_reduce_add_ps(acc) * scale;
  }
}

// out = sum over t in [begin, end) of weights[t] * values[t] (added to out when `accumulate`); head_dim = 16 * kVectors
template <typename T, int kVectors>
SQLCOPILOT_AVX512 void head_values(const float* weights, const T* values, int64_t begin, int64_t end, float* out,
                                   bool accumulate) {
  constexpr int64_t hd = 16 * kVectors;
  __m512 acc[kVectors];
  for (int v = 0; v < kVectors; ++v) acc[v] = accumulate ? _mm512_loadu_ps(out + 16 * v) : _mm512_setzero_ps();
  for (int64_t t = begin; t < end; ++t) {
    const __m512 w = _mm512_set1_ps(weights[t]);
    for (int v = 0; v < kVectors; ++v) acc[v] = _mm512_fmadd_ps(w, load16(values + t * hd + 16 * v), acc[v]);
  }
  for (int v = 0; v < kVectors; ++v) _mm512_storeu_ps(out + 16 * v, acc[v]);
}

// scores[t] = e^(scores[t] - top) over [begin, end); returns their sum
SQLCOPILOT_AVX512 float exp_shifted(float* scores, int64_t begin, int64_t end, float top) {
  const __m512 shift = _mm512_set1_ps(top);
  __m512 acc = _mm512_setzero_ps();
  int64_t t = begin;
  for (; t + 16 <= end; t += 16) {
    const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(scores + t), shift));
    _mm512_storeu_ps(scores + t, e);
    acc = _mm512_add_ps(acc, e);
  }
  float total = _mm512_reduce_add_ps(acc);
  for (; t < end; ++t) total += (scores[t] = std::exp(scores[t] - top));
  return total;
}

template <typename T>
void scalar_scores(const T* q, const T* keys, int64_t begin, int64_t end, int64_t hd, float scale, float* scores) {
  for (int64_t t = begin; t < end; ++t) {
    float dot = 0.0f;
    for (int64_t d = 0; d < hd; ++d) dot += as_float(q[d]) * as_float(keys[t * hd + d]);
    scores[t] = dot * scale;
  }
}

template <typename T>
void scalar_values(const float* weights, const T* values, int64_t begin, int64_t end, int64_t hd, float* out,
                   bool accumulate) {
  if (!accumulate) std::fill(out, out + hd, 0.0f);
  for (int64_t t = begin; t < end; ++t)
    for (int64_t d = 0; d < hd; ++d) out[d] += weights[t] * as_float(values[t * hd + d]);
}

// scores[t] = (q . keys[t]) * scale for t in [begin, end)
template <typename T>
void scores_of(const T* q, const T* keys, int64_t begin, int64_t end, int64_t hd, float scale, float* scores) {
  switch (hd) {
#define SQLCOPILOT_HEAD_SCORES(V) \
  case 16 * V: head_scores<T, V>(q, keys, begin, end, scale, scores); break;
    SQLCOPILOT_HEAD_SCORES(1) SQLCOPILOT_HEAD_SCORES(2) SQLCOPILOT_HEAD_SCORES(3) SQLCOPILOT_HEAD_SCORES(4)
    SQLCOPILOT_HEAD_SCORES(5) SQLCOPILOT_HEAD_SCORES(6) SQLCOPILOT_HEAD_SCORES(7) SQLCOPILOT_HEAD_SCORES(8)
    default: scalar_scores(q, keys, begin, end, hd, scale, scores);
  }
}

// out (+)= sum over t in [begin, end) of weights[t] * values[t]
template <typename T>
void values_of(const float* weights, const T* values, int64_t begin, int64_t end, int64_t hd, float* out,
               bool accumulate) {
  switch (hd) {
#define SQLCOPILOT_HEAD_VALUES(V) \
  case 16 * V: head_values<T, V>(weights, values, begin, end, out, accumulate); break;
    SQLCOPILOT_HEAD_VALUES(1) SQLCOPILOT_HEAD_VALUES(2) SQLCOPILOT_HEAD_VALUES(3) SQLCOPILOT_HEAD_VALUES(4)
    SQLCOPILOT_HEAD_VALUES(5) SQLCOPILOT_HEAD_VALUES(6) SQLCOPILOT_HEAD_VALUES(7) SQLCOPILOT_HEAD_VALUES(8)
    default: scalar_values(weights, values, begin, end, hd, out, accumulate);
  }
}

// Keys and values one query attends over in a thread's share: positions [begin, end) of a shared cache head and
// slots [own_begin, own_end) of the row's own (beam) cache head, whose scores go to scores[own_offset + slot].
template <typename T>
struct Segments {
  const T *keys, *values;
  int64_t begin, end;
  const T *own_keys, *own_values;
  int64_t own_begin, own_end, own_offset;
};

// One head's share of the positions: writes {max score, sum of e^(score - max)} to state and the unnormalised
// weighted sum of values to out[0..hd). `scores` is scratch for at least own_offset + own_end floats. With no own
// slots this is exactly the one-segment computation.
template <typename T>
void attend_share(const T* q, const Segments<T>& at, int64_t hd, float scale, float* scores, float* state,
                  float* out) {
  const bool shared = at.begin < at.end, own = at.own_begin < at.own_end;
  if (!shared && !own) {
    state[0] = -std::numeric_limits<float>::infinity();
    state[1] = 0.0f;
    std::fill(out, out + hd, 0.0f);
    return;
  }
  float* own_scores = scores + at.own_offset;
  if (shared) scores_of(q, at.keys, at.begin, at.end, hd, scale, scores);
  if (own) scores_of(q, at.own_keys, at.own_begin, at.own_end, hd, scale, own_scores);
  float top = -std::numeric_limits<float>::infinity();
  if (shared) top = *std::max_element(scores + at.begin, scores + at.end);
  if (own) top = std::max(top, *std::max_element(own_scores + at.own_begin, own_scores + at.own_end));
  state[0] = top;
  state[1] = shared ? exp_shifted(scores, at.begin, at.end, top) : 0.0f;
  if (own) state[1] += exp_shifted(own_scores, at.own_begin, at.own_end, top);
  if (shared) values_of(scores, at.values, at.begin, at.end, hd, out, false);
  if (own) values_of(own_scores, at.own_values, at.own_begin, at.own_end, hd, out, shared);
}

// attn = the merged shares of one head, softmax-normalised and rounded to T
template <typename T>
void merge_shares(const float* partials, int64_t stride, int threads, int64_t hd, T* attn) {
  float top = -std::numeric_limits<float>::infinity();
  for (int t = 0; t < threads; ++t) top = std::max(top, partials[t * stride]);
  float weights[KernelDecoder::kMaxThreads], total = 0.0f;
  for (int t = 0; t < threads; ++t) {
    const float* state = partials + t * stride;
    weights[t] = state[1] > 0.0f ? std::exp(state[0] - top) : 0.0f;
    total += weights[t] * state[1];
  }
  for (int64_t d = 0; d < hd; ++d) {
    float sum = 0.0f;
    for (int t = 0; t < threads; ++t) sum += weights[t] * partials[t * stride + 2 + d];
    attn[d] = round_to<T>(sum / total);
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
    : bf16_(dtype == "bfloat16"), team_(std::min(at::get_num_threads(), kMaxThreads)) {
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
  // Shared scratch: residual stream, projections, MLP activations, logits, and per member its attention shares. Per
  // member, rows padded to whole cache lines: its normed input, rotated queries, attention output, score scratch.
  const auto options = at::TensorOptions().dtype(expected);
  const int64_t members = team_.size(), attn_width = max_heads * head_dim_;
  auto padded = [](int64_t n) { return (n + 31) / 32 * 32; };
  const int64_t rows = kMaxRows;
  x_ = at::empty({rows, padded(hidden_)}, options);
  h_ = at::empty({rows, padded(hidden_)}, options);
  qkv_ = at::empty({rows, padded(max_rows)}, options);
  gate_up_ = at::empty({rows, padded(2 * max_width)}, options);
  act_ = at::empty({rows, padded(max_width)}, options);
  logits_ = at::empty({rows, padded(vocab_)}, options);
  normed_ = at::empty({members, rows, padded(hidden_)}, options);
  queries_ = at::empty({members, rows, padded(attn_width)}, options);
  attn_ = at::empty({members, rows, padded(attn_width)}, options);
  scores_ = at::empty({members, padded(max_seq_len_)}, at::kFloat);
  shares_ = at::empty({members, rows * max_heads, padded(head_dim_ + 2)}, at::kFloat);
  partial_.assign(members * rows, 0.0f);
}

void KernelDecoder::check_token(int64_t token) const {
  if (token < 0 || token >= embed_.size(0))
    throw std::invalid_argument("token id " + std::to_string(token) + " is outside the vocabulary");
}

int64_t KernelDecoder::step(int64_t token, int64_t pos, const std::vector<at::Tensor>& caches) {
  check_token(token);
  if (pos < 0 || pos >= max_seq_len_) throw std::invalid_argument("position " + std::to_string(pos) +
                                                                  " is outside the cache");
  if (caches.size() != 2 * layers_.size()) throw std::invalid_argument("expected one key and one value cache per layer");
  const Span span{pos + 1, 0, &pos, nullptr};
  if (bf16_) run_as<bf16>(&token, 1, span, caches, nullptr);
  else run_as<float>(&token, 1, span, caches, nullptr);
  // the first largest logit (NaN counts as largest, as torch.argmax has it)
  auto largest = [](const auto* logits, int64_t n) {
    int64_t best = 0;
    float top = as_float(logits[0]);
    for (int64_t i = 1; i < n; ++i) {
      const float value = as_float(logits[i]);
      if (value > top || (std::isnan(value) && !std::isnan(top))) top = value, best = i;
    }
    return best;
  };
  return bf16_ ? largest(reinterpret_cast<const bf16*>(logits_.const_data_ptr()), vocab_)
               : largest(logits_.const_data_ptr<float>(), vocab_);
}

at::Tensor KernelDecoder::step_rows(const std::vector<int64_t>& tokens, int64_t pos, int64_t prompt_len,
                                    const std::vector<at::Tensor>& caches, const std::vector<at::Tensor>& beam_caches) {
  std::vector<int64_t> cache_rows(tokens.size());
  for (size_t n = 0; n < cache_rows.size(); ++n) cache_rows[n] = static_cast<int64_t>(n);
  return step_rows(tokens, std::vector<int64_t>(tokens.size(), pos), cache_rows, prompt_len, caches, beam_caches);
}

at::Tensor KernelDecoder::step_rows(const std::vector<int64_t>& tokens, const std::vector<int64_t>& positions,
                                    const std::vector<int64_t>& cache_rows, int64_t shared_len,
                                    const std::vector<at::Tensor>& caches, const std::vector<at::Tensor>& beam_caches) {
  const auto rows = static_cast<int64_t>(tokens.size());
  if (rows < 1 || rows > kMaxRows)
    throw std::invalid_argument(std::to_string(rows) + " beam rows: the kernels decode 1 to " +
                                std::to_string(kMaxRows) + " together");
  if (positions.size() != tokens.size() || cache_rows.size() != tokens.size())
    throw std::invalid_argument("step_rows: one position and one cache row per token");
  for (int64_t token : tokens) check_token(token);
  if (caches.size() != 2 * layers_.size() || beam_caches.size() != 2 * layers_.size())
    throw std::invalid_argument("expected one key and one value cache per layer, shared and per beam");
  const int64_t capacity = beam_caches[0].size(2), cache_row_count = beam_caches[0].size(0);
  const auto expected = bf16_ ? at::kBFloat16 : at::kFloat;
  for (size_t i = 0; i < beam_caches.size(); ++i) {
    const at::Tensor& cache = beam_caches[i];
    if (cache.dim() != 4 || cache.size(0) != cache_row_count || cache.size(1) != layers_[i / 2].kv_heads ||
        cache.size(2) != capacity || cache.size(3) != head_dim_ || !cache.is_contiguous() ||
        cache.scalar_type() != expected)
      throw std::invalid_argument("beam cache " + std::to_string(i) + " is not a contiguous [rows, kv_heads, " +
                                  "capacity, head_dim] tensor of the model's dtype like the first");
  }
  std::vector<bool> taken(static_cast<size_t>(cache_row_count), false);
  for (int64_t n = 0; n < rows; ++n) {
    const int64_t pos = positions[n], row = cache_rows[n];
    if (shared_len < 1 || pos < shared_len || pos >= max_seq_len_)
      throw std::invalid_argument("position " + std::to_string(pos) + " after a shared prompt of " +
                                  std::to_string(shared_len) + " is outside the cache");
    if (pos - shared_len >= capacity)
      throw std::invalid_argument("beam slot " + std::to_string(pos - shared_len) + " exceeds the beam caches' " +
                                  std::to_string(capacity));
    if (row < 0 || row >= cache_row_count || taken[row])
      throw std::invalid_argument("cache row " + std::to_string(row) + " is outside 0.." +
                                  std::to_string(cache_row_count - 1) + " or used by two rows");
    taken[row] = true;
  }
  const Span span{shared_len, capacity, positions.data(), cache_rows.data()};
  if (bf16_) run_as<bf16>(tokens.data(), rows, span, caches, &beam_caches);
  else run_as<float>(tokens.data(), rows, span, caches, &beam_caches);
  return logits_.narrow(0, 0, rows).narrow(1, 0, vocab_).to(at::kFloat).contiguous();
}

template <typename T>
void KernelDecoder::run_as(const int64_t* tokens, int64_t rows, const Span& span, const std::vector<at::Tensor>& caches,
                           const std::vector<at::Tensor>* beam_caches) {
  auto ptr = [](const at::Tensor& t) { return reinterpret_cast<T*>(t.data_ptr()); };
  auto cptr = [](const at::Tensor& t) { return reinterpret_cast<const T*>(t.const_data_ptr()); };
  last_rows_ = rows;
  T* x = ptr(x_);
  T* h = ptr(h_);
  T* qkv = ptr(qkv_);
  T* gate_up = ptr(gate_up_);
  T* act = ptr(act_);
  T* logits = ptr(logits_);
  // row strides of the scratch
  const int64_t xs = x_.size(1), qs = qkv_.size(1), gs = gate_up_.size(1), as = act_.size(1), ls = logits_.size(1);
  const int64_t ns = normed_.size(2), qrs = queries_.size(2);
  const float scale = static_cast<float>(scale_);
  const int64_t hd = head_dim_;
  // per row: its own slots (the last one new) and its rotary tables; `total` spans the longest row
  int64_t own[kMaxRows];
  const T* cos[kMaxRows];
  const T* sin[kMaxRows];
  int64_t total = span.shared;
  for (int64_t n = 0; n < rows; ++n) {
    own[n] = beam_caches ? span.positions[n] - span.shared + 1 : 0;
    total = std::max(total, span.shared + own[n]);
    cos[n] = cptr(cos_) + span.positions[n] * head_dim_;
    sin[n] = cptr(sin_) + span.positions[n] * head_dim_;
  }
  const int64_t share_stride = shares_.size(1) * shares_.size(2), state_stride = shares_.size(2);

  // One team run per token: every member walks all layers, taking its rows of each matrix product (for all beam
  // rows at once), its share of the attended positions and its slice of each elementwise step, with five barriers
  // per layer. The residual stream x is split by columns: a member adds the columns of h it computed itself, so no
  // barrier is needed there. A norm needs the sum of squares of all of a row of x: each member adds up its slice
  // into partial_, and after a barrier every member adds the partials in the same order and norms the whole of x
  // into its own copy (normed_), so all get the same input for the next product without another barrier.
  float* partial = partial_.data();
  team_.run([&](int thread, int threads) {
    const auto [lo, hi] = share(hidden_, thread, threads, 16);
    T* normed = ptr(normed_[thread]);
    T* queries = ptr(queries_[thread]);
    T* attn = ptr(attn_[thread]);
    float* scores = scores_[thread].data_ptr<float>();
    float* shares = shares_.data_ptr<float>();
    auto norm_whole = [&](const at::Tensor& weight) {  // normed = norm(x) * weight, once partial[] is written
      team_.barrier();
      for (int64_t n = 0; n < rows; ++n) {
        float squares = 0.0f;
        for (int t = 0; t < threads; ++t) squares += partial[t * kMaxRows + n];
        scale_norm(x + n * xs, cptr(weight), normed + n * ns, inverse_rms(squares, hidden_, eps_), 0, hidden_);
      }
    };
    for (int64_t n = 0; n < rows; ++n) {
      const T* embedding = cptr(embed_) + tokens[n] * hidden_;
      std::copy(embedding + lo, embedding + hi, x + n * xs + lo);
      partial[thread * kMaxRows + n] = sum_of_squares(x + n * xs, lo, hi);
    }
    norm_whole(layers_[0].attn_norm);
    for (size_t index = 0; index < layers_.size(); ++index) {
      const Layer& layer = layers_[index];
      T* k_cache = ptr(caches[2 * index]);  // [1, kv_heads, max_seq_len, head_dim]
      T* v_cache = ptr(caches[2 * index + 1]);
      T* k_own = beam_caches ? ptr((*beam_caches)[2 * index]) : nullptr;  // [rows+, kv_heads, capacity, head_dim]
      T* v_own = beam_caches ? ptr((*beam_caches)[2 * index + 1]) : nullptr;
      const int64_t own_row = layer.kv_heads * span.capacity * hd, group = layer.heads / layer.kv_heads;
      gemv<T>(layer.qkv, normed, ns, qkv, qs, rows, thread, threads);
      team_.barrier();
      // This member's share of the attended positions (shared ones, then the row's own); the member holding the
      // new position first writes its rotated key and its value.
      const auto [first, end] = share(total, thread, threads, 16);
      for (int64_t n = 0; n < rows; ++n) {
        const int64_t last = span.shared + own[n] - 1;  // the row's new position among those attended
        if (last < first || last >= end) continue;
        const T* row = qkv + n * qs;
        const int64_t cache_row = own[n] ? span.cache_rows[n] : 0;
        for (int64_t g = 0; g < layer.kv_heads; ++g) {
          const int64_t at_shared = (g * max_seq_len_ + span.shared - 1) * hd;
          const int64_t at_own = cache_row * own_row + (g * span.capacity + own[n] - 1) * hd;
          T* key = own[n] ? k_own + at_own : k_cache + at_shared;
          T* value = own[n] ? v_own + at_own : v_cache + at_shared;
          rotate(row + (layer.heads + g) * hd, key, cos[n], sin[n], hd);
          std::copy(row + (layer.heads + layer.kv_heads + g) * hd, row + (layer.heads + layer.kv_heads + g + 1) * hd,
                    value);
        }
      }
      // Per key/value head, every row's queries in turn: this member's share of the shared cache is read from
      // memory once and from the caches after that.
      Segments<T> segments{nullptr, nullptr, std::min(first, span.shared), std::min(end, span.shared),
                           nullptr, nullptr, std::max(first, span.shared) - span.shared, 0, span.shared};
      for (int64_t g = 0; g < layer.kv_heads; ++g) {
        segments.keys = k_cache + g * max_seq_len_ * hd;
        segments.values = v_cache + g * max_seq_len_ * hd;
        for (int64_t n = 0; n < rows; ++n) {
          const int64_t own_base = own[n] ? span.cache_rows[n] * own_row + g * span.capacity * hd : 0;
          segments.own_keys = own[n] ? k_own + own_base : nullptr;
          segments.own_values = own[n] ? v_own + own_base : nullptr;
          segments.own_end = std::min(std::max(end, span.shared) - span.shared, own[n]);
          for (int64_t j = g * group; j < (g + 1) * group; ++j) {
            float* state = shares + thread * share_stride + (n * layer.heads + j) * state_stride;
            T* query = queries + n * qrs + j * hd;
            rotate(qkv + n * qs + j * hd, query, cos[n], sin[n], hd);
            attend_share(query, segments, hd, scale, scores, state, state + 2);
          }
        }
      }
      team_.barrier();
      for (int64_t n = 0; n < rows; ++n)
        for (int64_t j = 0; j < layer.heads; ++j)
          merge_shares(shares + (n * layer.heads + j) * state_stride, share_stride, threads, hd,
                       attn + n * qrs + j * hd);
      gemv<T>(layer.out, attn, qrs, h, xs, rows, thread, threads);
      for (int64_t n = 0; n < rows; ++n) partial[thread * kMaxRows + n] = add_and_square(x + n * xs, h + n * xs, lo, hi);
      norm_whole(layer.mlp_norm);
      // gate rows [a, b) and the matching up rows: this member's slice of the activations needs no barrier
      const auto [a, b] = share(layer.width, thread, threads, 16);
      const T* gate_up_weight = cptr(layer.gate_up);
      gemv_rows(gate_up_weight, normed, ns, gate_up, gs, rows, a, b, hidden_);
      gemv_rows(gate_up_weight, normed, ns, gate_up, gs, rows, layer.width + a, layer.width + b, hidden_);
      for (int64_t n = 0; n < rows; ++n) silu_times(gate_up + n * gs, gate_up + n * gs + layer.width, act + n * as, a, b);
      team_.barrier();
      gemv<T>(layer.down, act, as, h, xs, rows, thread, threads);
      for (int64_t n = 0; n < rows; ++n) partial[thread * kMaxRows + n] = add_and_square(x + n * xs, h + n * xs, lo, hi);
      norm_whole(index + 1 == layers_.size() ? norm_ : layers_[index + 1].attn_norm);
    }
    gemv<T>(lm_head_, normed, ns, logits, ls, rows, thread, threads);  // this member's rows of the logits
  });
}

std::vector<float> KernelDecoder::last_logits() const {
  at::Tensor flat = logits_[0].narrow(0, 0, vocab_).to(at::kFloat).contiguous();
  return std::vector<float>(flat.data_ptr<float>(), flat.data_ptr<float>() + flat.numel());
}

}  // namespace sqlcopilot
