// ThreadSanitizer's check of the CUDA kernels on the emulator, without Python
// (whose uninstrumented jaxlib floods TSan with false reports): the forward,
// the atomic and the deterministic backward (its tiles, ballots and barriers)
// and the box gradient, on a few float32 shapes, each result compared with
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

#include "cpu/kernels.h"
#include "cuda/launch.h"

namespace {

using namespace jax_roialign;
using Cpu = cpu::Kernels<float>;
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

void check(Op op, PoolMode mode, Layout layout) {
  RoiCall s{};
  s.op = op;
  s.mode = mode;
  s.layout = layout;
  s.N = 2, s.H = 30, s.W = 36, s.PH = 4, s.PW = 3, s.K = 16, s.R = 0;
  s.C = position_sensitive(op) ? 3 * s.PH * s.PW : 40;
  s.Cout = position_sensitive(op) ? 3 : s.C;
  s.spatial_scale = 0.5, s.sampling_ratio = -1, s.aligned = true;
  std::mt19937 rng(int(op) * 4 + int(mode) * 2 + int(layout));
  std::uniform_real_distribution<float> u(-1, 1), x(-10, 80), y(-10, 70);
  std::vector<float> f(size_t(s.N * s.C * s.H * s.W)), rois(size_t(s.K * 5));
  for (float& v : f) v = u(rng);
  for (int64_t k = 0; k < s.K; ++k) {
    float* r = &rois[size_t(k * 5)];
    r[0] = float(k % s.N), r[1] = x(rng), r[2] = y(rng), r[3] = r[1] + 40 * (u(rng) + 1),
    r[4] = r[2] + 30 * (u(rng) + 1);
  }
  const size_t n_out = size_t(s.K * s.Cout * s.bins());
  std::vector<float> out(n_out), out2(n_out), ct(n_out), grad(f.size()), grad2(f.size()),
      boxes(rois.size()), boxes2(rois.size());
  std::vector<int32_t> win(n_out), win2(n_out);
  for (float& v : ct) v = u(rng);

  Cpu::forward(s, f.data(), rois.data(), out.data(), win.data(), nullptr, 0, s.K, 0, s.Cout);
  expect(Cuda::forward(s, f.data(), rois.data(), out2.data(), win2.data(), nullptr) == 0 &&
             out == out2 && (mode == PoolMode::kAvg || win == win2),
         "forward", s);
  Cpu::backward_features(s, ct.data(), rois.data(), win.data(), grad.data(), 0, s.Cout);
  for (bool deterministic : {true, false}) {
    expect(Cuda::backward_features(s, ct.data(), rois.data(), win.data(), grad2.data(),
                                   deterministic, nullptr) == 0 &&
               (deterministic ? grad == grad2 : same(grad2, grad, 1e-5f)),
           deterministic ? "deterministic backward" : "atomic backward", s);
  }
  if (!has_box_derivative(op)) return;
  Cpu::backward_boxes(s, f.data(), rois.data(), ct.data(), win.data(), boxes.data(), 0, s.K);
  expect(Cuda::backward_boxes(s, f.data(), rois.data(), ct.data(), win.data(), boxes2.data(),
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
  }
  std::printf("race_check: %s\n", failures ? "FAILED" : "ok");
  return failures ? 1 : 0;
}
