// Memory-order loops for float32 EvoNorm on CPU (see _native.py), for both dense layouts.
//
// A tensor (N, C, *spatial) in channels_last is, in memory, N blocks of P rows of C floats
// (P = the spatial size). Those loops walk the rows in memory order and keep their per-channel
// accumulators in small arrays, so each row is read once, front to back, with the C axis
// vectorised. Reductions run per sample (one thread per sample) and sum tiles of `tile` rows
// before adding them to the sample's total, which keeps float32 sums short. Elementwise loops run
// over all N * P rows. In NCHW the same tensor is N * C planes of P floats: those loops vectorise
// the spatial axis, one plane per thread at a time, summing tiles of `tile` floats.
// Both walks evaluate the same per-element functions (s0_output, s0_terms, ...), with per-channel
// values loaded as vectors (channels_last) or broadcast from a scalar (NCHW).
//
// Each entry point is one direction of a layer: the statistics pass, the (N, C) algebra of
// s0_op.py / b0_op.py (the same formulas, here in C++ so that a call leaves Python once), and the
// elementwise pass. Formulas are evaluated in the order of the torch math of s0_cpu.py / b0_cpu.py.
#include <torch/csrc/inductor/cpp_prefix.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

using V = at::vec::Vectorized<float>;
constexpr int64_t kWidth = V::size();

// Apply f(c, lanes) to every channel block of a row: full vectors, then one partial vector.
template <typename F>
inline void for_channels(int64_t channels, F&& f) {
  int64_t c = 0;
  for (; c + kWidth <= channels; c += kWidth) f(c, kWidth);
  if (c < channels) f(c, channels - c);
}

inline V load(const float* p, int64_t lanes) {
  return lanes == kWidth ? V::loadu(p) : V::loadu(p, lanes);
}

inline void store(const V& v, float* p, int64_t lanes) {
  if (lanes == kWidth) v.store(p); else v.store(p, lanes);
}

inline void add_to(float* acc, const V& v, int64_t lanes) {
  store(load(acc, lanes) + v, acc, lanes);
}

// exp(x) as 2^n exp(r), n = round(x / ln 2), r = x - n ln 2 in [-ln 2 / 2, ln 2 / 2] (ln 2 split in
// two constants so r is exact), exp(r) = 1 + r + r^2 p(r) with Cephes' minimax polynomial p: within
// 2 ulp of exp, inline (at::vec's exp calls Sleef, which costs about as much as the rest of a pass).
// Special values come out of the arithmetic, with no blends: the clamp keeps NaN, x above
// ln(FLT_MAX) (up to +inf, clamped to 89) overflows to inf in the final products, and x below
// ln(FLT_MIN) gives 0 (results under about 2^-125 flush to zero).
inline V exp_inline(const V& x) {
  const V xc = at::vec::clamp(x, V(-87.33654475f), V(89.0f));
  const V n = (xc * V(1.44269504088896341f)).round();
  const V r = at::vec::fmadd(n, V(2.12194440e-4f), at::vec::fmadd(n, V(-0.693359375f), xc));
  V p(1.9875691500e-4f);
  p = at::vec::fmadd(p, r, V(1.3981999507e-3f));
  p = at::vec::fmadd(p, r, V(8.3334519073e-3f));
  p = at::vec::fmadd(p, r, V(4.1665795894e-2f));
  p = at::vec::fmadd(p, r, V(1.6666665459e-1f));
  p = at::vec::fmadd(p, r, V(5.0000001201e-1f));
  const V e = at::vec::fmadd(p, r * r, r + V(1));
  // 2^(n - 1) from its exponent bits, n - 1 in [-127, 127] (-127: all-zero bits, the flush), times 2
  const auto bits = (at::vec::convert_to_int_of_same_size(n) + at::vec::Vectorized<int32_t>(126))
                    * at::vec::Vectorized<int32_t>(1 << 23);
  return e * at::vec::cast<float>(bits) * V(2);
}

inline V sigmoid(const V& z) { return V(1) / (V(1) + exp_inline(z.neg())); }

// S0's output, x sigmoid(v x) scale + bias.
inline V s0_output(const V& xv, const V& v, const V& scale, const V& bias) {
  return xv * sigmoid(xv * v) * scale + bias;
}

// S0's backward terms at one element: the three sums' summands (g x s, g x^2 s (1 - s), g) and
// the part of grad_x that needs the sigmoid, g a (s + v x s (1 - s)).
struct S0Terms {
  V gh, gv, g, partial;
};

inline S0Terms s0_terms(const V& xv, const V& gv, const V& v, const V& a) {
  const V z = xv * v;
  const V s = sigmoid(z);
  const V gx = gv * xv;
  return {gx * s, gx * xv * s * (V(1) - s), gv, gv * a * (s * (V(1) + z * (V(1) - s)))};
}

// The rest of grad_x: partial + k (x - mu).
inline V centred_term(const V& partial, const V& k, const V& xv, const V& mu) {
  return partial + k * (xv - mu);
}

// A vector of `lanes` lanes of v, the others 0 (a partial block's summand).
inline V first_lanes(const V& v, int64_t lanes) { return lanes == kWidth ? v : V::set(V(0), v, lanes); }

// Sum of the lanes in double (a fixed order: the same bits at any thread count).
inline double lane_sum(const V& v) {
#if defined(CPU_CAPABILITY_AVX512)
  const __m512 f = v;
  const __m512d low = _mm512_cvtps_pd(_mm512_castps512_ps256(f));
  const __m512d high = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(f), 1)));
  return _mm512_reduce_add_pd(_mm512_add_pd(low, high));
#else
  float lanes[kWidth];
  v.store(lanes);
  double total = 0;
  for (int64_t i = 0; i < kWidth; i++) total += lanes[i];
  return total;
#endif
}

// Per-sample reduction driver: for each sample n (in parallel), `rows(n, p0, p1, tile_acc)` adds
// rows [p0, p1) into the zeroed tile accumulators `tile_acc` (nacc arrays of C floats); each tile
// is then added to the sample's totals out[a] + n * C.
template <typename Rows>
void reduce_per_sample(int64_t n_samples, int64_t rows_per_sample, int64_t channels,
                       int64_t tile, int nacc, float* const* out, int threads, Rows&& rows) {
#pragma omp parallel num_threads(threads)
  {
  std::vector<float> acc(static_cast<size_t>(nacc * channels));
#pragma omp for schedule(static)
  for (int64_t n = 0; n < n_samples; n++) {
    for (int a = 0; a < nacc; a++) std::fill_n(out[a] + n * channels, channels, 0.0f);
    for (int64_t p0 = 0; p0 < rows_per_sample; p0 += tile) {
      std::fill(acc.begin(), acc.end(), 0.0f);
      rows(n, p0, std::min(p0 + tile, rows_per_sample), acc.data());
      for (int a = 0; a < nacc; a++) {
        float* total = out[a] + n * channels;
        const float* part = acc.data() + a * channels;
        for_channels(channels, [&](int64_t c, int64_t l) { add_to(total + c, load(part + c, l), l); });
      }
    }
  }
  }
}


// Per-(n, c) mean and biased variance over a sample's rows. Each tile: its mean, then the squared
// deviations from it (the tile is still in cache), merged into the running moments with Chan's
// formula, so no sum of squares cancels. The tile sums are of x minus the sample's first row, so a
// constant channel has exactly its value as mean and zero variance: with rstd = 1 / sqrt(eps), any
// rounding left in x - mean would be amplified by rstd^3 in backward.
void sample_moments(const float* xn, float* mean, float* var, int64_t rows, int64_t channels,
                    int64_t tile, float* tile_sum, float* tile_m2) {
  std::fill_n(mean, channels, 0.0f);
  std::fill_n(var, channels, 0.0f);
  int64_t count = 0;
  for (int64_t p0 = 0; p0 < rows; p0 += tile) {
    const int64_t p1 = std::min(p0 + tile, rows), k = p1 - p0;
    std::fill_n(tile_sum, channels, 0.0f);
    std::fill_n(tile_m2, channels, 0.0f);
    for (int64_t p = p0; p < p1; p++) {
      const float* row = xn + p * channels;
      for_channels(channels, [&](int64_t c, int64_t l) {
        add_to(tile_sum + c, load(row + c, l) - load(xn + c, l), l);
      });
    }
    const V inv_k(1.0f / static_cast<float>(k));
    for_channels(channels, [&](int64_t c, int64_t l) {
      store(load(xn + c, l) + load(tile_sum + c, l) * inv_k, tile_sum + c, l);
    });
    for (int64_t p = p0; p < p1; p++) {
      const float* row = xn + p * channels;
      for_channels(channels, [&](int64_t c, int64_t l) {
        const V d = load(row + c, l) - load(tile_sum + c, l);
        add_to(tile_m2 + c, d * d, l);
      });
    }
    // Chan: delta = tile mean - mean; mean += delta k / total; m2 += tile m2 + delta^2 count k / total.
    // The first tile has no cross term: its delta^2 may overflow where the variance does not (a
    // mean of 2e19), and inf * 0 would be NaN.
    const float total = static_cast<float>(count + k);
    const V w_tile(static_cast<float>(k) / total);
    const V w_cross(static_cast<float>(count) * static_cast<float>(k) / total);
    for_channels(channels, [&](int64_t c, int64_t l) {
      const V m = load(mean + c, l);
      const V delta = load(tile_sum + c, l) - m;
      store(m + delta * w_tile, mean + c, l);
      const V cross = count > 0 ? delta * delta * w_cross : V(0);
      store(load(var + c, l) + load(tile_m2 + c, l) + cross, var + c, l);
    });
    count += k;
  }
  const V inv_rows(1.0f / static_cast<float>(rows));
  for_channels(channels, [&](int64_t c, int64_t l) { store(load(var + c, l) * inv_rows, var + c, l); });
}

// For each sample n in parallel: sample_moments into mean/var + n * C.
void moments_per_sample(const float* x, float* mean, float* var, int64_t n_samples, int64_t rows,
                        int64_t channels, int64_t tile, int threads) {
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> scratch(static_cast<size_t>(2 * channels));
#pragma omp for schedule(static)
    for (int64_t n = 0; n < n_samples; n++) {
      sample_moments(x + n * rows * channels, mean + n * channels, var + n * channels, rows,
                     channels, tile, scratch.data(), scratch.data() + channels);
    }
  }
}

// For each of the N * P rows in parallel: f(n, offset of the row).
template <typename F>
void for_rows(int64_t n_samples, int64_t rows, int threads, int64_t channels, F&& f) {
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t r = 0; r < n_samples * rows; r++) f(r / rows, r * channels);
}

// Mean and biased variance of one NCHW plane of `count` floats: sample_moments with one channel
// and the spatial axis vectorised (tiles of `tile` floats, shifted by the plane's first value,
// merged with Chan's formula).
void plane_moments(const float* xp, int64_t count, int64_t tile, float* mean, float* var) {
  const V first(xp[0]);
  float m = 0, m2 = 0;
  int64_t seen = 0;
  for (int64_t p0 = 0; p0 < count; p0 += tile) {
    const int64_t k = std::min(tile, count - p0);
    V sum(0), sq(0);
    for_channels(k, [&](int64_t p, int64_t l) { sum = sum + first_lanes(load(xp + p0 + p, l) - first, l); });
    const float tile_mean = xp[0] + static_cast<float>(lane_sum(sum)) / static_cast<float>(k);
    const V tm(tile_mean);
    for_channels(k, [&](int64_t p, int64_t l) {
      const V d = load(xp + p0 + p, l) - tm;
      sq = sq + first_lanes(d * d, l);
    });
    const float total = static_cast<float>(seen + k);
    const float delta = tile_mean - m;
    m += delta * (static_cast<float>(k) / total);
    const float cross = seen > 0 ? delta * delta * (static_cast<float>(seen) * static_cast<float>(k) / total) : 0.0f;
    m2 += static_cast<float>(lane_sum(sq)) + cross;  // no cross term on the first tile, as in sample_moments
    seen += k;
  }
  *mean = m;
  *var = m2 / static_cast<float>(count);
}

// For each of the N * C planes in parallel: f(n, c, offset of the plane).
template <typename F>
void for_planes(int64_t n_samples, int64_t channels, int64_t count, int threads, F&& f) {
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t i = 0; i < n_samples * channels; i++) f(i / channels, i % channels, i * count);
}

// Per-(n, c) mean and variance of x in either layout (nchw: planes; else rows).
void instance_moments(const float* x, float* mean, float* var, int64_t n_samples, int64_t rows,
                      int64_t channels, int64_t tile, int nchw, int threads) {
  if (nchw) {
    for_planes(n_samples, channels, rows, threads, [&](int64_t n, int64_t c, int64_t offset) {
      plane_moments(x + offset, rows, tile, mean + n * channels + c, var + n * channels + c);
    });
  } else {
    moments_per_sample(x, mean, var, n_samples, rows, channels, tile, threads);
  }
}

// Every element of x once, in memory order: f(offset, lanes, per-channel loader), where the loader
// gives the vector of a (C,) or (N, C) table at the element's channels.
template <typename F>
void for_elements(int64_t n_samples, int64_t rows, int64_t channels, int nchw, int threads, F&& f) {
  if (nchw) {
    for_planes(n_samples, channels, rows, threads, [&](int64_t n, int64_t c, int64_t offset) {
      const auto at = [&](const float* table, bool per_sample) {
        return V(table[(per_sample ? n * channels : 0) + c]);
      };
      for_channels(rows, [&](int64_t p, int64_t l) { f(offset + p, l, at); });
    });
  } else {
    for_rows(n_samples, rows, threads, channels, [&](int64_t n, int64_t offset) {
      for_channels(channels, [&](int64_t c, int64_t l) {
        const auto at = [&](const float* table, bool per_sample) {
          return load(table + (per_sample ? n * channels : 0) + c, l);
        };
        f(offset + c, l, at);
      });
    });
  }
}

// Per-(n, c) sums of `nacc` summands over x's elements in either layout: out[a] + n * C. terms(offset,
// lanes, loader, add) calls add(a, summand) for each accumulator; the channels_last walk is
// reduce_per_sample's (tiles of `tile` rows), the NCHW one sums each plane in float32 vectors over
// tiles of `tile` floats, whose lanes it adds up in double.
template <typename Terms>
void reduce_elements(int64_t n_samples, int64_t rows, int64_t channels, int64_t tile, int nacc,
                     float* const* out, int nchw, int threads, Terms&& terms) {
  if (nchw) {
    for_planes(n_samples, channels, rows, threads, [&](int64_t n, int64_t c, int64_t offset) {
      const auto at = [&](const float* table, bool per_sample) {
        return V(table[(per_sample ? n * channels : 0) + c]);
      };
      double totals[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      for (int64_t p0 = 0; p0 < rows; p0 += tile) {
        V acc[8] = {V(0), V(0), V(0), V(0), V(0), V(0), V(0), V(0)};
        for_channels(std::min(tile, rows - p0), [&](int64_t p, int64_t l) {
          terms(offset + p0 + p, l, at, [&](int a, const V& v) { acc[a] = acc[a] + first_lanes(v, l); });
        });
        for (int a = 0; a < nacc; a++) totals[a] += lane_sum(acc[a]);
      }
      for (int a = 0; a < nacc; a++) out[a][n * channels + c] = static_cast<float>(totals[a]);
    });
  } else {
    reduce_per_sample(n_samples, rows, channels, tile, nacc, out, threads,
                      [&](int64_t n, int64_t p0, int64_t p1, float* acc) {
      for (int64_t p = p0; p < p1; p++) {
        const int64_t offset = (n * rows + p) * channels;
        for_channels(channels, [&](int64_t c, int64_t l) {
          const auto at = [&](const float* table, bool per_sample) {
            return load(table + (per_sample ? n * channels : 0) + c, l);
          };
          terms(offset + c, l, at, [&](int a, const V& v) { add_to(acc + a * channels + c, v, l); });
        });
      }
    });
  }
}

// B0's 1 / d and the branch taken: d = max(left, v x + inst_std), ties to left.
struct Denominator {
  V inv;
  V right_mask;  // all-ones lanes where the right branch (v x + inst_std) is taken
};

inline Denominator denominator(const V& xv, const V& v, const V& inst_std, const V& left) {
  const V right = xv * v + inst_std;
  const V take_right = left < right;
  return {V(1) / V::blendv(left, right, take_right), take_right};
}

// Mean of t[0], t[stride], ... (count values), shifted by the first so equal values give it exactly.
inline float shifted_mean(const float* t, int64_t count, int64_t stride) {
  float total = 0;
  for (int64_t i = 1; i < count; i++) total += t[i * stride] - t[0];
  return t[0] + total / static_cast<float>(count);
}

// sum over samples of t[n * C + c], in double.
inline float sum_samples(const float* t, int64_t n_samples, int64_t channels, int64_t c) {
  double total = 0;
  for (int64_t n = 0; n < n_samples; n++) total += t[n * channels + c];
  return static_cast<float>(total);
}

}  // namespace

extern "C" {

// EvoNorm-S0 forward (s0_op.forward_coefficients, s0_cpu.output_math): y, and the (N, G) mean and
// rstd that backward needs. v = ones for S1/S2. nchw: x is NCHW, else channels_last.
void s0_forward(const float* x, const float* weight, const float* bias, const float* v, float* y,
                float* mean, float* rstd, int64_t n_samples, int64_t rows, int64_t channels,
                int64_t groups, float eps, int centered, int nchw, int64_t tile, int threads) {
  const int64_t per_group = channels / groups;
  std::vector<float> inst_mean(n_samples * channels), inst_var(n_samples * channels),
      scale(n_samples * channels);
  instance_moments(x, inst_mean.data(), inst_var.data(), n_samples, rows, channels, tile, nchw, threads);
  for (int64_t n = 0; n < n_samples; n++) {
    for (int64_t g = 0; g < groups; g++) {
      const float* m = inst_mean.data() + n * channels + g * per_group;
      const float* s2 = inst_var.data() + n * channels + g * per_group;
      float group_mean = 0, group_var = 0;
      if (centered) {  // Chan with equal counts: mean of means; mean of (var + (mean_c - mean)^2)
        group_mean = shifted_mean(m, per_group, 1);
        for (int64_t c = 0; c < per_group; c++) {
          const float d = m[c] - group_mean;
          group_var += s2[c] + d * d;
        }
      } else {  // mean square = variance + mean^2
        for (int64_t c = 0; c < per_group; c++) group_var += s2[c] + m[c] * m[c];
      }
      group_var /= static_cast<float>(per_group);
      const float r = 1.0f / std::sqrt(group_var + eps);
      mean[n * groups + g] = group_mean;
      rstd[n * groups + g] = r;
      for (int64_t c = 0; c < per_group; c++) {
        scale[n * channels + g * per_group + c] = r * weight[g * per_group + c];
      }
    }
  }
  for_elements(n_samples, rows, channels, nchw, threads, [&](int64_t i, int64_t l, const auto& at) {
    store(s0_output(load(x + i, l), at(v, false), at(scale.data(), true), at(bias, false)), y + i, l);
  });
}

// EvoNorm-S0 backward (s0_cpu.sums_math with its partial, s0_op.backward_coefficients,
// s0_cpu.finish_grad_x_math). grad_v is written only when has_v.
void s0_backward(const float* g, const float* x, const float* weight, const float* v,
                 const float* mean, const float* rstd, float* grad_x, float* grad_w,
                 float* grad_b, float* grad_v, int64_t n_samples, int64_t rows, int64_t channels,
                 int64_t groups, int has_v, int nchw, int64_t tile, int threads) {
  const int64_t per_group = channels / groups;
  const float count = static_cast<float>(rows * per_group);
  std::vector<float> sum_gh(n_samples * channels), sum_gv(n_samples * channels),
      sum_g(n_samples * channels), k(n_samples * channels), mu(n_samples * channels);
  float* const out[3] = {sum_gh.data(), sum_gv.data(), sum_g.data()};
  std::vector<float> a(n_samples * channels);
  for (int64_t n = 0; n < n_samples; n++) {
    for (int64_t c = 0; c < channels; c++) a[n * channels + c] = rstd[n * groups + c / per_group] * weight[c];
  }
  reduce_elements(n_samples, rows, channels, tile, 3, out, nchw, threads,
                  [&](int64_t i, int64_t l, const auto& at, const auto& add) {
    const S0Terms t = s0_terms(load(x + i, l), load(g + i, l), at(v, false), at(a.data(), true));
    add(0, t.gh);
    add(1, t.gv);
    add(2, t.g);
    store(t.partial, grad_x + i, l);
  });
  for (int64_t n = 0; n < n_samples; n++) {  // coef = -sum_{c in g} sum_gh w rstd^3 / count, per channel as k
    for (int64_t gi = 0; gi < groups; gi++) {
      float total = 0;
      for (int64_t c = gi * per_group; c < (gi + 1) * per_group; c++) total += sum_gh[n * channels + c] * weight[c];
      const float r = rstd[n * groups + gi];
      const float coef = -total * (r * r * r) / count;
      for (int64_t c = gi * per_group; c < (gi + 1) * per_group; c++) {
        k[n * channels + c] = coef;
        mu[n * channels + c] = mean[n * groups + gi];
      }
    }
  }
  for (int64_t c = 0; c < channels; c++) {
    double gw = 0, gv = 0;
    for (int64_t n = 0; n < n_samples; n++) {
      const float r = rstd[n * groups + c / per_group];
      gw += sum_gh[n * channels + c] * r;
      gv += sum_gv[n * channels + c] * r;
    }
    grad_w[c] = static_cast<float>(gw);
    grad_b[c] = sum_samples(sum_g.data(), n_samples, channels, c);
    if (has_v) grad_v[c] = static_cast<float>(gv) * weight[c];
  }
  for_elements(n_samples, rows, channels, nchw, threads, [&](int64_t i, int64_t l, const auto& at) {
    store(centred_term(load(grad_x + i, l), at(k.data(), true), load(x + i, l), at(mu.data(), true)),
          grad_x + i, l);
  });
}

// EvoNorm-B0 forward (b0_op.forward_coefficients, b0_cpu.output_math): y and the statistics that
// backward needs. running_var null: training (batch moments, Chan's merge of the instance ones).
void b0_forward(const float* x, const float* weight, const float* bias, const float* v,
                const float* running_var, float* y, float* inst_mean, float* inst_std,
                float* batch_mean, float* batch_var, int64_t n_samples, int64_t rows,
                int64_t channels, float eps, int nchw, int64_t tile, int threads) {
  std::vector<float> inst_var(n_samples * channels), left(channels);
  instance_moments(x, inst_mean, inst_var.data(), n_samples, rows, channels, tile, nchw, threads);
  for (int64_t i = 0; i < n_samples * channels; i++) inst_std[i] = std::sqrt(inst_var[i] + eps);
  for (int64_t c = 0; c < channels; c++) {
    if (running_var) {
      batch_mean[c] = 0;
      batch_var[c] = running_var[c];
    } else {  // Chan with equal counts over the samples
      const float m = shifted_mean(inst_mean + c, n_samples, channels);
      float s2 = 0;
      for (int64_t n = 0; n < n_samples; n++) {
        const float d = inst_mean[n * channels + c] - m;
        s2 += inst_var[n * channels + c] + d * d;
      }
      batch_mean[c] = m;
      batch_var[c] = s2 / static_cast<float>(n_samples);
    }
    left[c] = std::sqrt(batch_var[c] + eps);
  }
  for_elements(n_samples, rows, channels, nchw, threads, [&](int64_t i, int64_t l, const auto& at) {
    const V xv = load(x + i, l);
    const Denominator d = denominator(xv, at(v, false), at(inst_std, true), at(left.data(), false));
    store(xv * d.inv * at(weight, false) + at(bias, false), y + i, l);
  });
}

// EvoNorm-B0 backward (b0_cpu.sums_math with its partial, b0_op.backward_coefficients,
// b0_cpu.finish_grad_x_math): sums of g, g z, rho q, rho q x, (1 - rho) q with z = x / d,
// q = g w z / d, rho = right branch taken; partial = g w / d - rho (g w x / d^2) v.
void b0_backward(const float* g, const float* x, const float* weight, const float* v,
                 const float* inst_mean, const float* inst_std, const float* batch_mean,
                 const float* batch_var, float* grad_x, float* grad_w, float* grad_b,
                 float* grad_v, int64_t n_samples, int64_t rows, int64_t channels, float eps,
                 int training, int nchw, int64_t tile, int threads) {
  const int64_t size = n_samples * channels;
  std::vector<float> sums(5 * size), k_inst(size), left(channels), k_batch(channels);
  float* const out[5] = {sums.data(), sums.data() + size, sums.data() + 2 * size,
                         sums.data() + 3 * size, sums.data() + 4 * size};
  for (int64_t c = 0; c < channels; c++) left[c] = std::sqrt(batch_var[c] + eps);
  reduce_elements(n_samples, rows, channels, tile, 5, out, nchw, threads,
                  [&](int64_t i, int64_t l, const auto& at, const auto& add) {
    const V xv = load(x + i, l), gv = load(g + i, l);
    const V w = at(weight, false), vv = at(v, false);
    const Denominator d = denominator(xv, vv, at(inst_std, true), at(left.data(), false));
    const V z = xv * d.inv;
    const V q = gv * w * z * d.inv;
    const V q_right = q & d.right_mask;
    add(0, gv);
    add(1, gv * z);
    add(2, q_right);
    add(3, q_right * xv);
    add(4, q - q_right);
    const V gw = gv * w * d.inv;
    store(gw - ((gw * xv * d.inv) & d.right_mask) * vv, grad_x + i, l);
  });
  for (int64_t i = 0; i < size; i++) k_inst[i] = -out[2][i] / (inst_std[i] * static_cast<float>(rows));
  for (int64_t c = 0; c < channels; c++) {
    grad_w[c] = sum_samples(out[1], n_samples, channels, c);
    grad_b[c] = sum_samples(out[0], n_samples, channels, c);
    grad_v[c] = -sum_samples(out[3], n_samples, channels, c);
    k_batch[c] = training ? -sum_samples(out[4], n_samples, channels, c)
                                / (left[c] * static_cast<float>(n_samples * rows))
                          : 0.0f;
  }
  for_elements(n_samples, rows, channels, nchw, threads, [&](int64_t i, int64_t l, const auto& at) {
    const V xv = load(x + i, l);
    store(load(grad_x + i, l) + (at(k_inst.data(), true) * (xv - at(inst_mean, true))
                                 + at(k_batch.data(), false) * (xv - at(batch_mean, false))), grad_x + i, l);
  });
}

}  // extern "C"
