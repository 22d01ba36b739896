// cc/cuda/ffi_handlers.cc, compiled as host C++ against the emulator, for
// XLA's CPU platform. The handlers bind ffi::PlatformStream<cudaStream_t>,
// which only XLA's GPU platforms provide; with the emulator's cudaStream_t it
// decodes here to the (synchronous) null stream, before the handlers use it.
#include <cuda_runtime_api.h>

#include <optional>

#include "xla/ffi/api/ffi.h"

namespace xla::ffi {

template <>
struct CtxDecoding<PlatformStream<cudaStream_t>> {
  using Type = cudaStream_t;
  static std::optional<Type> Decode(const XLA_FFI_Api*, XLA_FFI_ExecutionContext*,
                                    DiagnosticEngine&) {
    return Type{};
  }
};

}  // namespace xla::ffi

#include "../ffi_handlers.cc"
