// cc/cuda/kernels.cu, compiled as host C++ against the emulator (this
// directory's cuda_runtime.h): the one source of the kernels, not a copy.
#include "../kernels.cu"
