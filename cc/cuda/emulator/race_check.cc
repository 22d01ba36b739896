// ThreadSanitizer's check of the CUDA kernels on the emulator, without Python
// (whose uninstrumented jaxlib floods TSan with false reports): the forward,
// the atomic and the deterministic backward (its tiles, ballots and barriers)
// and the box gradient, on a few float32 shapes and operators (a rotated, a
// crop, a three-level pyramid among them), each result compared with
// the CPU kernels' (bit for bit where the two add in the same order). .ci/run
// builds it with -fsanitize=thread and runs it: a race is a report, and the
// exit status 66.
//
//   c++ -std=c++17 -O1 -g -fsanitize=thread -ffp-contract=off -Icc/cuda/emulator
//       -Icc cc/cuda/emulator/race_check.cc cc/cuda/emulator/kernels.cc
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "cpu/instruction_sets.h"
#include "cuda/launch.h"

namespace {

using namespace jax_roialign;
// The baseline build, reading the buffers as laid out (no channel-last copy).
using Cpu = cpu::baseline::Kernels<float>;
using Cuda = cuda::Launch<float>;

int failures = 0;

void expect(bool ok, const char* what, const RoiCall& s) {
  if (ok) return;
  ++failures;
  std::printf("MISMATCH %s: op %d mode %d layout %d\n", what, int(s.op), int(s.mode),
              int(s.layout));
}

bool same(const std::vector<float>& a, const std::vector<float>& b, float tol) {
  for (size_t i = 0; i < a.size(); ++i)
    if (!(std::fabs(a[i] - b[i]) <= tol * (1 + std::fabs(b[i])))) return false;
  return true;
}

// One call of every kernel on `levels` feature levels (each roi its own level).
void check(Op op, PoolMode mode, Layout layout, int64_t levels = 1) {
  RoiCall s{};
  s.op = op;
  s.mode = mode;
  s.layout = layout;
  s.N = 2, s.PH = 4, s.PW = 3, s.K = 16, s.R = 0, s.per_image = false;
  s.C = position_sensitive(op) ? 3 * s.PH * s.PW : 40;
  s.Cout = position_sensitive(op) ? 3 : s.C;
  s.sampling_ratio = -1, s.aligned = true, s.radians = false, s.fill = 0.5;
  s.L = levels, s.has_levels = levels > 1;
  for (int64_t l = 0; l < levels; ++l) s.level[l] = Level{30 >> l, 36 >> l, 0.5 / double(1 << l)};
  std::mt19937 rng(int(op) * 8 + int(mode) * 4 + int(layout) * 2 + int(levels));
  std::uniform_real_distribution<float> u(-1, 1), x(-10, 80), y(-10, 70), angle(-180, 180);
  const int64_t stride = s.coords() + 1;
  std::vector<std::vector<float>> f(static_cast<size_t>(levels));
  for (int64_t l = 0; l < levels; ++l) {
    f[size_t(l)].resize(size_t(s.level_size(l)));
    for (float& v : f[size_t(l)]) v = u(rng);
  }
  std::vector<float> rois(size_t(s.K * stride));
  std::vector<int32_t> level_of(size_t(levels > 1 ? s.K : 0));
  for (int64_t k = 0; k < s.K; ++k) {
    float* r = &rois[size_t(k * stride)];
    r[0] = float(k % s.N);
    const float x1 = x(rng), y1 = y(rng), w = 40 * (u(rng) + 1), h = 30 * (u(rng) + 1);
    if (op == Op::kRoiAlignRotated) {
      r[1] = x1 + w / 2, r[2] = y1 + h / 2, r[3] = w, r[4] = h, r[5] = angle(rng);
    } else if (op == Op::kCropAndResize) {  // normalised [y1, x1, y2, x2]
      r[1] = y1 / 60, r[2] = x1 / 72, r[3] = (y1 + h) / 60, r[4] = (x1 + w) / 72;
    } else {
      r[1] = x1, r[2] = y1, r[3] = x1 + w, r[4] = y1 + h;
    }
    if (levels > 1) level_of[size_t(k)] = int32_t(k % (levels + 1)) - (k % 7 == 3);  // some -1
  }
  const int32_t* lv = level_of.empty() ? nullptr : level_of.data();
  const size_t n_out = size_t(s.K * s.Cout * s.bins());
  std::vector<float> out(n_out), out2(n_out), ct(n_out), boxes(rois.size()), boxes2(rois.size());
  std::vector<std::vector<float>> grad(f.size()), grad2(f.size());
  std::vector<int32_t> win(n_out), win2(n_out);
  for (float& v : ct) v = u(rng);
  const float* fp[kMaxLevels] = {};
  float* gp[kMaxLevels] = {};
  cuda::Levels<const float> fl{};
  cuda::Levels<float> gl{};
  for (size_t l = 0; l < f.size(); ++l) {
    grad[l].assign(f[l].size(), 0.0f);
    grad2[l].assign(f[l].size(), 0.0f);
    fp[l] = fl.data[l] = f[l].data();
    gp[l] = grad[l].data();
    gl.data[l] = grad2[l].data();
  }

  const auto features = cpu::baseline::direct_view(s, fp);
  const auto grad_view = cpu::baseline::direct_view(s, gp);
  const bool unit = features.channel_step(0) == 1;
  std::vector<int64_t> order(size_t(s.K));
  for (int64_t k = 0; k < s.K; ++k) order[size_t(k)] = k;
  const cpu::RoiList all{order.data(), s.K};
  Cpu::forward(s, features, rois.data(), lv, out.data(), win.data(), nullptr, false, all, 0,
               s.Cout);
  expect(Cuda::forward(s, fl, rois.data(), lv, out2.data(), win2.data(), nullptr) == 0 &&
             out == out2 && (mode == PoolMode::kAvg || win == win2),
         "forward", s);
  if (unit)
    Cpu::backward_features<true>(s, ct.data(), rois.data(), lv, win.data(), grad_view, 0, s.Cout,
                                 all, 0, s.bins());
  else
    Cpu::backward_features<false>(s, ct.data(), rois.data(), lv, win.data(), grad_view, 0, s.Cout,
                                  all, 0, s.bins());
  for (bool deterministic : {true, false}) {
    bool ok = Cuda::backward_features(s, ct.data(), rois.data(), lv, win.data(), gl,
                                      deterministic, nullptr) == 0;
    for (size_t l = 0; l < f.size(); ++l)
      ok = ok && (deterministic ? grad[l] == grad2[l] : same(grad2[l], grad[l], 1e-5f));
    expect(ok, deterministic ? "deterministic backward" : "atomic backward", s);
  }
  if (!has_box_derivative(op)) return;
  Cpu::backward_boxes(s, features, rois.data(), lv, ct.data(), win.data(), boxes.data(), 0, s.K);
  expect(Cuda::backward_boxes(s, fl, rois.data(), lv, ct.data(), win.data(), boxes2.data(),
                              nullptr) == 0 &&
             same(boxes2, boxes, 1e-5f),
         "backward_boxes", s);
}

}  // namespace

int main() {
  for (Layout layout : {Layout::kNCHW, Layout::kNHWC}) {
    check(Op::kRoiAlign, PoolMode::kAvg, layout);
    check(Op::kRoiAlign, PoolMode::kMax, layout);
    check(Op::kPsRoiPool, PoolMode::kAvg, layout);
    check(Op::kRoiAlignRotated, PoolMode::kAvg, layout);
    check(Op::kCropAndResize, PoolMode::kAvg, layout);
    check(Op::kRoiAlign, PoolMode::kMax, layout, 3);  // a pyramid
  }
  std::printf("race_check: %s\n", failures ? "FAILED" : "ok");
  return failures ? 1 : 0;
}
