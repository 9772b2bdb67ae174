// The kernels for x86-64 CPUs with AVX2 and FMA, chosen at run time when the CPU has them.
//
// Everything shared with the baseline variant (the standard library, sadfast's own headers) is
// included *before* the target switch, so the inline functions the two variants share are
// compiled identically and the linker can never pick an AVX2 copy for the baseline variant.
// Only this file's own code (in namespace isa_avx2) is compiled for AVX2+FMA.
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cassert>
#include <climits>
#include <cmath>
#include <complex>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iosfwd>
#include <limits>
#include <new>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "sadfast/kernels.hpp"

#if defined(SADFAST_HAVE_LIBMVEC)
// glibc's libmvec (>= 2.35): 4-wide AVX2 variants, accurate to a few ulp.
extern "C" {
__m256d _ZGVdN4v_exp(__m256d);
__m256d _ZGVdN4v_expm1(__m256d);
__m256d _ZGVdN4v_erfc(__m256d);
}
#define SADFAST_LIBMVEC_AVX2 1
#endif

#if !defined(SADFAST_NATIVE_BUILD)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif

#define SADFAST_ISA_NS isa_avx2
#define SADFAST_ISA_NAME "avx2"
#include "kernels_impl.inc"

#if !defined(SADFAST_NATIVE_BUILD)
#pragma GCC pop_options
#endif
