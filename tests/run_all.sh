#!/bin/sh
# Runs the test programs and prints one line per program, then the total as
# "N passed, M failed, K skipped" (passed/failed count test programs; skipped
# counts the checks that did not run for want of ../shared, each named above
# the total: a fresh clone has no ../shared and still passes).
#   sh tests/run_all.sh        all suites
#   sh tests/run_all.sh c      only the C test programs (used by `make sanitize`)
#   sh tests/run_all.sh check  the C test programs and the quick checks below
#                              (`make check`: about 40 s of CPU time)
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
export BUILD PYTHON
mode=${1:-all}
passed=0
failed=0
skipped=0
failed_names=""
logdir=$BUILD/test-logs
mkdir -p "$logdir"

run() {  # run NAME COMMAND...
    name=$1; shift
    start=$(date +%s)
    if "$@" >"$logdir/$name.log" 2>&1; then
        passed=$((passed + 1)); status=ok
    else
        failed=$((failed + 1)); status=FAIL; failed_names="$failed_names $name"
    fi
    end=$(date +%s)
    printf '%-28s %-4s %3ss  %s\n' "$name" "$status" $((end - start)) "$(tail -n 1 "$logdir/$name.log")"
    if [ $status = FAIL ]; then tail -n 25 "$logdir/$name.log" | sed 's/^/    | /'; fi
    skipped=$((skipped + $(grep -c '^SKIP:' "$logdir/$name.log")))
}

for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    run "$(basename "$t")" "$t"
done

# The quick checks of `make check`: each at most ~15 s of CPU time.
QUICK="tests/test_chat.py tests/test_grammar_cli.py tests/test_pretokenizers.py tests/test_readme.sh"

if [ "$mode" = check ]; then
    for t in $QUICK; do
        case $t in
        *.py) run "$(basename "$t" .py).py" "$PYTHON" "$t" ;;
        *.sh) run "$(basename "$t" .sh).sh" sh "$t" ;;
        esac
    done
fi

if [ "$mode" = all ]; then
    for t in tests/test_*.py; do
        [ -f "$t" ] || continue
        run "$(basename "$t" .py).py" "$PYTHON" "$t"
    done
    for t in tests/test_*.sh; do
        [ -f "$t" ] || continue
        run "$(basename "$t" .sh).sh" sh "$t"
    done
fi

[ -n "$failed_names" ] && echo "failed:$failed_names"
if [ $skipped -gt 0 ]; then
    echo "skipped (no ../shared):"
    cat "$logdir"/*.log | grep '^SKIP:' | sed 's/^SKIP: /  /'
fi
echo "$passed passed, $failed failed, $skipped skipped"
[ $failed -eq 0 ]
