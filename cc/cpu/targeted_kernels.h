// kernels.h compiled for one x86-64 instruction set beyond the baseline,
// included once per set by instruction_sets.h (no include guard). The includer defines:
//   JRA_CPU_ISA           the namespace the kernels live in
//   JRA_CPU_TARGET        the compiler's target features, a string
//   JRA_CPU_F16C          1 where F16C instructions may be used
//   JRA_CPU_VECTOR_BYTES  the bytes of one vector register (channel_loops.h)
// and this header undefines them after.
#define JRA_CPU_PRAGMA_STRING(x) _Pragma(#x)
#define JRA_CPU_PRAGMA(x) JRA_CPU_PRAGMA_STRING(x)  // x's macros expanded first

#if defined(__clang__)
JRA_CPU_PRAGMA(clang attribute push(__attribute__((target(JRA_CPU_TARGET))), apply_to = function))
#else
JRA_CPU_PRAGMA(GCC push_options)
JRA_CPU_PRAGMA(GCC target(JRA_CPU_TARGET))
#endif

#include "kernels.h"

#if defined(__clang__)
JRA_CPU_PRAGMA(clang attribute pop)
#else
JRA_CPU_PRAGMA(GCC pop_options)
#endif

#undef JRA_CPU_PRAGMA
#undef JRA_CPU_PRAGMA_STRING
#undef JRA_CPU_VECTOR_BYTES
#undef JRA_CPU_F16C
#undef JRA_CPU_TARGET
#undef JRA_CPU_ISA
