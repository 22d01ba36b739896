// Scalar types shared by every kernel, host and device: the 16-bit storage
// formats (XLA hands them over as raw uint16_t), their float32 conversions, and
// the per-storage-type choice of geometry and accumulation precision.
#pragma once

#include <cstdint>
#include <cstring>

// JRA_HD_INLINE: also inlined on the host, where a call per sample (or per
// bin) would cost more than its work (the compiler's own choice is JRA_HD's).
#if defined(__CUDACC__)
#define JRA_HD __host__ __device__ __forceinline__
#define JRA_HD_INLINE JRA_HD
#else
#define JRA_HD inline
#define JRA_HD_INLINE inline __attribute__((always_inline))
#endif

namespace jax_roialign {

// Storage tags for the 16-bit formats; the bits are XLA's.
struct Half { uint16_t bits; };
struct BFloat16 { uint16_t bits; };

JRA_HD uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

JRA_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

JRA_HD float to_float(BFloat16 v) { return bits_float(uint32_t(v.bits) << 16); }

// Round to nearest even; NaN stays a (quiet) NaN.
JRA_HD BFloat16 to_bfloat16(float f) {
  uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return BFloat16{uint16_t((u >> 16) | 0x40u)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return BFloat16{uint16_t(u >> 16)};
}

JRA_HD float to_float(Half v) {
  const uint32_t sign = uint32_t(v.bits & 0x8000u) << 16;
  const uint32_t exp = (v.bits >> 10) & 0x1fu;
  const uint32_t man = v.bits & 0x3ffu;
  if (exp == 0x1fu) return bits_float(sign | 0x7f800000u | (man << 13));  // inf, nan
  if (exp != 0) return bits_float(sign | ((exp + 112u) << 23) | (man << 13));
  // Subnormal (or zero): man * 2^-24, exact in float.
  const float mag = float(man) * 5.9604644775390625e-08f;
  return sign ? -mag : mag;
}

// Round to nearest even, overflow to inf, NaN stays NaN.
JRA_HD Half to_half(float f) {
  const uint32_t u = float_bits(f);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  // NaN: quiet, the payload's top bits kept (as x86's F16C conversion does).
  if (a > 0x7f800000u) return Half{uint16_t(sign | 0x7e00u | ((a & 0x7fffffu) >> 13))};
  if (a >= 0x477ff000u) return Half{uint16_t(sign | 0x7c00u)};  // >= 65520 rounds to inf
  if (a < 0x38800000u) {  // below the smallest normal half, 2^-14
    // Scale to units of 2^-24 and round to nearest even in float arithmetic,
    // which is exact here: the value is < 2^10 units.
    const float units = bits_float(a) * 16777216.0f;
    float r = units + 8388608.0f;  // forces rounding at the integer position
    r -= 8388608.0f;
    return Half{uint16_t(sign | uint16_t(r))};
  }
  uint32_t m = a + 0xfffu + ((a >> 13) & 1u);  // round mantissa to 10 bits
  m -= 0x38000000u;                            // rebias exponent 127 -> 15
  return Half{uint16_t(sign | uint16_t(m >> 13))};
}

// Per storage type: `Geometry` for box coordinates and sample positions (float32,
// float64 for float64 features, docs/semantics.md), `Accum` for sums.
template <typename T> struct Types;
template <> struct Types<float> { using Geometry = float; using Accum = float; };
template <> struct Types<double> { using Geometry = double; using Accum = double; };
template <> struct Types<Half> { using Geometry = float; using Accum = float; };
template <> struct Types<BFloat16> { using Geometry = float; using Accum = float; };

template <typename A> JRA_HD A load(float v) { return A(v); }
template <typename A> JRA_HD A load(double v) { return A(v); }
template <typename A> JRA_HD A load(Half v) { return A(to_float(v)); }
template <typename A> JRA_HD A load(BFloat16 v) { return A(to_float(v)); }

template <typename T> struct Store;
template <> struct Store<float> { JRA_HD static float from(float a) { return a; } };
template <> struct Store<double> { JRA_HD static double from(double a) { return a; } };
template <> struct Store<Half> { JRA_HD static Half from(float a) { return to_half(a); } };
template <> struct Store<BFloat16> { JRA_HD static BFloat16 from(float a) { return to_bfloat16(a); } };

template <typename T, typename A> JRA_HD T store(A a) { return Store<T>::from(a); }

}  // namespace jax_roialign
