#!/bin/sh
# test_readme.sh - the README's C programs (its ```c blocks that have a main)
# compile as C and as C++ against include/ember.h and build/libember.a without
# warnings, and run from the repository root (the demo model).  Last line:
# "N passed, M failed".
BUILD=${BUILD:-build}
CC=${CC:-cc}
CXX=${CXX:-c++}
T=$BUILD/readme-test
mkdir -p "$T"
rm -f "$T"/example*.c
passed=0
failed=0
ok()   { passed=$((passed + 1)); }
fail() { failed=$((failed + 1)); echo "FAIL: $*"; }

if [ ! -f "$BUILD/libember.a" ]; then
    echo "FAIL: $BUILD/libember.a is missing (run make)"
    echo "0 passed, 1 failed"
    exit 1
fi

# Each ```c ... ``` block of README.md with "int main" becomes example<N>.c.
awk -v dir="$T" '
    /^```c[ \t]*$/ { inside = 1; text = ""; next }
    /^```/ && inside { inside = 0; if (text ~ /int main/) { n++; printf "%s", text > (dir "/example" n ".c"); close(dir "/example" n ".c") } next }
    inside { text = text $0 "\n" }
' README.md
n=$(ls "$T"/example*.c 2>/dev/null | wc -l)
if [ "$n" -ge 1 ]; then ok; else fail "no C program with a main found in README.md"; fi

for src in "$T"/example*.c; do
    [ -f "$src" ] || continue
    exe=${src%.c}
    if $CC -std=c11 -Wall -Werror -Iinclude -o "$exe" "$src" "$BUILD/libember.a" -lm -lpthread 2>"$exe.log"; then ok
    else fail "README $(basename "$src") does not compile as C11: $(head -n 5 "$exe.log")"; continue; fi
    if command -v "$CXX" >/dev/null 2>&1; then
        if $CXX -x c++ -std=c++17 -Wall -Werror -Iinclude -o "$exe-cxx" "$src" -x none "$BUILD/libember.a" -lm -lpthread \
                2>"$exe-cxx.log"; then ok
        else fail "README $(basename "$src") does not compile as C++17: $(head -n 5 "$exe-cxx.log")"; fi
    fi
    "$exe" >"$exe.out" 2>"$exe.err"
    rc=$?
    if [ $rc -eq 0 ] && [ -s "$exe.out" ]; then ok
    else fail "README $(basename "$src") exits $rc with $(wc -c <"$exe.out") bytes of output: $(head -c 300 "$exe.err")"; fi
done

echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
