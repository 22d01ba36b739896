// The emulator's runtime API (cuda_runtime.h has all of it), for the
// sources that include <cuda_runtime_api.h>.
#pragma once

#include "cuda_runtime.h"
