#!/bin/sh
# run.sh - build every tests/fuzz/fuzz_*.c with libFuzzer (+ASan+UBSan) into
# build/fuzz/ and run each for SECONDS on its corpus, copying crashes into
# tests/regressions/ (named <fuzzer>-<kind>-<sha1>).
#   sh tests/fuzz/run.sh SECONDS [NAME...]      (NAME: model, generate, ...)
#   sh tests/fuzz/run.sh --build-only
#   sh tests/fuzz/run.sh --replay               replay tests/regressions/*
# Environment: FUZZ_CC (default clang), FUZZ_JOBS (parallel jobs, default 1),
# FUZZ_NICE (default 10).  Exit status: 0 if no fuzzer found a crash.
set -u
FUZZ_CC=${FUZZ_CC:-clang}
NICE=${FUZZ_NICE:-10}
OUT=build/fuzz
REG=tests/regressions
FLAGS="-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -g -O1 -std=c11 -D_DEFAULT_SOURCE -Iinclude -Isrc -Itests"

if ! command -v "$FUZZ_CC" >/dev/null 2>&1; then
    echo "run.sh: $FUZZ_CC not found: libFuzzer needs clang" >&2
    exit 2
fi
mkdir -p "$OUT/obj" "$REG"

# Library objects built once with the fuzzing flags (rebuilt when stale).
build_objs() {
    objs=""
    pids=""
    rm -f "$OUT/obj/FAILED"
    for src in src/*.c; do
        o=$OUT/obj/$(basename "$src" .c).o
        if [ ! -f "$o" ] || [ -n "$(find "$src" src/*.h include/ember.h -newer "$o" 2>/dev/null)" ]; then
            # -fsanitize=fuzzer-no-link: coverage for the library without a second main;
            # kernels_x86.c without UBSan's pointer-overflow check (why: Makefile, sanitize)
            extra=""
            [ "$(basename "$src")" = kernels_x86.c ] && extra="-fno-sanitize=pointer-overflow"
            ( nice -n "$NICE" "$FUZZ_CC" $(echo "$FLAGS" | sed 's/-fsanitize=fuzzer,/-fsanitize=fuzzer-no-link,/') $extra \
                -c "$src" -o "$o.tmp" >&2 && mv "$o.tmp" "$o" || touch "$OUT/obj/FAILED" ) &
            pids="$pids $!"
        fi
        objs="$objs $o"
    done
    for p in $pids; do wait "$p"; done
    [ -f "$OUT/obj/FAILED" ] && return 1
    echo "$objs"
}

build_fuzzer() {  # build_fuzzer NAME OBJS -> $OUT/fuzz_NAME
    name=$1; objs=$2
    bin=$OUT/fuzz_$name
    srcf=tests/fuzz/fuzz_$name.c
    if [ ! -x "$bin" ] || [ -n "$(find "$srcf" $objs tests/test_hostile_model.c tests/gguf_build.h tests/test.h -newer "$bin" 2>/dev/null)" ]; then
        nice -n "$NICE" "$FUZZ_CC" $FLAGS -o "$bin" "$srcf" $objs -lm -lpthread || return 1
    fi
}

names() {
    for f in tests/fuzz/fuzz_*.c; do
        [ -f "$f" ] || continue
        n=$(basename "$f" .c)
        echo "${n#fuzz_}"
    done
}

build_all() {
    objs=$(build_objs) || { echo "run.sh: building the library objects failed" >&2; return 1; }
    st=0
    for n in $(names); do
        build_fuzzer "$n" "$objs" || { echo "run.sh: building fuzz_$n failed" >&2; st=1; }
    done
    return $st
}

# Replay every regression input on its fuzzer (by name prefix; inputs with
# no known prefix go to every fuzzer).
replay() {
    st=0; count=0
    for f in "$REG"/*; do
        [ -f "$f" ] || continue
        base=$(basename "$f")
        targets=""
        for n in $(names); do
            case "$base" in "$n"-*) targets=$n ;; esac
        done
        [ -n "$targets" ] || targets=$(names)
        for n in $targets; do
            count=$((count + 1))
            if ! "$OUT/fuzz_$n" -runs=1 "$f" >"$OUT/replay.log" 2>&1; then
                echo "REGRESSION: fuzz_$n crashes on $f"
                grep -E 'ERROR|SUMMARY|runtime error' "$OUT/replay.log" | head -5
                st=1
            fi
        done
    done
    echo "replayed $count regression inputs"
    return $st
}

case "${1:-}" in
--build-only) build_all; exit $? ;;
--replay) build_all || exit 1; replay; exit $? ;;
"" ) echo "usage: sh tests/fuzz/run.sh SECONDS [NAME...] | --build-only | --replay" >&2; exit 2 ;;
esac
SECONDS_EACH=$1; shift
build_all || exit 1
list=${*:-$(names)}
found=0
for n in $list; do
    corpus=tests/fuzz/corpus_$n
    work=$OUT/corpus_$n
    art=$OUT/artifacts_$n
    mkdir -p "$work" "$art" "$corpus"
    extra=""
    jobs=""
    if [ "${FUZZ_JOBS:-1}" -gt 1 ]; then jobs="-fork=$FUZZ_JOBS"; fi
    case $n in
        generate) extra="-max_len=256" ;;
        tokenizer) extra="-max_len=4096" ;;
    esac
    echo "== fuzz_$n for ${SECONDS_EACH}s (corpus $corpus, new inputs in $work)"
    # New inputs go to the first directory (build/), the committed seeds stay small.
    nice -n "$NICE" "$OUT/fuzz_$n" -max_total_time="$SECONDS_EACH" -timeout=20 -rss_limit_mb=2560 \
        $jobs -artifact_prefix="$art/" -print_final_stats=1 $extra \
        "$work" "$corpus" >"$OUT/fuzz_$n.log" 2>&1
    rc=$?
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE)' "$OUT/fuzz_$n.log" | tail -3
    for a in "$art"/crash-* "$art"/leak-* "$art"/timeout-* "$art"/oom-*; do
        [ -f "$a" ] || continue
        kind=$(basename "$a" | cut -d- -f1)
        dst=$REG/$n-$kind-$(sha1sum "$a" | cut -c1-16)
        if [ ! -f "$dst" ]; then
            cp "$a" "$dst"
            echo "NEW FINDING: fuzz_$n $kind -> $dst"
        fi
        rm -f "$a"
        found=1
    done
    if [ $rc -ne 0 ] && [ $found -eq 0 ]; then
        echo "fuzz_$n exited with $rc:"; tail -20 "$OUT/fuzz_$n.log"; found=1
    fi
done
exit $found
