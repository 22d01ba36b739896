// The five CPU kernels behind every operator's primitives (kernel_list.h),
// generic over the operator's per-roi plan (plan.h), each over a range of
// rois or channels so that the caller can split work across threads:
//
//   forward            out = op(features)                (max: and the winners)
//   forward (given)    out = the linear map max mode is once its winners are fixed
//   backward_features  grad_features = op^T(cotangent)
//   forward_boxes      out_dot = d op(features)/d boxes . boxes_dot   (JVP)
//   backward_boxes     grad_boxes = (d op(features)/d boxes)^T . cotangent
//
// Avg mode divides each bin's sum by its divisor; max mode uses only the bin's
// winning sample (`winner`: index into the bin's samples, -1: an implicit 0).
// Output channel c of bin `bin` reads input channel s.input_channel(c, bin) of
// the roi's level.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "plan.h"

namespace jax_roialign::cpu {

template <typename T>
struct Kernels {
  using G = typename Types<T>::Geometry;
  using A = typename Types<T>::Accum;

  // The step between consecutive output channels' input channels.
  static int64_t channel_step(const RoiCall& s, int64_t level) {
    const int64_t plane =
        s.layout == Layout::kNHWC ? 1 : s.level[level].H * s.level[level].W;
    return position_sensitive(s.op) ? plane * s.PH * s.PW : plane;
  }

  // Avg mode walks output channels innermost, in blocks: contiguous for NHWC
  // (non-ps); for NCHW a block of planes gives each sample many independent
  // loads, and the neighbouring samples reuse its cache lines. Each channel's
  // arithmetic, and its order, is the per-channel loop's (the peers').
  static constexpr int64_t kPlaneBlock = 32;

  static int64_t block(const RoiCall& s, int64_t c0, int64_t c1) {
    return s.layout == Layout::kNHWC && !position_sensitive(s.op) ? c1 - c0 : kPlaneBlock;
  }

  // `fill`: the value of a bin without samples (the forward's; 0 for its linear part).
  static void forward_avg(const RoiCall& s, const T* f, const RoiPlan<G>& r, T* out, int64_t k,
                          int64_t c0, int64_t c1, A fill, std::vector<A>& acc) {
    const int64_t cs = channel_step(s, r.level);
    const int64_t ps = s.layout == Layout::kNHWC ? s.C : 1;  // pixel stride
    const int64_t nb = block(s, c0, c1);
    acc.resize(nb);
    for (int64_t cb = c0; cb < c1; cb += nb) {
      const int64_t n = std::min(nb, c1 - cb);
      for (int64_t bin = 0; bin < s.bins(); ++bin) {
        const T* img = f + s.feature_offset(r.level, r.image, s.input_channel(cb, bin), 0);
        const PlanBin& b = r.bins[bin];
        std::fill(acc.begin(), acc.begin() + n, A(0));
        for (int64_t i = b.begin; i < b.end; ++i) {
          const Sample<G>& p = r.samples[i];
          const T* q0 = img + p.at[0] * ps;
          if (p.kind == SampleKind::kCell) {
            for (int64_t c = 0; c < n; ++c) acc[c] += load<A>(q0[c * cs]);
            continue;
          }
          const T* q1 = img + p.at[1] * ps;
          const T* q2 = img + p.at[2] * ps;
          const T* q3 = img + p.at[3] * ps;
          if (p.kind == SampleKind::kLerp) {
            for (int64_t c = 0; c < n; ++c) {
              auto read = [&](int64_t at) { return load<A>(img[at * ps + c * cs]); };
              acc[c] += sample_value<A>(p, read);
            }
            continue;
          }
          const A w0 = A(p.w[0]), w1 = A(p.w[1]), w2 = A(p.w[2]), w3 = A(p.w[3]);
          for (int64_t c = 0; c < n; ++c)
            acc[c] += w0 * load<A>(q0[c * cs]) + w1 * load<A>(q1[c * cs]) +
                      w2 * load<A>(q2[c * cs]) + w3 * load<A>(q3[c * cs]);
        }
        const A divisor = A(b.divisor);
        const bool empty = !b.enumerated;
        for (int64_t c = 0; c < n; ++c)
          out[s.output_offset(k, cb + c, bin)] = store<T>(empty ? fill : acc[c] / divisor);
      }
    }
  }

  // Max mode, blocked like forward_avg: per channel, the first largest sample
  // value (same arithmetic as sample_value), then the implicit-0 rule.
  static void forward_max(const RoiCall& s, const T* f, const RoiPlan<G>& r, T* out,
                          int32_t* winner, int64_t k, int64_t c0, int64_t c1,
                          std::vector<A>& best, std::vector<int32_t>& arg) {
    const int64_t cs = channel_step(s, r.level);
    const int64_t ps = s.layout == Layout::kNHWC ? s.C : 1;
    const int64_t nb = block(s, c0, c1);
    best.resize(nb);
    arg.resize(nb);
    for (int64_t cb = c0; cb < c1; cb += nb) {
      const int64_t n = std::min(nb, c1 - cb);
      for (int64_t bin = 0; bin < s.bins(); ++bin) {
        const T* img = f + s.feature_offset(r.level, r.image, s.input_channel(cb, bin), 0);
        const PlanBin& b = r.bins[bin];
        std::fill(arg.begin(), arg.begin() + n, -1);
        for (int64_t i = b.begin; i < b.end; ++i) {
          const Sample<G>& p = r.samples[i];
          const int32_t rel = int32_t(i - b.begin);
          // Branch-free updates (select, not jump): the comparisons of
          // random data would mispredict and the loop would not vectorise. NaN
          // never wins (docs/semantics.md).
          auto update = [&](int64_t c, A v) {
            const bool better = ((arg[c] < 0) & (v == v)) | (v > best[c]);
            best[c] = better ? v : best[c];
            arg[c] = better ? rel : arg[c];
          };
          if (p.kind != SampleKind::kBilinear) {
            for (int64_t c = 0; c < n; ++c) {
              auto read = [&](int64_t at) { return load<A>(img[at * ps + c * cs]); };
              update(c, sample_value<A>(p, read));
            }
            continue;
          }
          const T* q0 = img + p.at[0] * ps;
          const T* q1 = img + p.at[1] * ps;
          const T* q2 = img + p.at[2] * ps;
          const T* q3 = img + p.at[3] * ps;
          const A w0 = A(p.w[0]), w1 = A(p.w[1]), w2 = A(p.w[2]), w3 = A(p.w[3]);
          for (int64_t c = 0; c < n; ++c)
            update(c, w0 * load<A>(q0[c * cs]) + w1 * load<A>(q1[c * cs]) +
                          w2 * load<A>(q2[c * cs]) + w3 * load<A>(q3[c * cs]));
        }
        for (int64_t c = 0; c < n; ++c) {
          A m = best[c];
          int32_t a = arg[c];
          if (b.outside_from != kNever &&
              (a < 0 || A(0) > m || (A(0) == m && b.outside_precedes(a)))) {
            a = -1;
          }
          const int64_t o = s.output_offset(k, cb + c, bin);
          out[o] = store<T>(a < 0 ? A(0) : m);
          winner[o] = a;
        }
      }
    }
  }

  // Rows [k0, k1), output channels [c0, c1). Max mode either finds the
  // winners (`winner` written) or, with `given`, evaluates given winners.
  // `linear`: forward_selected, the linear part (no fill).
  static void forward(const RoiCall& s, const T* const* f, const G* rois, const int32_t* levels,
                      T* out, int32_t* winner, const int32_t* given, bool linear, int64_t k0,
                      int64_t k1, int64_t c0, int64_t c1) {
    const A fill = linear ? A(0) : A(s.fill);
    RoiPlan<G> r;
    std::vector<A> acc;
    std::vector<int32_t> arg;
    const int64_t ps = s.layout == Layout::kNHWC ? s.C : 1;
    for (int64_t k = k0; k < k1; ++k) {
      r.build(s, rois, levels, k, false);
      if (!r.valid()) {
        for (int64_t c = c0; c < c1; ++c)
          for (int64_t bin = 0; bin < s.bins(); ++bin) {
            out[s.output_offset(k, c, bin)] = store<T>(A(0));
            if (winner) winner[s.output_offset(k, c, bin)] = -1;
          }
        continue;
      }
      const T* level = f[r.level];
      if (s.mode == PoolMode::kAvg) {
        forward_avg(s, level, r, out, k, c0, c1, fill, acc);
        continue;
      }
      if (!given) {
        forward_max(s, level, r, out, winner, k, c0, c1, acc, arg);
        continue;
      }
      for (int64_t c = c0; c < c1; ++c) {
        for (int64_t bin = 0; bin < s.bins(); ++bin) {
          const T* img = level + s.feature_offset(r.level, r.image, s.input_channel(c, bin), 0);
          auto read = [&](int64_t at) { return load<A>(img[at * ps]); };
          const PlanBin& b = r.bins[bin];
          const int64_t o = s.output_offset(k, c, bin);
          const bool has = given[o] >= 0 && given[o] < b.end - b.begin;
          out[o] = store<T>(has ? sample_value<A>(r.samples[b.begin + given[o]], read) : A(0));
        }
      }
    }
  }

  // Output channels [c0, c1) (and the input channels they read) of every
  // level's gradient `grad` (accumulator typed, zeroed by the caller), all
  // rois in order: each element sums its terms in (roi, bin, sample, corner)
  // order, so the result is bit-identical run to run and for any thread count.
  static void backward_features(const RoiCall& s, const T* ct, const G* rois,
                                const int32_t* levels, const int32_t* winner, A* const* grad,
                                int64_t c0, int64_t c1) {
    RoiPlan<G> r;
    std::vector<A> g;
    const int64_t ps = s.layout == Layout::kNHWC ? s.C : 1;
    for (int64_t k = 0; k < s.K; ++k) {
      r.build(s, rois, levels, k, false);
      if (!r.valid()) continue;
      const int64_t cs = channel_step(s, r.level);
      const int64_t nb = s.mode == PoolMode::kAvg ? block(s, c0, c1) : 1;
      g.resize(nb);
      for (int64_t cb = c0; cb < c1; cb += nb) {
        const int64_t n = std::min(nb, c1 - cb);
        for (int64_t bin = 0; bin < s.bins(); ++bin) {
          A* img = grad[r.level] + s.feature_offset(r.level, r.image, s.input_channel(cb, bin), 0);
          const PlanBin& b = r.bins[bin];
          if (s.mode == PoolMode::kMax) {
            const int64_t o = s.output_offset(k, cb, bin);
            if (winner[o] < 0 || winner[o] >= b.end - b.begin) continue;
            scatter_sample(r.samples[b.begin + winner[o]], load<A>(ct[o]), A(1),
                           [&](int64_t at, A v) { img[at * ps] += v; });
            continue;
          }
          const A divisor = A(b.divisor);
          for (int64_t c = 0; c < n; ++c) g[c] = load<A>(ct[s.output_offset(k, cb + c, bin)]);
          for (int64_t i = b.begin; i < b.end; ++i) {
            const Sample<G>& p = r.samples[i];
            if (p.kind != SampleKind::kBilinear) {
              for (int64_t c = 0; c < n; ++c)
                scatter_sample(p, g[c], divisor,
                               [&](int64_t at, A v) { img[at * ps + c * cs] += v; });
              continue;
            }
            for (int j = 0; j < 4; ++j) {
              A* q = img + p.at[j] * ps;
              const A w = A(p.w[j]);
              // torchvision's order: g * w / count.
              for (int64_t c = 0; c < n; ++c) q[c * cs] += g[c] * w / divisor;
            }
          }
        }
      }
    }
  }

  // d(sample value)/d(coordinate j) . t for the box tangent t, per corner:
  // the directional derivative of each corner weight.
  static void weight_derivatives(const RoiCall& s, const SampleSlopes<G>& d, const G* t,
                                 G dw[4]) {
    G ydot = G(0), xdot = G(0);
    for (int64_t j = 0; j < s.coords(); ++j) {
      if (d.dpos[0][j] != G(0)) ydot += d.dpos[0][j] * t[j];
      if (d.dpos[1][j] != G(0)) xdot += d.dpos[1][j] * t[j];
    }
    for (int j = 0; j < 4; ++j) dw[j] = d.dy[j] * ydot + d.dx[j] * xdot;
  }

  // d(out)/d(boxes) . boxes_dot, rows [k0, k1), output channels [c0, c1).
  static void forward_boxes(const RoiCall& s, const T* const* f, const G* rois,
                            const int32_t* levels, const G* rois_dot, const int32_t* winner,
                            T* out_dot, int64_t k0, int64_t k1, int64_t c0, int64_t c1) {
    RoiPlan<G> r;
    std::vector<G> dw;  // per sample: 4 directional weight derivatives
    const int64_t ps = s.layout == Layout::kNHWC ? s.C : 1;
    for (int64_t k = k0; k < k1; ++k) {
      r.build(s, rois, levels, k, true);
      if (!r.valid()) {
        for (int64_t c = c0; c < c1; ++c)
          for (int64_t bin = 0; bin < s.bins(); ++bin)
            out_dot[s.output_offset(k, c, bin)] = store<T>(A(0));
        continue;
      }
      const G* t = roi_coords(s, rois_dot, k);
      dw.resize(r.samples.size() * 4);
      for (size_t i = 0; i < r.samples.size(); ++i) weight_derivatives(s, r.slopes[i], t, &dw[4 * i]);
      for (int64_t c = c0; c < c1; ++c) {
        for (int64_t bin = 0; bin < s.bins(); ++bin) {
          const T* img = f[r.level] + s.feature_offset(r.level, r.image, s.input_channel(c, bin), 0);
          const PlanBin& b = r.bins[bin];
          const int64_t o = s.output_offset(k, c, bin);
          int64_t i0 = b.begin, i1 = b.end;
          if (s.mode == PoolMode::kMax) {
            const bool has = winner[o] >= 0 && winner[o] < b.end - b.begin;
            i0 = has ? b.begin + winner[o] : b.end;
            i1 = has ? i0 + 1 : b.end;
          }
          A v = A(0);
          for (int64_t i = i0; i < i1; ++i)
            for (int j = 0; j < 4; ++j)
              v += A(dw[4 * i + j]) * load<A>(img[r.samples[i].at[j] * ps]);
          out_dot[o] = store<T>(v / A(b.divisor));
        }
      }
    }
  }

  // grad_boxes rows [k0, k1): the coordinate slots of each row (a (K, 1 +
  // coords) row's batch index slot gets 0). Summed in double, in a fixed order.
  static void backward_boxes(const RoiCall& s, const T* const* f, const G* rois,
                             const int32_t* levels, const T* ct, const int32_t* winner,
                             G* grad_rois, int64_t k0, int64_t k1) {
    RoiPlan<G> r;
    const int64_t ps = s.layout == Layout::kNHWC ? s.C : 1;
    for (int64_t k = k0; k < k1; ++k) {
      G* out = grad_rois + k * s.roi_stride();
      for (int64_t j = 0; j < s.roi_stride(); ++j) out[j] = G(0);
      r.build(s, rois, levels, k, true);
      if (!r.valid()) continue;
      double grad[kMaxBoxCoords] = {};
      for (int64_t c = 0; c < s.Cout; ++c) {
        for (int64_t bin = 0; bin < s.bins(); ++bin) {
          const T* img = f[r.level] + s.feature_offset(r.level, r.image, s.input_channel(c, bin), 0);
          const PlanBin& b = r.bins[bin];
          const int64_t o = s.output_offset(k, c, bin);
          const double g = double(load<A>(ct[o])) / b.divisor;
          int64_t i0 = b.begin, i1 = b.end;
          if (s.mode == PoolMode::kMax) {
            const bool has = winner[o] >= 0 && winner[o] < b.end - b.begin;
            i0 = has ? b.begin + winner[o] : b.end;
            i1 = has ? i0 + 1 : b.end;
          }
          if (g == 0) continue;
          for (int64_t i = i0; i < i1; ++i) {
            const SampleSlopes<G>& d = r.slopes[i];
            double dy = 0, dx = 0;  // d(sample value)/d(sample y), /d(sample x)
            for (int j = 0; j < 4; ++j) {
              const double v = double(load<A>(img[r.samples[i].at[j] * ps]));
              dy += double(d.dy[j]) * v;
              dx += double(d.dx[j]) * v;
            }
            for (int64_t j = 0; j < s.coords(); ++j) {
              if (d.dpos[0][j] != G(0)) grad[j] += g * dy * double(d.dpos[0][j]);
              if (d.dpos[1][j] != G(0)) grad[j] += g * dx * double(d.dpos[1][j]);
            }
          }
        }
      }
      G* coords = out + (s.per_image ? 0 : 1);
      for (int64_t j = 0; j < s.coords(); ++j) coords[j] = G(grad[j]);
    }
  }
};

}  // namespace jax_roialign::cpu
