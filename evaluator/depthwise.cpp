// Depthwise convolution loops for channels_last float32 tensors on CPU (see depthwise.py).
//
// A tensor (N, C, H, W) in channels_last is, in memory, N * H image rows of W * C floats. At stride 1
// a tap shifts a whole image row by a multiple of C, so the loops vectorise the flattened (w, c) axis of
// a row against the tap's weights tiled along it (no lanes wasted when C is not a multiple of the
// vector width); at other strides they vectorise the channel axis of each position. Taps are visited
// in (kh, kw) order, skipping those that fall in the zero padding. The (C, 1, K, K) weight is first
// copied tap-major, wt[(kh * K + kw) * C + c].
//
// forward:  y[n, oh, ow, c]  = sum_taps x[n, oh*S - P + kh, ow*S - P + kw, c] * wt[kh, kw, c]
// input:    dx[n, h, w, c]   = sum of g[n, oh, ow, c] * wt[kh, kw, c] over the taps with
//                              oh*S - P + kh = h and ow*S - P + kw = w (a gather: no two threads write
//                              the same element); at stride 1 the forward loop on g with the kernel
//                              flipped
// weight:   dwt[kh, kw, c]   = sum_{n, oh, ow} g[n, oh, ow, c] * x[n, oh*S - P + kh, ow*S - P + kw, c],
//                              summed per sample (in parallel), then over the samples in order, so the
//                              result does not depend on the thread count.
#include <torch/csrc/inductor/cpp_prefix.h>

#include <algorithm>
#include <vector>

namespace {

using V = at::vec::Vectorized<float>;
constexpr int64_t kWidth = V::size();
constexpr int64_t kMaxTaps = 49;  // K <= 7

inline V load(const float* p, int64_t lanes) {
  return lanes == kWidth ? V::loadu(p) : V::loadu(p, lanes);
}

inline void store(const V& v, float* p, int64_t lanes) {
  if (lanes == kWidth) v.store(p); else v.store(p, lanes);
}

struct Geometry {
  int64_t N, H, W, C, Ho, Wo, K, S, P;

  // The taps [k0, k1) of a kernel row or column placed at input offset `start` that land inside [0, size).
  void valid(int64_t start, int64_t size, int64_t& k0, int64_t& k1) const {
    k0 = std::max<int64_t>(0, -start);
    k1 = std::min<int64_t>(K, size - start);
  }
  const float* row(const float* t, int64_t n, int64_t h, int64_t w, int64_t height, int64_t width) const {
    return t + ((n * height + h) * width + w) * C;
  }
};

// The weight (C, 1, K, K) tap-major: wt[k * C + c] = weight[c * K * K + k].
std::vector<float> tap_major(const float* weight, int64_t C, int64_t taps) {
  std::vector<float> wt(static_cast<size_t>(taps * C));
  for (int64_t c = 0; c < C; c++) {
    for (int64_t k = 0; k < taps; k++) wt[k * C + c] = weight[c * taps + k];
  }
  return wt;
}

// The taps' weights tiled along an image row: tiled[k * W * C + w * C + c] = wt[k' * C + c], with
// k' = k, or the flipped kernel's tap K * K - 1 - k.
std::vector<float> tile_taps(const float* wt, int64_t taps, int64_t W, int64_t C, bool flip) {
  std::vector<float> tiled(static_cast<size_t>(taps * W * C));
  for (int64_t k = 0; k < taps; k++) {
    const float* src = wt + (flip ? taps - 1 - k : k) * C;
    for (int64_t w = 0; w < W; w++) std::copy(src, src + C, tiled.data() + (k * W + w) * C);
  }
  return tiled;
}

// out[j] += a[j] * b[j] for j in [0, n) (one fused multiply-add per element).
inline void fma_row(float* out, const float* a, const float* b, int64_t n) {
  for (int64_t j = 0; j < n; j += kWidth) {
    const int64_t lanes = std::min(kWidth, n - j);
    store(at::vec::fmadd(load(a + j, lanes), load(b + j, lanes), load(out + j, lanes)), out + j, lanes);
  }
}

// Stride 1: f(tap, in, w0, w1) for each tap of output row oh (sample n) that reads an input row: `in` points
// at input row oh - P + kh, and the tap shifts it by (kw - P) * C over output columns [w0, w1).
template <typename F>
inline void for_row_taps(const Geometry& g, const float* t, int64_t n, int64_t oh, F&& f) {
  int64_t kh0, kh1;
  g.valid(oh - g.P, g.H, kh0, kh1);
  for (int64_t kh = kh0; kh < kh1; kh++) {
    const float* in = t + (n * g.H + oh - g.P + kh) * g.W * g.C;
    for (int64_t kw = 0; kw < g.K; kw++) {
      const int64_t shift = kw - g.P, w0 = std::max<int64_t>(0, -shift), w1 = std::min(g.W, g.W - shift);
      if (w1 > w0) f(kh * g.K + kw, in + shift * g.C, w0, w1);
    }
  }
}

// Stride 1: y = the correlation of x with the (possibly flipped) kernel, one image row at a time.
void correlate_rows(const float* x, const float* wt, float* y, const Geometry& g, bool flip, int threads) {
  const int64_t W = g.W, C = g.C, row = W * C;
  const std::vector<float> tiled = tile_taps(wt, g.K * g.K, W, C, flip);
#pragma omp parallel for num_threads(threads) schedule(static) collapse(2)
  for (int64_t n = 0; n < g.N; n++) {
    for (int64_t oh = 0; oh < g.H; oh++) {
      float* out = y + (n * g.H + oh) * row;
      std::fill(out, out + row, 0.0f);
      for_row_taps(g, x, n, oh, [&](int64_t tap, const float* in, int64_t w0, int64_t w1) {
        fma_row(out + w0 * C, in + w0 * C, tiled.data() + (tap * W + w0) * C, (w1 - w0) * C);
      });
    }
  }
}

// Stride 1: one sample's weight-gradient partial sums, part[k * C + c], through per-tap row accumulators.
void weight_rows(const float* grad, const float* x, float* part, int64_t n, const Geometry& g,
                 std::vector<float>& rows) {
  const int64_t W = g.W, C = g.C, row = W * C, taps = g.K * g.K;
  std::fill(rows.begin(), rows.end(), 0.0f);
  for (int64_t oh = 0; oh < g.H; oh++) {
    const float* gr = grad + (n * g.H + oh) * row;
    for_row_taps(g, x, n, oh, [&](int64_t tap, const float* in, int64_t w0, int64_t w1) {
      fma_row(rows.data() + tap * row + w0 * C, gr + w0 * C, in + w0 * C, (w1 - w0) * C);
    });
  }
  for (int64_t k = 0; k < taps; k++) {
    float* out = part + k * C;
    std::copy(rows.data() + k * row, rows.data() + k * row + C, out);
    for (int64_t w = 1; w < W; w++) {
      const float* r = rows.data() + k * row + w * C;
      for (int64_t c = 0; c < C; c += kWidth) {
        const int64_t lanes = std::min(kWidth, C - c);
        store(load(out + c, lanes) + load(r + c, lanes), out + c, lanes);
      }
    }
  }
}

// Other strides: one sample's weight-gradient partial sums, part[k * C + c], with the taps' accumulators of a
// block of channels in registers.
void weight_positions(const float* grad, const float* x, float* part, int64_t n, const Geometry& g) {
  const int64_t K = g.K, S = g.S, P = g.P, C = g.C, taps = K * K;
  for (int64_t c = 0; c < C; c += kWidth) {
    const int64_t lanes = std::min(kWidth, C - c);
    V acc[kMaxTaps];
    for (int64_t k = 0; k < taps; k++) acc[k] = V(0.0f);
    for (int64_t oh = 0; oh < g.Ho; oh++) {
      int64_t kh0, kh1;
      g.valid(oh * S - P, g.H, kh0, kh1);
      for (int64_t ow = 0; ow < g.Wo; ow++) {
        int64_t kw0, kw1;
        g.valid(ow * S - P, g.W, kw0, kw1);
        const V gv = load(grad + ((n * g.Ho + oh) * g.Wo + ow) * C + c, lanes);
        for (int64_t kh = kh0; kh < kh1; kh++) {
          const float* in = g.row(x, n, oh * S - P + kh, ow * S - P, g.H, g.W) + c;
          for (int64_t kw = kw0; kw < kw1; kw++) {
            acc[kh * K + kw] = at::vec::fmadd(gv, load(in + kw * C, lanes), acc[kh * K + kw]);
          }
        }
      }
    }
    for (int64_t k = 0; k < taps; k++) store(acc[k], part + k * C + c, lanes);
  }
}

}  // namespace

extern "C" {

void depthwise_forward(const float* x, const float* weight, float* y, int64_t N, int64_t H, int64_t W,
                       int64_t C, int64_t Ho, int64_t Wo, int64_t K, int64_t S, int64_t P, int threads) {
  const Geometry g{N, H, W, C, Ho, Wo, K, S, P};
  const std::vector<float> taps = tap_major(weight, C, K * K);
  const float* wt = taps.data();
  if (S == 1) return correlate_rows(x, wt, y, g, false, threads);
#pragma omp parallel for num_threads(threads) schedule(static) collapse(2)
  for (int64_t n = 0; n < N; n++) {
    for (int64_t oh = 0; oh < Ho; oh++) {
      int64_t kh0, kh1;
      g.valid(oh * S - P, H, kh0, kh1);
      for (int64_t ow = 0; ow < Wo; ow++) {
        int64_t kw0, kw1;
        g.valid(ow * S - P, W, kw0, kw1);
        float* out = y + ((n * Ho + oh) * Wo + ow) * C;
        for (int64_t c = 0; c < C; c += kWidth) {
          const int64_t lanes = std::min(kWidth, C - c);
          V acc(0.0f);
          for (int64_t kh = kh0; kh < kh1; kh++) {
            const float* in = g.row(x, n, oh * S - P + kh, ow * S - P, H, W) + c;
            for (int64_t kw = kw0; kw < kw1; kw++) {
              acc = at::vec::fmadd(load(in + kw * C, lanes), load(wt + (kh * K + kw) * C + c, lanes), acc);
            }
          }
          store(acc, out + c, lanes);
        }
      }
    }
  }
}

void depthwise_backward_input(const float* grad, const float* weight, float* dx, int64_t N, int64_t H,
                              int64_t W, int64_t C, int64_t Ho, int64_t Wo, int64_t K, int64_t S,
                              int64_t P, int threads) {
  const Geometry g{N, H, W, C, Ho, Wo, K, S, P};
  const std::vector<float> taps = tap_major(weight, C, K * K);
  const float* wt = taps.data();
  if (S == 1) return correlate_rows(grad, wt, dx, g, true, threads);
  // The taps that reach input column w: (kw, ow) pairs in cols[col_start[w], col_start[w + 1]).
  std::vector<int64_t> col_start(W + 1, 0), cols;
  for (int64_t w = 0; w < W; w++) {
    for (int64_t kw = 0; kw < K; kw++) {
      const int64_t t = w + P - kw;  // = ow * S for the output column this tap comes from
      if (t >= 0 && t % S == 0 && t / S < Wo) { cols.push_back(kw); cols.push_back(t / S); }
    }
    col_start[w + 1] = static_cast<int64_t>(cols.size()) / 2;
  }
#pragma omp parallel for num_threads(threads) schedule(static) collapse(2)
  for (int64_t n = 0; n < N; n++) {
    for (int64_t h = 0; h < H; h++) {
      int64_t rows[2 * 7], nrows = 0;  // (kh, oh) pairs, K <= 7
      for (int64_t kh = 0; kh < K; kh++) {
        const int64_t t = h + P - kh;
        if (t >= 0 && t % S == 0 && t / S < Ho) { rows[2 * nrows] = kh; rows[2 * nrows + 1] = t / S; nrows++; }
      }
      for (int64_t w = 0; w < W; w++) {
        float* out = dx + ((n * H + h) * W + w) * C;
        for (int64_t c = 0; c < C; c += kWidth) {
          const int64_t lanes = std::min(kWidth, C - c);
          V acc(0.0f);
          for (int64_t r = 0; r < nrows; r++) {
            const float* gr = grad + (n * Ho + rows[2 * r + 1]) * Wo * C + c;
            const float* wr = wt + rows[2 * r] * K * C + c;
            for (int64_t i = col_start[w]; i < col_start[w + 1]; i++) {
              acc = at::vec::fmadd(load(gr + cols[2 * i + 1] * C, lanes), load(wr + cols[2 * i] * C, lanes), acc);
            }
          }
          store(acc, out + c, lanes);
        }
      }
    }
  }
}

// dw[c * K * K + kh * K + kw], the layout of a (C, 1, K, K) weight.
void depthwise_backward_weight(const float* grad, const float* x, float* dw, int64_t N, int64_t H,
                               int64_t W, int64_t C, int64_t Ho, int64_t Wo, int64_t K, int64_t S,
                               int64_t P, int threads) {
  const Geometry g{N, H, W, C, Ho, Wo, K, S, P};
  const int64_t taps = K * K;
  std::vector<float> partial(static_cast<size_t>(N * taps * C));
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> rows(S == 1 ? static_cast<size_t>(taps * W * C) : 0);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; n++) {
      float* part = partial.data() + n * taps * C;
      if (S == 1) weight_rows(grad, x, part, n, g, rows); else weight_positions(grad, x, part, n, g);
    }
  }
  std::vector<float> total(static_cast<size_t>(taps * C), 0.0f);
  for (int64_t n = 0; n < N; n++) {
    const float* part = partial.data() + n * taps * C;
    for (int64_t i = 0; i < taps * C; i += kWidth) {
      const int64_t lanes = std::min(kWidth, taps * C - i);
      store(load(total.data() + i, lanes) + load(part + i, lanes), total.data() + i, lanes);
    }
  }
  for (int64_t c = 0; c < C; c++) {
    for (int64_t k = 0; k < taps; k++) dw[c * taps + k] = total[k * C + c];
  }
}

}  // extern "C"
