#!/bin/sh
# Cross-compiles the kernel tests for AArch64 (static) and runs them under
# qemu, so the NEON kernels are checked against the scalar ones on an x86
# machine.  Needs gcc-aarch64-linux-gnu and qemu-user; fails loudly if they
# are missing, unless EMBER_SKIP_ARM=1.
set -e
cd "$(dirname "$0")/.."
CC_ARM=${CC_ARM:-aarch64-linux-gnu-gcc}
QEMU=${QEMU:-qemu-aarch64}
if [ "$EMBER_SKIP_ARM" = 1 ]; then echo "test_kernels_arm: skipped (EMBER_SKIP_ARM=1)"; exit 0; fi
for tool in "$CC_ARM" "$QEMU"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "test_kernels_arm: FAIL: $tool not found (apt-get install gcc-aarch64-linux-gnu qemu-user, or set EMBER_SKIP_ARM=1)"
        exit 1
    fi
done
out=build/arm
mkdir -p $out
$CC_ARM -std=c11 -O2 -Wall -Wextra -Wno-unused-parameter -Wno-unused-function -D_DEFAULT_SOURCE -Iinclude -Isrc \
    -static -o $out/test_kernels tests/test_kernels.c src/kernels.c src/kernels_x86.c src/kernels_arm.c -lm
# -cpu max has dotprod, so both the baseline and the dotprod set run
EMBER_TEST_QUICK=1 $QEMU -cpu max $out/test_kernels
