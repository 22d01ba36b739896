// roi_align on the CPU: the four kernels behind the primitives, each over a
// range of rois or channels so that the caller can split work across threads.
//
//   forward            out = op(features)             (max: and the winners)
//   backward_features  grad_features = op^T(cotangent)
//   forward_boxes      out_dot = d op(features)/d boxes . boxes_dot   (JVP)
//   backward_boxes     grad_boxes = (d op(features)/d boxes)^T . cotangent
//
// Avg mode divides by `count`; max mode uses only the bin's winning sample
// (`winner`, a relative index into the bin's in-window samples, -1: none).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "roi_samples.h"

namespace jax_roialign::cpu {

template <typename T>
struct Kernels {
  using G = typename Types<T>::Geometry;
  using A = typename Types<T>::Accum;

  // Avg mode walks channels innermost, in blocks: contiguous for NHWC; for
  // NCHW a block of planes gives each sample many independent loads (and its
  // cache lines are reused by the neighbouring samples). Each channel's
  // arithmetic, and its order, is the per-channel loop's.
  static constexpr int64_t kPlaneBlock = 32;

  template <bool kNHWC>
  static void forward_avg(const RoiAlignShape& s, const T* f, const RoiSamples<G>& r, T* out,
                          int64_t k, int64_t c0, int64_t c1, A count, std::vector<A>& acc) {
    const int64_t cs = kNHWC ? 1 : s.H * s.W;  // channel stride
    const int64_t ps = kNHWC ? s.C : 1;        // pixel stride
    const int64_t block = kNHWC ? c1 - c0 : kPlaneBlock;
    acc.resize(block);
    const T* img = f + s.feature_offset(r.geometry.image, 0, 0);
    for (int64_t cb = c0; cb < c1; cb += block) {
      const int64_t n = std::min(block, c1 - cb);
      for (int64_t bin = 0; bin < s.bins(); ++bin) {
        std::fill(acc.begin(), acc.begin() + n, A(0));
        const BinSamples& b = r.bins[bin];
        for (int64_t i = b.begin; i < b.end; ++i) {
          const Sample<G>& p = r.samples[i];
          const T* q0 = img + p.at[0] * ps + cb * cs;
          const T* q1 = img + p.at[1] * ps + cb * cs;
          const T* q2 = img + p.at[2] * ps + cb * cs;
          const T* q3 = img + p.at[3] * ps + cb * cs;
          const A w0 = A(p.w[0]), w1 = A(p.w[1]), w2 = A(p.w[2]), w3 = A(p.w[3]);
          for (int64_t c = 0; c < n; ++c)
            acc[c] += w0 * load<A>(q0[c * cs]) + w1 * load<A>(q1[c * cs]) +
                      w2 * load<A>(q2[c * cs]) + w3 * load<A>(q3[c * cs]);
        }
        for (int64_t c = 0; c < n; ++c) out[s.output_offset(k, cb + c, bin)] = store<T>(acc[c] / count);
      }
    }
  }

  // The transpose of forward_avg, blocked the same way; each element receives
  // its contributions in (roi, bin, sample, corner) order whatever the block.
  template <bool kNHWC>
  static void backward_avg(const RoiAlignShape& s, const T* ct, const RoiSamples<G>& r, A* grad,
                           int64_t k, int64_t c0, int64_t c1, A count, std::vector<A>& g) {
    const int64_t cs = kNHWC ? 1 : s.H * s.W;
    const int64_t ps = kNHWC ? s.C : 1;
    const int64_t block = kNHWC ? c1 - c0 : kPlaneBlock;
    g.resize(block);
    A* img = grad + s.feature_offset(r.geometry.image, 0, 0);
    for (int64_t cb = c0; cb < c1; cb += block) {
      const int64_t n = std::min(block, c1 - cb);
      for (int64_t bin = 0; bin < s.bins(); ++bin) {
        for (int64_t c = 0; c < n; ++c) g[c] = load<A>(ct[s.output_offset(k, cb + c, bin)]);
        const BinSamples& b = r.bins[bin];
        for (int64_t i = b.begin; i < b.end; ++i) {
          const Sample<G>& p = r.samples[i];
          for (int j = 0; j < 4; ++j) {
            A* q = img + p.at[j] * ps + cb * cs;
            const A w = A(p.w[j]);
            // torchvision's order: g * w / count.
            for (int64_t c = 0; c < n; ++c) q[c * cs] += g[c] * w / count;
          }
        }
      }
    }
  }

  // Rows [k0, k1), channels [c0, c1). Max mode either finds the winners
  // (`winner` written) or, with `given`, evaluates the given winners: the
  // linear map that max mode is once its winners are fixed.
  static void forward(const RoiAlignShape& s, const T* f, const G* rois, T* out,
                      int32_t* winner, const int32_t* given, int64_t k0, int64_t k1,
                      int64_t c0, int64_t c1) {
    RoiSamples<G> r;
    std::vector<A> acc;
    const bool nhwc = s.layout == Layout::kNHWC;
    for (int64_t k = k0; k < k1; ++k) {
      r.build(s, rois, k, false);
      if (!r.valid()) {
        for (int64_t c = c0; c < c1; ++c)
          for (int64_t bin = 0; bin < s.bins(); ++bin) {
            out[s.output_offset(k, c, bin)] = store<T>(A(0));
            if (winner) winner[s.output_offset(k, c, bin)] = -1;
          }
        continue;
      }
      const A count = A(r.geometry.count);
      if (s.mode == PoolMode::kAvg) {
        if (nhwc) forward_avg<true>(s, f, r, out, k, c0, c1, count, acc);
        else forward_avg<false>(s, f, r, out, k, c0, c1, count, acc);
        continue;
      }
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t base = s.feature_offset(r.geometry.image, c, 0);
        const int64_t stride = nhwc ? s.C : 1;
        auto read = [&](int64_t at) { return load<A>(f[base + at * stride]); };
        for (int64_t bin = 0; bin < s.bins(); ++bin) {
          const BinSamples& b = r.bins[bin];
          const int64_t o = s.output_offset(k, c, bin);
          if (given) {
            out[o] = store<T>(given[o] < 0 ? A(0)
                                           : bilinear<A>(r.samples[b.begin + given[o]], read));
          } else {
            A best;
            winner[o] = int32_t(max_winner<A>(
                r, b, [&](const Sample<G>& p) { return bilinear<A>(p, read); }, &best));
            out[o] = store<T>(best);
          }
        }
      }
    }
  }

  // Channels [c0, c1) of grad (accumulator typed, zeroed by the caller), all
  // rois in order: each element sums its contributions in one fixed order, so
  // the result is bit-identical run to run and for any thread count.
  static void backward_features(const RoiAlignShape& s, const T* ct, const G* rois,
                                const int32_t* winner, A* grad, int64_t c0, int64_t c1) {
    RoiSamples<G> r;
    const bool nhwc = s.layout == Layout::kNHWC;
    std::vector<A> scratch;
    for (int64_t k = 0; k < s.K; ++k) {
      r.build(s, rois, k, false);
      if (!r.valid()) continue;
      const A count = A(r.geometry.count);
      if (s.mode == PoolMode::kAvg) {
        if (nhwc) backward_avg<true>(s, ct, r, grad, k, c0, c1, count, scratch);
        else backward_avg<false>(s, ct, r, grad, k, c0, c1, count, scratch);
        continue;
      }
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t base = s.feature_offset(r.geometry.image, c, 0);
        const int64_t stride = nhwc ? s.C : 1;
        for (int64_t bin = 0; bin < s.bins(); ++bin) {
          const BinSamples& b = r.bins[bin];
          const int64_t o = s.output_offset(k, c, bin);
          const A g = load<A>(ct[o]);
          if (winner[o] < 0) continue;  // max mode: only the winning sample
          const Sample<G>& p = r.samples[b.begin + winner[o]];
          for (int j = 0; j < 4; ++j) grad[base + p.at[j] * stride] += g * A(p.w[j]);
        }
      }
    }
  }

  // d(out)/d(boxes) . boxes_dot, rows [k0, k1), channels [c0, c1).
  static void forward_boxes(const RoiAlignShape& s, const T* f, const G* rois,
                            const G* rois_dot, const int32_t* winner, T* out_dot,
                            int64_t k0, int64_t k1, int64_t c0, int64_t c1) {
    RoiSamples<G> r;
    std::vector<G> dw;  // per sample: 4 directional weight derivatives
    const bool nhwc = s.layout == Layout::kNHWC;
    for (int64_t k = k0; k < k1; ++k) {
      r.build(s, rois, k, true);
      if (!r.valid()) {
        for (int64_t c = c0; c < c1; ++c)
          for (int64_t bin = 0; bin < s.bins(); ++bin)
            out_dot[s.output_offset(k, c, bin)] = store<T>(A(0));
        continue;
      }
      const G* t = roi_corners(s, rois_dot, k);  // (x1, y1, x2, y2) tangents
      dw.resize(r.samples.size() * 4);
      for (size_t i = 0; i < r.samples.size(); ++i) {
        const SampleSlopes<G>& d = r.slopes[i];
        const G ydot = d.y_lo * t[1] + d.y_hi * t[3];
        const G xdot = d.x_lo * t[0] + d.x_hi * t[2];
        for (int j = 0; j < 4; ++j) dw[4 * i + j] = d.dy[j] * ydot + d.dx[j] * xdot;
      }
      const A count = A(r.geometry.count);
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t base = s.feature_offset(r.geometry.image, c, 0);
        const int64_t stride = nhwc ? s.C : 1;
        for (int64_t bin = 0; bin < s.bins(); ++bin) {
          const BinSamples& b = r.bins[bin];
          const int64_t o = s.output_offset(k, c, bin);
          int64_t i0 = b.begin, i1 = b.end;
          if (s.mode == PoolMode::kMax) {
            i0 = winner[o] < 0 ? b.end : b.begin + winner[o];
            i1 = winner[o] < 0 ? b.end : i0 + 1;
          }
          A v = A(0);
          for (int64_t i = i0; i < i1; ++i)
            for (int j = 0; j < 4; ++j)
              v += A(dw[4 * i + j]) * load<A>(f[base + r.samples[i].at[j] * stride]);
          out_dot[o] = store<T>(s.mode == PoolMode::kAvg ? v / count : v);
        }
      }
    }
  }

  // grad_boxes rows [k0, k1): (x1, y1, x2, y2) slots of each row (the batch
  // index slot of a (K, 5) row gets 0). Summed in double, in a fixed order.
  static void backward_boxes(const RoiAlignShape& s, const T* f, const G* rois,
                             const T* ct, const int32_t* winner, G* grad_rois,
                             int64_t k0, int64_t k1) {
    RoiSamples<G> r;
    const bool nhwc = s.layout == Layout::kNHWC;
    for (int64_t k = k0; k < k1; ++k) {
      G* out = grad_rois + k * s.roi_stride();
      for (int64_t j = 0; j < s.roi_stride(); ++j) out[j] = G(0);
      r.build(s, rois, k, true);
      if (!r.valid()) continue;
      double gy_lo = 0, gy_hi = 0, gx_lo = 0, gx_hi = 0;
      const double count = double(r.geometry.count);
      for (int64_t c = 0; c < s.C; ++c) {
        const int64_t base = s.feature_offset(r.geometry.image, c, 0);
        const int64_t stride = nhwc ? s.C : 1;
        for (int64_t bin = 0; bin < s.bins(); ++bin) {
          const BinSamples& b = r.bins[bin];
          const int64_t o = s.output_offset(k, c, bin);
          double g = double(load<A>(ct[o]));
          int64_t i0 = b.begin, i1 = b.end;
          if (s.mode == PoolMode::kMax) {
            i0 = winner[o] < 0 ? b.end : b.begin + winner[o];
            i1 = winner[o] < 0 ? b.end : i0 + 1;
          } else {
            g /= count;
          }
          if (g == 0) continue;
          for (int64_t i = i0; i < i1; ++i) {
            const SampleSlopes<G>& d = r.slopes[i];
            double dy = 0, dx = 0;  // d(bilinear value)/d(sample y), /d(sample x)
            for (int j = 0; j < 4; ++j) {
              const double v = double(load<A>(f[base + r.samples[i].at[j] * stride]));
              dy += double(d.dy[j]) * v;
              dx += double(d.dx[j]) * v;
            }
            gy_lo += g * dy * double(d.y_lo);
            gy_hi += g * dy * double(d.y_hi);
            gx_lo += g * dx * double(d.x_lo);
            gx_hi += g * dx * double(d.x_hi);
          }
        }
      }
      G* corners = out + (s.R > 0 ? 0 : 1);
      corners[0] = G(gx_lo);
      corners[1] = G(gy_lo);
      corners[2] = G(gx_hi);
      corners[3] = G(gy_hi);
    }
  }
};

}  // namespace jax_roialign::cpu
