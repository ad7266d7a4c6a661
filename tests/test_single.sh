#!/bin/sh
# The drop-in pair (make single) builds on its own, with the CLI and the
# examples, without warnings, and gives the same output as the library build.
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
CC=${CC:-cc}
passed=0; failed=0; skipped=0
ok() { passed=$((passed + 1)); echo "ok: $*"; }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }

out=$BUILD/single
sh tools/amalgamate.sh "$out" || bad "amalgamate"
if $CC -std=c11 -O2 -Wall -Wextra -Werror -c "$out/ember.c" -o "$out/ember.o" 2> "$out/warnings.txt"; then
    ok "single ember.c compiles with -Wall -Wextra -Werror"
else
    bad "single ember.c does not compile cleanly:"; head -20 "$out/warnings.txt"
fi
# Only the pair is visible: no -Isrc, no -Iinclude.
$CC -std=c11 -O2 -Wall -Wextra -D_DEFAULT_SOURCE -I"$out" examples/ember.c "$out/ember.o" -o "$out/ember" -lm -lpthread \
    && ok "CLI links against the single file" || bad "CLI against the single file"
$CC -std=c11 -O2 -Wall -Wextra -I"$out" examples/simple.c "$out/ember.o" -o "$out/simple" -lm -lpthread \
    && ok "examples/simple.c links against the single file" || bad "simple.c against the single file"

model=$BUILD/test-models/single-q4_0.gguf
mkdir -p "$BUILD/test-models"
if [ ! -f "$model" ]; then
    $PYTHON tools/convert_weights.py random:dim=128,hidden=352,layers=2,heads=4,kv_heads=2,vocab=600,ctx=128,seed=7 \
        -o "$model" --type q4_0 > /dev/null || bad "making a random model"
fi
a=$("$BUILD/ember" -m "$model" -p "hello world" -n 24 --temp 0.9 --seed 5 2>/dev/null)
b=$("$out/ember" -m "$model" -p "hello world" -n 24 --temp 0.9 --seed 5 2>/dev/null)
if [ -n "$a" ] && [ "$a" = "$b" ]; then ok "single-file CLI output equals the library CLI"; else bad "outputs differ: '$a' vs '$b'"; fi
shared=${EMBER_SHARED:-../shared}
if [ -f "$shared/models/stories260K/stories260K.bin" ]; then
    m2=$BUILD/test-models/stories260K-q8_0.gguf
    [ -f "$m2" ] || $PYTHON tools/convert_weights.py "$shared/models/stories260K/stories260K.bin" \
        --tokenizer "$shared/models/stories260K/tok512.bin" -o "$m2" --type q8_0 > /dev/null
    t=$("$out/simple" "$m2" "Once upon a time" 2>/dev/null)
    case "$t" in "Once upon a time"*) ok "simple.c (single file) generates from stories260K";; *) bad "simple.c output: $t";; esac
else
    skipped=$((skipped + 1)); echo "SKIP: $shared/models/stories260K not found (../shared test data): simple.c on stories260K"
fi
echo "test_single: $passed passed, $failed failed, $skipped skipped"
[ $failed -eq 0 ]
