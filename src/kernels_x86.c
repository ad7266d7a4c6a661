/* kernels_x86.c - AVX2/AVX-512 kernel sets (placeholder: none yet). */
#include "kernels.h"

#if defined(__x86_64__) || defined(_M_X64)
const ek_kernels *ekx_kernels_avx2(void) { return NULL; }
const ek_kernels *ekx_kernels_avx512(void) { return NULL; }
#endif
