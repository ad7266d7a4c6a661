#!/bin/sh
# Only the ember_* API is visible: libember.so exports nothing else (and
# needs nothing but libc/libm/libpthread), libember.a and the single file
# define nothing else, and a program that defines gguf_find_tensor, ggml_init,
# llama_model_load, whisper_init, ember's own internal names, ... with other
# signatures (tests/symbols_prog.c) links against each of them, reaches its
# own definitions, and still generates the C CLI's greedy text.
BUILD=${BUILD:-build}
CC=${CC:-cc}
passed=0; failed=0; skipped=0
ok() { passed=$((passed + 1)); echo "ok: $*"; }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
skip() { skipped=$((skipped + 1)); echo "SKIP: $*"; }
out=$BUILD/symbols
mkdir -p "$out"
so=$BUILD/libember.so
a=$BUILD/libember.a

extra=$(nm -D --defined-only "$so" | awk '{print $NF}' | grep -v '^ember_')
if [ -z "$extra" ]; then ok "libember.so exports only ember_* ($(nm -D --defined-only "$so" | wc -l) symbols)"
else bad "libember.so exports more than ember_*: $(echo $extra | head -c 400)"; fi
undef=$(nm -D --undefined-only "$so" | awk '$1 == "U" && $2 !~ /@/ {print $2}')
if [ -z "$undef" ]; then ok "libember.so needs only versioned libc/libm/libpthread symbols"
else bad "libember.so has unversioned undefined symbols: $undef"; fi

if [ "$(ar t "$a" | wc -l)" -eq 1 ]; then
    extra=$(nm --defined-only -g "$a" 2>/dev/null | awk 'NF == 3 {print $3}' | grep -v '^ember_')
    if [ -z "$extra" ]; then ok "libember.a defines only ember_* globally"
    else bad "libember.a defines more than ember_*: $(echo $extra | head -c 400)"; fi
else
    skip "libember.a is a plain archive (built without objcopy or with PRELINK=0)"
fi

sh tools/amalgamate.sh "$out/single" > /dev/null || bad "amalgamate"
if $CC -std=c11 -O2 -c "$out/single/ember.c" -o "$out/single.o"; then
    extra=$(nm --defined-only -g "$out/single.o" | awk '{print $3}' | grep -v '^ember_')
    if [ -z "$extra" ]; then ok "the single file defines only ember_* globally"
    else bad "the single file defines more than ember_*: $(echo $extra | head -c 400)"; fi
fi
if $CC -std=c11 -O2 -Wall -Wextra -Werror -DEMBER_STATIC -c "$out/single/ember.c" -o "$out/single-static.o"; then
    extra=$(nm --defined-only -g "$out/single-static.o" | awk '{print $3}')
    if [ -z "$extra" ]; then ok "the single file with EMBER_STATIC defines nothing globally"
    else bad "the single file with EMBER_STATIC defines: $(echo $extra | head -c 400)"; fi
else
    bad "the single file does not compile cleanly with -DEMBER_STATIC"
fi

model=models/ember-demo.gguf
prompt="Once upon a time"
want=$("./$BUILD/ember" -m "$model" -p "$prompt" -n 16 --temp 0 2>/dev/null)
[ -n "$want" ] || bad "the C CLI generated nothing"
check() {  # check LABEL BINARY: runs it and compares with the CLI
    got=$(LD_LIBRARY_PATH=$BUILD "$2" "$model" "$prompt" 16)
    if [ $? -eq 0 ] && [ -n "$want" ] && [ "$got" = "$want" ]; then ok "$1: links, own definitions reached, generates the CLI's text"
    else bad "$1: got '$got', the CLI '$want'"; fi
}
CFL="-std=c11 -O1 -Wall -Wextra"
$CC $CFL -Iinclude tests/symbols_prog.c "$a" -o "$out/prog-static" -lm -lpthread 2> "$out/link.txt" \
    && check "libember.a" "$out/prog-static" || { bad "linking libember.a:"; head -5 "$out/link.txt"; }
$CC $CFL -Iinclude tests/symbols_prog.c -L"$BUILD" -lember -o "$out/prog-shared" -lm -lpthread 2> "$out/link.txt" \
    && check "libember.so" "$out/prog-shared" || { bad "linking libember.so:"; head -5 "$out/link.txt"; }
$CC $CFL -I"$out/single" tests/symbols_prog.c "$out/single/ember.c" -o "$out/prog-single" -lm -lpthread 2> "$out/link.txt" \
    && check "single file" "$out/prog-single" || { bad "linking the single file:"; head -5 "$out/link.txt"; }
# The check can fail: the plain objects clash with the program's names.
if [ -f "$BUILD/obj/libember-internal.a" ]; then
    if $CC $CFL -Iinclude tests/symbols_prog.c "$BUILD/obj/libember-internal.a" -o "$out/prog-internal" -lm -lpthread 2> "$out/link.txt"; then
        bad "the program links even against the unprelinked objects: the test proves nothing"
    elif grep -q 'multiple definition' "$out/link.txt"; then ok "control: the unprelinked objects do clash (multiple definition)"
    else bad "control link failed for another reason:"; head -5 "$out/link.txt"; fi
fi

echo "test_symbols: $passed passed, $failed failed, $skipped skipped"
[ $failed -eq 0 ]
