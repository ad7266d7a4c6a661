/* kernels_arm.c - NEON kernel set for AArch64 (placeholder: none yet). */
#include "kernels.h"

#if defined(__aarch64__)
const ek_kernels *eka_kernels_neon(void) { return NULL; }
#endif
