// One operator's CPU kernels (cc/cpu/kernels.h) called directly, float32, on
// one thread: no XLA, no thread pool, no output allocated per call. The
// kernels run on the paths the handlers choose for the call's shape
// (cc/cpu/call_paths.h: channel-last copies, the gradient in place, bands),
// the rois image by image in increasing order (the handlers' forward also
// orders each image's by row). benchmarks/cpu_kernels.py writes the inputs,
// passes the kernel attributes (the ones the FFI handler gets), compiles this
// file against a cc/ tree and runs it; see there. Prints the instruction set,
// the best time of the calls and a checksum of the results (the same from
// any tree that computes the same bits).
//
// usage: cpu_kernels DIR forward|backward OP MODE LAYOUT N C H W PH PW K SCALE
//                    SAMPLING ALIGNED REPEATS
// DIR holds features.f32 (N x C x H x W in LAYOUT), rois.f32 (K x 5) and, for
// the backward, cotangent.f32 (the output's shape in LAYOUT).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <new>
#include <string>
#include <vector>

#include "cpu/call_paths.h"
#include "cpu/instruction_sets.h"

using namespace jax_roialign;

namespace {

// Buffers aligned as XLA's CPU buffers are (64 bytes), so that the kernels
// take the paths they take under XLA where those depend on alignment. Not
// cc/'s LineVector: the tree timed --against may predate it.
template <typename T>
struct XlaAligned {
  using value_type = T;
  XlaAligned() = default;
  template <typename U>
  XlaAligned(const XlaAligned<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), kAlign)); }
  void deallocate(T* p, size_t) { ::operator delete(p, kAlign); }
  bool operator==(const XlaAligned&) const { return true; }
  bool operator!=(const XlaAligned&) const { return false; }
  static constexpr std::align_val_t kAlign{64};
};

template <typename T>
using Buffer = std::vector<T, XlaAligned<T>>;

Buffer<float> read_floats(const std::string& path, size_t count) {
  Buffer<float> v(count);
  std::ifstream in(path, std::ios::binary);
  in.read(reinterpret_cast<char*>(v.data()), std::streamsize(count * sizeof(float)));
  if (!in || in.gcount() != std::streamsize(count * sizeof(float))) {
    std::fprintf(stderr, "cpu_kernels: %s: expected %zu float32\n", path.c_str(), count);
    std::exit(2);
  }
  return v;
}

double checksum(const Buffer<float>& v) {
  double sum = 0;
  for (float x : v) sum += double(x);
  return sum;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 17) {
    std::fprintf(stderr, "usage: cpu_kernels DIR forward|backward OP MODE LAYOUT N C H W PH PW K "
                         "SCALE SAMPLING ALIGNED REPEATS\n");
    return 2;
  }
  const std::string dir = argv[1];
  const bool forward = std::strcmp(argv[2], "forward") == 0;
  RoiCall s{};
  s.op = Op(std::atoll(argv[3]));
  s.mode = PoolMode(std::atoll(argv[4]));
  s.layout = Layout(std::atoll(argv[5]));
  s.N = std::atoll(argv[6]);
  s.C = std::atoll(argv[7]);
  const int64_t H = std::atoll(argv[8]), W = std::atoll(argv[9]);
  s.PH = std::atoll(argv[10]);
  s.PW = std::atoll(argv[11]);
  s.K = std::atoll(argv[12]);
  s.level[0] = Level{H, W, std::atof(argv[13])};
  s.sampling_ratio = std::atoll(argv[14]);
  s.aligned = std::atoll(argv[15]) != 0;
  const int repeats = std::max(1, std::atoi(argv[16]));
  s.Cout = position_sensitive(s.op) ? s.C / s.bins() : s.C;
  s.L = 1;

  const Buffer<float> features = read_floats(dir + "/features.f32", size_t(s.level_size(0)));
  const Buffer<float> rois = read_floats(dir + "/rois.f32", size_t(s.K * 5));
  const size_t outputs = size_t(s.K * s.Cout * s.bins());
  Buffer<float> out(outputs), grad(features.size()), cotangent;
  Buffer<int32_t> winners;
  if (!forward) cotangent = read_floats(dir + "/cotangent.f32", outputs);

  // The rois image by image, each image's in increasing order: the order the
  // backward must sum in (the handlers' forward orders them by row too).
  std::vector<int64_t> order;
  std::vector<int64_t> begin(s.N + 1, 0);
  for (int64_t n = 0; n < s.N; ++n) {
    begin[n] = int64_t(order.size());
    for (int64_t k = 0; k < s.K; ++k)
      if (rois[k * 5] == float(n)) order.push_back(k);
  }
  begin[s.N] = int64_t(order.size());
  const cpu::RoiList all{order.data(), int64_t(order.size())};

  const char* isa = cpu::instruction_set();
  double best = 1e30;
  cpu::with_kernels<float>([&](auto set) {
    using I = decltype(set);
    const float* f[kMaxLevels] = {features.data()};
    float* g[kMaxLevels] = {grad.data()};
    const bool max = s.mode == PoolMode::kMax;
    if (max && !forward) {  // the winners the backward reads, recorded once
      winners.resize(outputs);
      I::Kernels::forward(s, I::direct(s, f), rois.data(), nullptr, out.data(), winners.data(),
                          nullptr, false, all, 0, s.Cout);
    }
    const int32_t* win = winners.empty() ? nullptr : winners.data();
    const bool adjacent = cpu::channels_adjacent(s);
    const bool packed = forward ? cpu::packing_pays(s) : !cpu::gradient_in_place(s, true);
    const int64_t band = cpu::max_band_rows(s, int64_t(sizeof(float)));
    const bool bands = !forward && !packed && cpu::max_in_bands(s, band);
    auto image = [&](int64_t n) {
      return cpu::RoiList{order.data() + begin[n], begin[n + 1] - begin[n]};
    };
    auto call = [&] {
      if (forward && packed) {
        typename I::PackedFeatures copy(s, 0, s.Cout);
        for (int64_t n = 0; n < s.N; ++n) {
          copy.load(f, n);
          I::Kernels::forward(s, copy.view(), rois.data(), nullptr, out.data(), nullptr,
                              nullptr, false, image(n), 0, s.Cout);
        }
      } else if (forward) {
        I::Kernels::forward(s, I::direct(s, f), rois.data(), nullptr, out.data(), nullptr,
                            nullptr, false, all, 0, s.Cout);
      } else if (packed) {
        typename I::PackedGradient copy(s, 0, s.Cout);
        for (int64_t n = 0; n < s.N; ++n) {
          copy.zero(n);
          I::Kernels::template backward_features<true>(s, cotangent.data(), rois.data(),
                                                       nullptr, win, copy.view(), 0, s.Cout,
                                                       image(n), 0, s.bins());
          copy.store(g);
        }
      } else if (bands) {
        for (int64_t n = 0; n < s.N; ++n)
          I::Kernels::backward_max_bands(s, cotangent.data(), rois.data(), nullptr, win,
                                         I::direct(s, g), n, image(n), band);
      } else {
        std::fill(grad.begin(), grad.end(), 0.0f);
        if (adjacent)
          I::Kernels::template backward_features<true>(s, cotangent.data(), rois.data(), nullptr,
                                                       win, I::direct(s, g), 0, s.Cout, all, 0,
                                                       s.bins());
        else
          I::Kernels::template backward_features<false>(s, cotangent.data(), rois.data(),
                                                        nullptr, win, I::direct(s, g), 0, s.Cout,
                                                        all, 0, s.bins());
      }
    };
    call();  // untimed: first touches of the outputs and the copies
    for (int r = 0; r < repeats; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      call();
      const auto t1 = std::chrono::steady_clock::now();
      best = std::min(best, std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
  });
  std::printf("%s %.3f ms checksum %.17g\n", isa, best, checksum(forward ? out : grad));
  return 0;
}
