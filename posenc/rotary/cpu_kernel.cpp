// The RoPE rotation of one strided tensor on the CPU: load, rotate in float32 (float64 for float64
// input), store in the input's dtype. Built by posenc/rotary/cpu_kernel.py with the system compiler
// and called through ctypes; see that module for why and how.
//
// x and o (may be the same memory: in place) are (n0, n1, n2, n3, d) with element strides xs/os for
// the four leading dimensions and 1 for the last; cos/sin are tables of `half` entries per row whose
// row for leading index (i0, i1, i2, i3) starts at i0*ts[0] + i1*ts[1] + i2*ts[2] + i3*ts[3] (stride 0
// where the angles are shared). The first 2*half features are rotated, pairs either adjacent
// (x[2j], x[2j+1]) or split halves (x[j], x[j+half]); the rest are copied. `sign` is +1 for the
// rotation and -1 for its inverse (the backward).
//
// No fused multiply-adds: built with -ffp-contract=off and, where the compiler takes it,
// -fno-tree-slp-vectorize (GCC 12 otherwise rotated the float64 adjacent pairs left over past a
// multiple of four with vfmaddsub, a fused multiply-add, whatever -ffp-contract said).
#include <cstdint>
#include <cstring>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__AVX__)
#include <immintrin.h>
#define POSENC_STREAM_BYTES 32
#elif defined(__SSE2__)
#define POSENC_STREAM_BYTES 16
#endif
#if defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>
#define POSENC_AVX512 1
#endif

namespace {

inline float widen(uint16_t h) {  // bfloat16 -> float32: its bits are the upper half of a float32
  const uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline float widen(float f) { return f; }
inline double widen(double f) { return f; }

inline void narrow(uint16_t* p, float f) {  // float32 -> bfloat16, to nearest, ties to even; NaN stays NaN
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  *p = ((u & 0x7FFFFFFFu) > 0x7F800000u) ? uint16_t((u >> 16) | 0x40u) : uint16_t(rounded);
}
inline void narrow(float* p, float f) { *p = f; }
inline void narrow(double* p, double f) { *p = f; }

#ifdef POSENC_AVX512
// bfloat16 rows with AVX-512, 16 pairs per step (half a multiple of 16): the compiler's own
// vectorisation of the scalar code widens and narrows one lane at a time through permutes
inline __m512 widen16(const uint16_t* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p)), 16));
}
// float32 lanes rounded to bfloat16 (nearest, ties to even; NaN quiet), in the upper 16 bits of each lane
inline __m512i round16(__m512 f) {
  const __m512i u = _mm512_castps_si512(f);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF)));
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7FFFFFFF)),
                                                _mm512_set1_epi32(0x7F800000));
  return _mm512_mask_or_epi32(rounded, nan, u, _mm512_set1_epi32(0x00400000));
}
inline void narrow16(uint16_t* p, __m512 f) {
  _mm256_storeu_si256((__m256i*)p, _mm512_cvtepi32_epi16(_mm512_srli_epi32(round16(f), 16)));
}
template <bool PAIRS>
inline void rotate_row_bf16(const uint16_t* xr, uint16_t* orow, const float* c, const float* s, int64_t half,
                            float sign) {
  const __m512 sg = _mm512_set1_ps(sign);
  for (int64_t j = 0; j < half; j += 16) {
    const __m512 cj = _mm512_loadu_ps(c + j), sj = _mm512_mul_ps(sg, _mm512_loadu_ps(s + j));
    if (PAIRS) {
      // 16 adjacent pairs as 16 int32 words (x1 << 16 | x0): each half shifted or masked into the
      // upper bits is that value in float32, and the results merge back the same way
      const __m512i w = _mm512_loadu_si512((const void*)(xr + 2 * j));
      const __m512 a = _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
      const __m512 b = _mm512_castsi512_ps(_mm512_and_si512(w, _mm512_set1_epi32((int)0xFFFF0000u)));
      const __m512i lo = round16(_mm512_sub_ps(_mm512_mul_ps(a, cj), _mm512_mul_ps(b, sj)));
      const __m512i hi = round16(_mm512_add_ps(_mm512_mul_ps(a, sj), _mm512_mul_ps(b, cj)));
      const __m512i out = _mm512_or_si512(_mm512_srli_epi32(lo, 16), _mm512_and_si512(hi, _mm512_set1_epi32((int)0xFFFF0000u)));
      _mm512_storeu_si512((void*)(orow + 2 * j), out);
    } else {
      const __m512 a = widen16(xr + j), b = widen16(xr + j + half);
      narrow16(orow + j, _mm512_sub_ps(_mm512_mul_ps(a, cj), _mm512_mul_ps(b, sj)));
      narrow16(orow + j + half, _mm512_add_ps(_mm512_mul_ps(a, sj), _mm512_mul_ps(b, cj)));
    }
  }
}

// float32 rows with AVX-512, 16 pairs per step: adjacent pairs are de-interleaved and re-interleaved
// with two-source permutes instead of the compiler's strided gathers
template <bool PAIRS>
inline void rotate_row_f32(const float* xr, float* orow, const float* c, const float* s, int64_t half, float sign) {
  const __m512 sg = _mm512_set1_ps(sign);
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  const __m512i low = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i high = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  for (int64_t j = 0; j < half; j += 16) {
    const __m512 cj = _mm512_loadu_ps(c + j), sj = _mm512_mul_ps(sg, _mm512_loadu_ps(s + j));
    if (PAIRS) {
      const __m512 v0 = _mm512_loadu_ps(xr + 2 * j), v1 = _mm512_loadu_ps(xr + 2 * j + 16);
      const __m512 a = _mm512_permutex2var_ps(v0, even, v1), b = _mm512_permutex2var_ps(v0, odd, v1);
      const __m512 lo = _mm512_sub_ps(_mm512_mul_ps(a, cj), _mm512_mul_ps(b, sj));
      const __m512 hi = _mm512_add_ps(_mm512_mul_ps(a, sj), _mm512_mul_ps(b, cj));
      _mm512_storeu_ps(orow + 2 * j, _mm512_permutex2var_ps(lo, low, hi));
      _mm512_storeu_ps(orow + 2 * j + 16, _mm512_permutex2var_ps(lo, high, hi));
    } else {
      const __m512 a = _mm512_loadu_ps(xr + j), b = _mm512_loadu_ps(xr + j + half);
      _mm512_storeu_ps(orow + j, _mm512_sub_ps(_mm512_mul_ps(a, cj), _mm512_mul_ps(b, sj)));
      _mm512_storeu_ps(orow + j + half, _mm512_add_ps(_mm512_mul_ps(a, sj), _mm512_mul_ps(b, cj)));
    }
  }
}
#endif

// Rows at most this many bytes wide can be written with streaming (non-temporal) stores, see streams().
constexpr int64_t STREAM_ROW_BYTES = 4096;

#ifdef POSENC_STREAM_BYTES
// Copy `bytes` (a multiple of POSENC_STREAM_BYTES) from the cache-resident `src` to `dst` (aligned to
// POSENC_STREAM_BYTES) with streaming stores.
inline void stream_row(void* dst, const void* src, int64_t bytes) {
  char* d = static_cast<char*>(dst);
  const char* s = static_cast<const char*>(src);
#if POSENC_STREAM_BYTES == 32
  for (int64_t i = 0; i < bytes; i += 32)
    _mm256_stream_ps(reinterpret_cast<float*>(d + i), _mm256_loadu_ps(reinterpret_cast<const float*>(s + i)));
#else
  for (int64_t i = 0; i < bytes; i += 16)
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i), _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i)));
#endif
}
#endif

// One row: the first 2*half features rotated (pairs adjacent or split halves), the rest copied.
// x and o may be one row (in place): each pair is read before it is written and no iteration
// touches another's pair, so the loops carry no dependence (omp simd)
template <typename T, typename W, bool PAIRS>
inline void rotate_row(const T* xr, T* orow, const W* c, const W* s, int64_t d, int64_t half, W sign) {
  bool vectorised = false;
#ifdef POSENC_AVX512
  if constexpr (sizeof(T) == 2 || sizeof(T) == 4) {
    if (half % 16 == 0) {
      if constexpr (sizeof(T) == 2) rotate_row_bf16<PAIRS>(xr, orow, c, s, half, sign);
      else rotate_row_f32<PAIRS>(xr, orow, c, s, half, sign);
      vectorised = true;
    }
  }
#endif
  if (!vectorised) {  // the portable loop: other pair counts, float64, no AVX-512
    if (PAIRS) {
#pragma omp simd
      for (int64_t j = 0; j < half; ++j) {
        const W a = widen(xr[2 * j]), b = widen(xr[2 * j + 1]), cj = c[j], sj = sign * s[j];
        narrow(orow + 2 * j, a * cj - b * sj);
        narrow(orow + 2 * j + 1, a * sj + b * cj);
      }
    } else {
#pragma omp simd
      for (int64_t j = 0; j < half; ++j) {
        const W a = widen(xr[j]), b = widen(xr[j + half]), cj = c[j], sj = sign * s[j];
        narrow(orow + j, a * cj - b * sj);
        narrow(orow + j + half, a * sj + b * cj);
      }
    }
  }
  if (orow != xr)
    for (int64_t j = 2 * half; j < d; ++j) orow[j] = xr[j];
}

// Whether the rows of an out-of-place output `o` (strides os, sizes size) are written with streaming
// stores: at least `min_bytes` of them (past the share of the last-level cache a call can expect to
// keep, an ordinary store first reads each output line from memory to own it, a third stream beside
// reading x and writing the result; a streaming store skips that read, as a large memcpy() does;
// smaller outputs stay in the cache for whatever reads them next), rows a whole number of stores wide
// (at most STREAM_ROW_BYTES) and every row aligned for them.
template <typename T>
bool streams(const T* x, const T* o, const int64_t* size, const int64_t* os, int64_t d, int64_t min_bytes) {
#ifdef POSENC_STREAM_BYTES
  const int64_t row = d * int64_t(sizeof(T));
  const int64_t bytes = size[0] * size[1] * size[2] * size[3] * row;
  if (static_cast<const void*>(x) == static_cast<const void*>(o) || min_bytes < 0 || bytes < min_bytes ||
      row % POSENC_STREAM_BYTES || row > STREAM_ROW_BYTES || reinterpret_cast<uintptr_t>(o) % POSENC_STREAM_BYTES)
    return false;
  for (int i = 0; i < 4; ++i)
    if (size[i] > 1 && (os[i] * int64_t(sizeof(T))) % POSENC_STREAM_BYTES) return false;
  return true;
#else
  (void)x, (void)o, (void)size, (void)os, (void)d, (void)min_bytes;
  return false;
#endif
}

// HALF > 0: the number of pairs, known when compiling (the common head sizes); 0: read `half`
template <typename T, typename W, bool PAIRS, int64_t HALF>
void rotate(const T* x, T* o, const W* cs, const W* sn, const int64_t* size, const int64_t* xs,
            const int64_t* os, const int64_t* ts, int64_t d, int64_t half_, W sign, int threads,
            int64_t stream_min_bytes) {
  const int64_t half = HALF ? HALF : half_;
  const int64_t n0 = size[0], n1 = size[1], n2 = size[2], n3 = size[3];
  const int64_t x0 = xs[0], x1 = xs[1], x2 = xs[2], x3 = xs[3];
  const int64_t o0 = os[0], o1 = os[1], o2 = os[2], o3 = os[3];
  const int64_t t0 = ts[0], t1 = ts[1], t2 = ts[2], t3 = ts[3];
  const int64_t elements = n0 * n1 * n2 * n3 * d;
  const bool stream = streams(x, o, size, os, d, stream_min_bytes);
#pragma omp parallel num_threads(threads) if (threads > 1 && elements >= 32768)
  {
#pragma omp for collapse(3) schedule(static)
    for (int64_t i0 = 0; i0 < n0; ++i0)
      for (int64_t i1 = 0; i1 < n1; ++i1)
        for (int64_t i2 = 0; i2 < n2; ++i2)
          for (int64_t i3 = 0; i3 < n3; ++i3) {
            const T* xr = x + i0 * x0 + i1 * x1 + i2 * x2 + i3 * x3;
            T* orow = o + i0 * o0 + i1 * o1 + i2 * o2 + i3 * o3;
            const int64_t t = i0 * t0 + i1 * t1 + i2 * t2 + i3 * t3;
#ifdef POSENC_STREAM_BYTES
            if (stream) {  // rotated in the L1 cache, then streamed out
              alignas(64) T row[STREAM_ROW_BYTES / sizeof(T)];
              rotate_row<T, W, PAIRS>(xr, row, cs + t, sn + t, d, half, sign);
              stream_row(orow, row, d * int64_t(sizeof(T)));
              continue;
            }
#endif
            rotate_row<T, W, PAIRS>(xr, orow, cs + t, sn + t, d, half, sign);
          }
#ifdef POSENC_STREAM_BYTES
    if (stream) _mm_sfence();  // this thread's streaming stores are done before the region ends
#endif
  }
}

// layout: the four leading sizes, then the four strides of x, of o and of the tables
template <typename T, typename W, bool PAIRS>
void dispatch(const void* x, void* o, const void* c, const void* s, const int64_t* layout, int64_t d,
              int64_t half, double sign, int threads, int64_t stream_min_bytes) {
  const int64_t *size = layout, *xs = layout + 4, *os = layout + 8, *ts = layout + 12;
  const T* xt = static_cast<const T*>(x);
  T* ot = static_cast<T*>(o);
  const W* ct = static_cast<const W*>(c);
  const W* st = static_cast<const W*>(s);
  switch (half) {
    case 16: return rotate<T, W, PAIRS, 16>(xt, ot, ct, st, size, xs, os, ts, d, half, W(sign), threads, stream_min_bytes);
    case 32: return rotate<T, W, PAIRS, 32>(xt, ot, ct, st, size, xs, os, ts, d, half, W(sign), threads, stream_min_bytes);
    case 64: return rotate<T, W, PAIRS, 64>(xt, ot, ct, st, size, xs, os, ts, d, half, W(sign), threads, stream_min_bytes);
    default: return rotate<T, W, PAIRS, 0>(xt, ot, ct, st, size, xs, os, ts, d, half, W(sign), threads, stream_min_bytes);
  }
}

}  // namespace

#define POSENC_ENTRY(NAME, T, W, PAIRS)                                                                   \
  extern "C" void NAME(const void* x, void* o, const void* c, const void* s, const int64_t* layout,       \
                       int64_t d, int64_t half, double sign, int threads, int64_t stream_min_bytes) {      \
    dispatch<T, W, PAIRS>(x, o, c, s, layout, d, half, sign, threads, stream_min_bytes);                   \
  }

POSENC_ENTRY(posenc_rope_bfloat16_halves, uint16_t, float, false)
POSENC_ENTRY(posenc_rope_bfloat16_pairs, uint16_t, float, true)
POSENC_ENTRY(posenc_rope_float32_halves, float, float, false)
POSENC_ENTRY(posenc_rope_float32_pairs, float, float, true)
POSENC_ENTRY(posenc_rope_float64_halves, double, double, false)
POSENC_ENTRY(posenc_rope_float64_pairs, double, double, true)

// The smallest and largest of n int64 positions (contiguous) into bounds[0], bounds[1]; returns 1 when
// they are consecutive (p[i] = p[0] + i), else 0. n > 0. One pass, for the angle cache's range check.
extern "C" int posenc_int64_bounds(const int64_t* p, int64_t n, int64_t* bounds) {
  int64_t low = p[0], high = p[0];
  bool consecutive = true;
  for (int64_t i = 1; i < n; ++i) {
    const int64_t v = p[i];
    low = v < low ? v : low;
    high = v > high ? v : high;
    consecutive &= uint64_t(v) - uint64_t(p[i - 1]) == 1u;  // unsigned: no overflow
  }
  bounds[0] = low;
  bounds[1] = high;
  return consecutive ? 1 : 0;
}
