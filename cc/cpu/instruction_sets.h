// The CPU kernels (kernels.h), compiled once per instruction set and chosen
// when the module loads: `baseline` (the target's default: SSE2 on x86-64,
// NEON on arm64) everywhere; on x86-64 CPUs that have them, `avx2` (AVX2, FMA,
// F16C, BMI1/2; 32-byte vectors) and `avx512` (AVX-512 F/BW/DQ/VL on top;
// 64-byte vectors). FMA is available to, never contracted by, the x86-64
// builds (-ffp-contract=off), and a vector's lanes are independent channels,
// so every build computes the same bits. JAX_ROIALIGN_CPU_ISA=baseline or
// avx2 caps the choice (the tests compare the builds).
#pragma once

#include <cstdlib>
#include <cstring>

#define JRA_CPU_ISA baseline
#define JRA_CPU_F16C 0
#define JRA_CPU_VECTOR_BYTES 32
#include "kernels.h"
#undef JRA_CPU_VECTOR_BYTES
#undef JRA_CPU_F16C
#undef JRA_CPU_ISA

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define JRA_CPU_HAS_X86_SETS 1

#define JRA_CPU_ISA avx2
#define JRA_CPU_TARGET "avx2,fma,f16c,bmi,bmi2"
#define JRA_CPU_F16C 1
#define JRA_CPU_VECTOR_BYTES 32
#include "targeted_kernels.h"

#define JRA_CPU_ISA avx512
#define JRA_CPU_TARGET "avx2,fma,f16c,bmi,bmi2,avx512f,avx512bw,avx512dq,avx512vl"
#define JRA_CPU_F16C 1
#define JRA_CPU_VECTOR_BYTES 64
#include "targeted_kernels.h"
#else
#define JRA_CPU_HAS_X86_SETS 0
#endif

namespace jax_roialign::cpu {

// The instruction set the kernels run with: "avx512", "avx2" or "baseline".
inline const char* instruction_set() {
  static const char* const chosen = [] {
    const char* cap = std::getenv("JAX_ROIALIGN_CPU_ISA");
    if (cap && std::strcmp(cap, "baseline") == 0) return "baseline";
#if JRA_CPU_HAS_X86_SETS
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                      __builtin_cpu_supports("f16c") && __builtin_cpu_supports("bmi") &&
                      __builtin_cpu_supports("bmi2");
    const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                        __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    if (avx512 && !(cap && std::strcmp(cap, "avx2") == 0)) return "avx512";
    if (avx2) return "avx2";
#endif
    return "baseline";
  }();
  return chosen;
}

// An instruction set's Kernels<T>, a task's channel-last copies (Packed) of
// the features, in their own type (exact), and of their gradient, in the
// accumulation type, and direct views (the buffers as XLA lays them out).
#define JRA_CPU_KERNEL_SET(isa)                                           \
  template <typename T>                                                   \
  struct isa##_set {                                                      \
    using Kernels = isa::Kernels<T>;                                      \
    using PackedFeatures = isa::Packed<T>;                                \
    using PackedGradient = isa::Packed<typename Types<T>::Accum>;         \
    template <typename E>                                                 \
    static isa::View<E> direct(const RoiCall& s, E* const* level) {       \
      return isa::direct_view(s, level);                                  \
    }                                                                     \
  };
JRA_CPU_KERNEL_SET(baseline)
#if JRA_CPU_HAS_X86_SETS
JRA_CPU_KERNEL_SET(avx2)
JRA_CPU_KERNEL_SET(avx512)
#endif
#undef JRA_CPU_KERNEL_SET

// Calls fn(set) with the chosen instruction set's kernel set.
template <typename T, typename Fn>
auto with_kernels(Fn&& fn) {
#if JRA_CPU_HAS_X86_SETS
  const char* set = instruction_set();
  if (std::strcmp(set, "avx512") == 0) return fn(avx512_set<T>{});
  if (std::strcmp(set, "avx2") == 0) return fn(avx2_set<T>{});
#endif
  return fn(baseline_set<T>{});
}

}  // namespace jax_roialign::cpu
