// The kernels for the build's baseline instruction set (portable).
#include <cmath>
#include <cstring>
#include <utility>

#include "sadfast/kernels.hpp"

#define SADFAST_ISA_NS isa_baseline
#define SADFAST_ISA_NAME "baseline"
#include "kernels_impl.inc"
