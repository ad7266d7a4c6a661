#!/bin/sh
# The Windows build (make win: MinGW-w64 cross compiler) under wine: every C
# test passes, and the CLI prints the same bytes as the Linux build for the
# same commands (greedy, sampled with a seed, mapped, tokenize); a program
# linked against ember.dll, or built on the single file, prints what the
# static one does.  Skips (by
# name) without x86_64-w64-mingw32-gcc or wine.
BUILD=${BUILD:-build}
MAKE=${MAKE:-make}
WIN=build/win
passed=0; failed=0; skipped=0
ok() { passed=$((passed + 1)); echo "ok: $*"; }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
summary() { echo "test_win: $passed passed, $failed failed, $skipped skipped"; [ $failed -eq 0 ]; exit $?; }

for tool in x86_64-w64-mingw32-gcc wine; do
    if ! command -v $tool >/dev/null 2>&1; then
        echo "SKIP: test_win: $tool not found (apt-get install mingw-w64 wine); the Windows build was not tested"
        skipped=$((skipped + 1))
        summary
    fi
done

# wine's first start makes its prefix (slow); keep it under build/
WINEPREFIX=$(pwd)/build/wine
WINEDEBUG=-all
export WINEPREFIX WINEDEBUG
mkdir -p "$WINEPREFIX"

t0=$(date +%s)
mkdir -p $WIN
if ! $MAKE -s -j2 win >"$WIN/make.log" 2>&1; then bad "make win:"; tail -20 "$WIN/make.log"; summary; fi
if grep -q 'warning:' "$WIN/make.log"; then bad "make win warns:"; grep -A3 'warning:' "$WIN/make.log" | head -20
else ok "make win builds without warnings"; fi
for f in libember.a ember.dll libember.dll.a ember.exe; do
    [ -s $WIN/$f ] && ok "$WIN/$f built" || bad "$WIN/$f missing"
done
[ -x "$BUILD/ember" ] || $MAKE -s "$BUILD/ember" >/dev/null 2>&1

out=$WIN/test-out
rm -rf "$out"; mkdir -p "$out"
t1=$(date +%s)
wine cmd /c exit >/dev/null 2>&1   # make the prefix once, before the parallel runs
t2=$(date +%s)

# The C tests, two at a time (longest first).
for t in test_tokenizer test_kernels test_conversation test_threads test_iq4_model test_hostile_model \
         test_grammar test_gguf test_api; do
    [ -f tests/$t.c ] && echo $t
done > "$out/list"
for t in $WIN/tests/test_*.exe; do
    n=$(basename "$t" .exe); grep -qx "$n" "$out/list" || echo "$n" >> "$out/list"
done
xargs -P 2 -I{} sh -c "wine $WIN/tests/{}.exe >$out/{}.log 2>&1; echo \$? >$out/{}.rc" < "$out/list"
while read -r n; do
    rc=$(cat "$out/$n.rc" 2>/dev/null)
    last=$(tr -d '\r' < "$out/$n.log" | grep -E "^$n: [0-9]+ passed" | tail -n 1)
    if [ "$rc" = 0 ] && [ -n "$last" ]; then ok "$n.exe under wine: ${last#*: }"
    else bad "$n.exe under wine (exit $rc):"; tr -d '\r' < "$out/$n.log" | grep -E 'FAIL|passed' | head -20; fi
    tr -d '\r' < "$out/$n.log" | grep '^SKIP:' | sed "s/^SKIP: /SKIP: (wine $n) /"
    skipped=$((skipped + $(tr -d '\r' < "$out/$n.log" | grep -c '^SKIP:')))
done < "$out/list"

t3=$(date +%s)

# The CLI: the same bytes on stdout as the Linux build.
model=models/ember-demo.gguf
same() {  # same NAME ARGS...: ember (Linux) and ember.exe (wine) print the same
    name=$1; shift
    "$BUILD/ember" "$@" >"$out/$name.linux" 2>"$out/$name.linux.err"
    wine $WIN/ember.exe "$@" >"$out/$name.win" 2>"$out/$name.win.err"
    if [ -s "$out/$name.linux" ] && cmp -s "$out/$name.linux" "$out/$name.win"; then
        ok "ember.exe $name: $(wc -c < "$out/$name.win") bytes, the same as Linux"
    else
        bad "ember.exe $name differs from Linux (or is empty): $*"
        tail -n 3 "$out/$name.win.err"; cmp "$out/$name.linux" "$out/$name.win" | head -3
    fi
}
same greedy -m $model -p "The meaning of life is" -n 32 --temp 0
same sampled -m $model -p "Once upon a time" -n 48 --temp 0.8 --seed 42
same mapped -m $model -p "Once upon a time" -n 48 --temp 0.8 --top-k 20 --seed 7 --mmap
# (from a file: a UTF-8 argument would reach main() in Windows' ANSI code page)
printf 'Hello, world! \303\234n\303\257c\303\266d\303\251\r\n\tend\n' > "$out/prompt.txt"
same tokenize tokenize -m $model -f "$out/prompt.txt"

# chat reads stdin as text: Windows line ends (\r\n) give what \n gives on Linux
printf 'hello there\nand again\n' | "$BUILD/ember" chat -m $model --template chatml -n 8 --temp 0 >"$out/chat.linux" 2>/dev/null
printf 'hello there\r\nand again\r\n' | wine $WIN/ember.exe chat -m $model --template chatml -n 8 --temp 0 >"$out/chat.win" 2>/dev/null
if [ -s "$out/chat.linux" ] && cmp -s "$out/chat.linux" "$out/chat.win"; then
    ok "ember.exe chat on CRLF input lines: the same bytes as Linux"
else bad "ember.exe chat differs from Linux (or is empty)"; fi

# A program linked against ember.dll (import library) prints what the static one does.
wine $WIN/examples/simple.exe $model "Once upon a time" >"$out/simple.static" 2>/dev/null
wine $WIN/simple-dll.exe $model "Once upon a time" >"$out/simple.dll" 2>"$out/simple.dll.err"
if [ -s "$out/simple.static" ] && cmp -s "$out/simple.static" "$out/simple.dll"; then
    ok "simple.c linked against ember.dll prints what the static build prints"
else
    bad "simple.c against ember.dll:"; tail -n 3 "$out/simple.dll.err"
fi
# The drop-in pair (make single) compiles for Windows without warnings and
# gives the same text.
single=$WIN/single
sh tools/amalgamate.sh "$single" >/dev/null
if x86_64-w64-mingw32-gcc -std=c11 -O2 -Wall -Wextra -Werror -c "$single/ember.c" -o "$single/ember.o" 2>"$out/single.err" &&
   x86_64-w64-mingw32-gcc -std=c11 -O2 -Wall -Wextra -I"$single" -static examples/simple.c "$single/ember.o" \
       -o "$single/simple.exe" 2>>"$out/single.err"; then
    wine "$single/simple.exe" $model "Once upon a time" >"$out/simple.single" 2>/dev/null
    if [ -s "$out/simple.static" ] && cmp -s "$out/simple.static" "$out/simple.single"; then
        ok "single-file ember.c builds for Windows with -Werror; simple.c on it prints what the library build prints"
    else bad "simple.c on the single file differs"; fi
else
    bad "single-file ember.c does not build for Windows:"; head -20 "$out/single.err"
fi
echo "times: make win $((t1 - t0)) s, wine prefix $((t2 - t1)) s, C tests $((t3 - t2)) s, CLI, DLL, single file $(($(date +%s) - t3)) s"
summary
