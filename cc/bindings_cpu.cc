// The _cpu extension module (bindings.h).
#include "bindings.h"
#include "cpu/handlers.h"

JRA_BINDINGS(_cpu, JRA_KERNEL_CAPSULE_CPU)
