#!/bin/sh
# ember compiles as C++: every library source and the single file under
# g++ -std=c++17 -Wall -Wextra -Werror, and a C++ program using ember.h
# (tests/cxx_smoke.cpp) generates the same greedy text as the C CLI, once
# linked against libember.a (C objects) and once against the single file
# compiled as C++.
BUILD=${BUILD:-build}
CXX=${CXX:-g++}
passed=0; failed=0
ok() { passed=$((passed + 1)); echo "ok: $*"; }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
if ! command -v "$CXX" >/dev/null 2>&1; then
    echo "SKIP: test_cxx needs a C++ compiler ($CXX; apt-get install g++)"
    echo "test_cxx: 0 passed, 0 failed, 1 skipped"
    exit 0
fi
out=$BUILD/cxx
mkdir -p "$out"
CXXFLAGS="-std=c++17 -Wall -Wextra -Werror -D_DEFAULT_SOURCE"

for f in src/*.c; do
    if $CXX -x c++ $CXXFLAGS -Iinclude -Isrc -c "$f" -o "$out/$(basename "$f" .c).o" 2> "$out/err.txt"; then
        ok "$f compiles as C++17"
    else
        bad "$f as C++17:"; head -20 "$out/err.txt"
    fi
done

sh tools/amalgamate.sh "$out/single" > /dev/null || bad "amalgamate"
if $CXX -x c++ $CXXFLAGS -O2 -c "$out/single/ember.c" -o "$out/single/ember.o" 2> "$out/err.txt"; then
    ok "single-file ember.c compiles as C++17"
else
    bad "single-file ember.c as C++17:"; head -20 "$out/err.txt"
fi

model=models/ember-demo.gguf
prompt="Once upon a time"
want=$("./$BUILD/ember" -m "$model" -p "$prompt" -n 16 --temp 0 2>/dev/null)
[ -n "$want" ] || bad "the C CLI generated nothing"

if $CXX $CXXFLAGS -Iinclude tests/cxx_smoke.cpp "$BUILD/libember.a" -o "$out/cxx_smoke" -lm -lpthread 2> "$out/err.txt"; then
    ok "cxx_smoke.cpp builds against libember.a"
    got=$("$out/cxx_smoke" "$model" "$prompt" 16)
    if [ -n "$want" ] && [ "$got" = "$want" ]; then ok "C++ program generates what the C CLI does: '$got'"
    else bad "C++ program: '$got', C CLI: '$want'"; fi
else
    bad "cxx_smoke.cpp against libember.a:"; head -20 "$out/err.txt"
fi

if [ -f "$out/single/ember.o" ] &&
   $CXX $CXXFLAGS -I"$out/single" tests/cxx_smoke.cpp "$out/single/ember.o" -o "$out/cxx_smoke_single" -lm -lpthread 2> "$out/err.txt"; then
    got=$("$out/cxx_smoke_single" "$model" "$prompt" 16)
    if [ -n "$want" ] && [ "$got" = "$want" ]; then ok "C++ program on the C++-compiled single file generates what the C CLI does"
    else bad "C++ program (single file as C++): '$got', C CLI: '$want'"; fi
else
    bad "cxx_smoke.cpp against the single file compiled as C++:"; head -20 "$out/err.txt"
fi

echo "test_cxx: $passed passed, $failed failed, 0 skipped"
[ $failed -eq 0 ]
