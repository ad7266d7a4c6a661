#!/bin/sh
# test_fuzz_short.sh - every libFuzzer harness in tests/fuzz/ for ~10 s each,
# then every input in tests/regressions/ replayed on its fuzzer.  Needs clang
# with libFuzzer: without it this FAILS loudly unless EMBER_SKIP_FUZZ=1.
#   FUZZ_SHORT_SECONDS=N changes the time per fuzzer.
# Last line: "N passed, M failed".
if [ "${EMBER_SKIP_FUZZ:-0}" = 1 ]; then
    echo "EMBER_SKIP_FUZZ=1: fuzzing skipped"
    echo "0 passed, 0 failed"
    exit 0
fi
if ! command -v "${FUZZ_CC:-clang}" >/dev/null 2>&1; then
    echo "***********************************************************************"
    echo "*** clang is not installed: the fuzzers (libFuzzer) cannot be built. ***"
    echo "*** Install clang, or set EMBER_SKIP_FUZZ=1 to skip them knowingly.   ***"
    echo "***********************************************************************"
    echo "0 passed, 1 failed"
    exit 1
fi
passed=0
failed=0
if sh tests/fuzz/run.sh --build-only >build/fuzz-build.log 2>&1; then
    passed=$((passed + 1))
else
    failed=$((failed + 1)); echo "FAIL: building the fuzzers"; grep -E 'error' build/fuzz-build.log | head -10
fi
for f in tests/fuzz/fuzz_*.c; do
    n=$(basename "$f" .c); n=${n#fuzz_}
    if sh tests/fuzz/run.sh "${FUZZ_SHORT_SECONDS:-10}" "$n"; then passed=$((passed + 1))
    else failed=$((failed + 1)); echo "FAIL: fuzz_$n found a problem (see build/fuzz/fuzz_$n.log, tests/regressions/)"; fi
done
if sh tests/fuzz/run.sh --replay; then passed=$((passed + 1))
else failed=$((failed + 1)); echo "FAIL: a regression input crashes again"; fi
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
