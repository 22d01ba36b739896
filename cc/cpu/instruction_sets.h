// The CPU kernels (kernels.h), compiled once per instruction set and chosen
// when the module loads: `baseline` (the target's default: SSE2 on x86-64,
// NEON on arm64) everywhere, `avx2` (AVX2, FMA, F16C, BMI1/2) on x86-64 CPUs
// that have it. FMA is available to, never contracted by, the avx2 build
// (-ffp-contract=off), so both compute the same bits.
// JAX_ROIALIGN_CPU_ISA=baseline forces the baseline build (the tests compare
// the two).
#pragma once

#include <cstdlib>
#include <cstring>

#define JRA_CPU_ISA baseline
#define JRA_CPU_F16C 0
#include "kernels.h"
#undef JRA_CPU_F16C
#undef JRA_CPU_ISA

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define JRA_CPU_HAS_AVX2 1
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,bmi,bmi2"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,bmi,bmi2")
#endif
#define JRA_CPU_ISA avx2
#define JRA_CPU_F16C 1
#include "kernels.h"
#undef JRA_CPU_F16C
#undef JRA_CPU_ISA
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#else
#define JRA_CPU_HAS_AVX2 0
#endif

namespace jax_roialign::cpu {

// The instruction set the kernels run with: "avx2" or "baseline".
inline const char* instruction_set() {
  static const char* const chosen = [] {
    const char* forced = std::getenv("JAX_ROIALIGN_CPU_ISA");
    if (forced && std::strcmp(forced, "baseline") == 0) return "baseline";
#if JRA_CPU_HAS_AVX2
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c") && __builtin_cpu_supports("bmi") &&
        __builtin_cpu_supports("bmi2"))
      return "avx2";
#endif
    return "baseline";
  }();
  return chosen;
}

// An instruction set's Kernels<T>, Packed<A> (a task's channel-last copy)
// and direct views (the buffers as XLA lays them out).
#define JRA_CPU_KERNEL_SET(isa)                                           \
  template <typename T>                                                   \
  struct isa##_set {                                                      \
    using Kernels = isa::Kernels<T>;                                      \
    using Packed = isa::Packed<typename Types<T>::Accum>;                 \
    template <typename E>                                                 \
    static isa::View<E> direct(const RoiCall& s, E* const* level) {       \
      return isa::direct_view(s, level);                                  \
    }                                                                     \
  };
JRA_CPU_KERNEL_SET(baseline)
#if JRA_CPU_HAS_AVX2
JRA_CPU_KERNEL_SET(avx2)
#endif
#undef JRA_CPU_KERNEL_SET

// Calls fn(set) with the chosen instruction set's kernel set.
template <typename T, typename Fn>
auto with_kernels(Fn&& fn) {
#if JRA_CPU_HAS_AVX2
  if (instruction_set()[0] == 'a') return fn(avx2_set<T>{});
#endif
  return fn(baseline_set<T>{});
}

}  // namespace jax_roialign::cpu
