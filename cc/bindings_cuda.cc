// The _cuda extension module (bindings.h); Python registers its kernels for
// platform "CUDA".
#include "bindings.h"
#include "cuda/handlers.h"

JRA_BINDINGS(_cuda, JRA_KERNEL_CAPSULE_CUDA)
