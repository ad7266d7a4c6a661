#!/bin/sh
# test_cli.sh - the ember command line: errors, tokenize / info output,
# generation output, heap allocations independent of -n, valgrind memcheck,
# and test_threads built with ThreadSanitizer.  Last line: "N passed, M failed".
#   BUILD=dir (default build)   EMBER_SKIP_TSAN=1 skips the TSan step
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
EMBER=$BUILD/ember
T=$BUILD/cli-test
mkdir -p "$T"
passed=0
failed=0

ok()   { passed=$((passed + 1)); }
fail() { failed=$((failed + 1)); echo "FAIL: $*"; }
check() {  # check DESCRIPTION COMMAND...
    desc=$1; shift
    if "$@"; then ok; else fail "$desc"; fi
}

if [ ! -x "$EMBER" ]; then
    echo "FAIL: $EMBER is missing (run make)"
    echo "0 passed, 1 failed"
    exit 1
fi

# Use a private copy: colleagues may rebuild $BUILD/ember while this runs.
cp "$EMBER" "$T/ember" && EMBER=$T/ember

# A small random model (made once).
MODEL=$BUILD/cli/tiny.gguf
if [ ! -f "$MODEL" ]; then
    mkdir -p "$BUILD/cli"
    "$PYTHON" tools/convert_weights.py random:dim=64,hidden=172,layers=2,heads=8,kv_heads=4,vocab=512,ctx=256,seed=1 \
        -o "$MODEL" --type q8_0 >"$T/convert.log" 2>&1 || { cat "$T/convert.log"; fail "convert_weights.py random model"; }
fi

# ---- errors: a one-line message on stderr, nothing on stdout, exit != 0 ----
expect_error() {  # expect_error DESCRIPTION ARGS...
    desc=$1; shift
    "$EMBER" "$@" >"$T/out" 2>"$T/err"
    rc=$?
    lines=$(wc -l <"$T/err")
    if [ $rc -ne 0 ] && [ "$lines" -eq 1 ] && [ ! -s "$T/out" ] && grep -q '^ember: ' "$T/err"; then
        ok
    else
        fail "$desc: exit $rc, $lines stderr lines: $(head -c 300 "$T/err")"
    fi
}
head -c 1000 /dev/urandom >"$T/garbage.gguf"
printf 'GGUF\003\000\000\000' >"$T/short.gguf"
head -c 100000 "$MODEL" >"$T/truncated.gguf"
: >"$T/empty.gguf"
expect_error "unknown flag" --bogus
expect_error "unknown flag after a model" -m "$MODEL" --frobnicate 3
expect_error "flag without value" -m "$MODEL" -n
expect_error "bad number" -m "$MODEL" -n abc
expect_error "bad float" -m "$MODEL" --temp hot
expect_error "number out of range" -m "$MODEL" -n 99999999999
expect_error "negative threads" -m "$MODEL" -t -2
expect_error "bad seed" -m "$MODEL" -s x1
expect_error "no model" -p hello
expect_error "missing model" -m "$T/does-not-exist.gguf" -p hello
expect_error "model is a directory" -m "$T" -p hello
expect_error "garbage model" -m "$T/garbage.gguf" -p hello
expect_error "8-byte model" -m "$T/short.gguf" -p hello
expect_error "truncated model" -m "$T/truncated.gguf" -p hello
expect_error "empty model" -m "$T/empty.gguf" -p hello
expect_error "garbage model (info)" info -m "$T/garbage.gguf"
expect_error "garbage model (tokenize)" tokenize -m "$T/garbage.gguf" -p hi
expect_error "missing text file" tokenize -m "$MODEL" -f "$T/nope.txt"
expect_error "context larger than the model's" -m "$MODEL" -p hi -c 100000
expect_error "perplexity on too little text" perplexity -m "$MODEL" -p "hello world" -c 64
"$EMBER" -m "$T/does-not-exist.gguf" -p hello 2>"$T/err" >/dev/null
check "missing model: message names the file" grep -q "does-not-exist.gguf" "$T/err"
"$EMBER" --help >"$T/out" 2>&1
check "--help exits 0 with usage" grep -q "^usage: ember" "$T/out"

# ---- flag checks: usage errors name the flag and value, exit 2 --------------
expect_usage() {  # expect_usage 'EXACT MESSAGE' ARGS...: one stderr line "ember: MESSAGE", exit 2, no stdout
    want="ember: $1"; shift
    "$EMBER" "$@" >"$T/out" 2>"$T/err" </dev/null
    rc=$?
    if [ $rc -eq 2 ] && [ "$(cat "$T/err")" = "$want" ] && [ ! -s "$T/out" ]; then ok
    else fail "ember $*: want exit 2 and '$want', got exit $rc and '$(head -c 300 "$T/err")'"; fi
}
expect_usage "-n -5: must be >= -1 (-1 = until the context is full)" -m "$MODEL" -n -5
expect_usage "--temp -1: must be >= 0 (0 = greedy)" -m "$MODEL" --temp -1
expect_usage "--top-p 0: must be > 0 and <= 1 (1 = off)" -m "$MODEL" --top-p 0
expect_usage "--min-p 1: must be >= 0 and < 1 (0 = off)" -m "$MODEL" --min-p 1
expect_usage "--repeat-penalty 0: must be > 0 (1 = off)" -m "$MODEL" --repeat-penalty 0
expect_usage "-t 5000: must be between 0 and 1024 (0 = all cores)" -m "$MODEL" -t 5000
expect_usage "--contexts 65: must be between 1 and 64" bench -m "$MODEL" --contexts 65
expect_usage "-n abc: not an integer" -m "$MODEL" -n abc
expect_usage "-n 12x: not an integer" -m "$MODEL" -n 12x
expect_usage "-n 99999999999: too large (at most 2147483647)" -m "$MODEL" -n 99999999999
expect_usage "--temp hot: not a number" -m "$MODEL" --temp hot
expect_usage "--temp inf: not a finite number" -m "$MODEL" --temp inf
expect_usage "-s x1: must be an integer between 0 and 18446744073709551615 (-1 = random)" -m "$MODEL" -s x1
expect_usage "-n needs a value: -n N" -m "$MODEL" -n
expect_usage "--model: the file name is empty" --model ""
expect_usage "--stop: the text is empty" -m "$MODEL" --stop ""
expect_usage "--echo takes no value" -m "$MODEL" --echo=yes
expect_usage "--temp 0.5x: not a number" -m "$MODEL" --temp=0.5x
expect_usage "unknown flag '--tmep'; did you mean --temp?" -m "$MODEL" --tmep 0.5
expect_usage "unknown flag '--ctx'; did you mean --ctx-size?" -m "$MODEL" --ctx 64
expect_usage "unknown flag '--frobnicate' (ember --help lists them)" -m "$MODEL" --frobnicate 3
expect_usage "unknown command 'tokenise'; did you mean tokenize?" tokenise -m "$MODEL" -p hi
expect_usage "unknown command 'model.gguf' (the model is given with -m: ember -m model.gguf ...)" model.gguf -p hi
expect_usage "unexpected argument 'world' (a flag takes one value: quote a prompt with spaces, -p \"...\")" -m "$MODEL" -p hello world
expect_usage "--temp does not apply to tokenize (see ember help tokenize)" tokenize -m "$MODEL" -p hi --temp 1
expect_usage "--contexts does not apply to generate (see ember help generate)" -m "$MODEL" --contexts 2
expect_usage "-n is given twice" -m "$MODEL" -n 5 -n 6
expect_usage "-p and -f cannot be used together: both give the text; use one" -m "$MODEL" -p hi -f "$T/bytes.txt"
expect_usage "-p and -f cannot be used together: both give the text; use one" tokenize -m "$MODEL" -f "$T/bytes.txt" -p hi
expect_usage "--grammar and --grammar-file cannot be used together: give only one of --grammar, --grammar-file, --json-schema" \
    -m "$MODEL" --grammar 'root ::= "a"' --grammar-file g.gbnf
expect_usage "--grammar-file and --json-schema cannot be used together: give only one of --grammar, --grammar-file, --json-schema" \
    -m "$MODEL" --json-schema s.json --grammar-file g.gbnf
expect_usage "--mmap and --no-mmap cannot be used together" -m "$MODEL" --mmap --no-mmap
expect_usage "-s and --state-load cannot be used together: the saved state holds the sampler's random state" \
    -m "$MODEL" --state-load st -s 1
expect_usage "--grammar and --state-load cannot be used together: a saved state does not hold the grammar's parse state" \
    -m "$MODEL" --state-load st --grammar 'root ::= "a"'
expect_usage "tokenize needs the text: -p TEXT or -f FILE (-f - reads standard input)" tokenize -m "$MODEL"
expect_usage "perplexity needs the text: -f FILE (or -p TEXT)" perplexity -m "$MODEL"
expect_usage "-p abc: not an integer" bench -m "$MODEL" -p abc
expect_usage "-n 0: must be >= 1" bench -m "$MODEL" -n 0
expect_usage "no model given (-m MODEL)" -p hello
expect_usage "unknown command 'nope' (commands: generate, chat, template, perplexity, tokenize, info, bench, help)" help nope
"$EMBER" -m "$MODEL" -p hi -c 100000 >/dev/null 2>"$T/err"
rc=$?   # before any command substitution, which sets $? in bash (not in dash)
check "-c beyond the model's context: exit 1, named: $(cat "$T/err")" \
    test $rc -eq 1 -a "$(cat "$T/err")" = "ember: -c 100000: must be at most 256, the model's context length (0 = the model's own)"
"$EMBER" >/dev/null 2>"$T/err"
check "no arguments: exit 2 with the usage on stderr" test $? -eq 2 -a "$(head -n 1 "$T/err")" = "usage: ember [COMMAND] -m MODEL [flags]"

# ---- --help, help COMMAND, --version ------------------------------------------
"$EMBER" --help >"$T/help" 2>"$T/err"
check "--help exits 0 and prints to stdout only" test $? -eq 0 -a ! -s "$T/err"
for c in generate chat template perplexity tokenize info bench help; do
    check "--help lists the command $c" grep -q "^  $c " "$T/help"
done
for f in --model --prompt --file --n-predict --ctx-size --batch-size --threads --temp --top-k --top-p --min-p \
         --repeat-penalty --repeat-last-n --seed --echo --no-bos --special --stop --grammar --grammar-file --json-schema \
         --state-save --state-load --template --system --no-think --no-generation-prompt --context-shift --mmap \
         --no-mmap --kv-f32 --repeats --json --contexts --verbose --help --version; do
    check "--help lists $f" grep -Eq "^  (-[a-z], )?$f( |$)" "$T/help"
done
# defaults in the help are the library's (src/sampler.c's ember_sampler_default_params)
for fd in "--temp:temperature = 0.8f" "--top-k:top_k = 40" "--top-p:top_p = 0.95f" "--min-p:min_p = 0.05f" "--repeat-last-n:repeat_last_n = 64"; do
    f=${fd%%:*}
    d=$(grep -o "p\.${fd#*:}" src/sampler.c | sed 's/.* = //; s/f$//')
    check "--help: $f's default is the library's ($d)" sh -c "grep -A1 -- '^  $f ' '$T/help' | tr '\n' ' ' | tr -s ' ' | grep -q '(default: $d)'"
done
check "--help documents the exit statuses" grep -q "2 a usage error" "$T/help"
"$EMBER" help tokenize >"$T/help.tok" 2>/dev/null
check "help tokenize: exit 0" test $? -eq 0
check "help tokenize: its flags, not others" sh -c "grep -q -- '--no-bos' '$T/help.tok' && ! grep -q -- '--temp' '$T/help.tok'"
"$EMBER" tokenize --help >"$T/help.tok2" 2>/dev/null
check "tokenize --help = help tokenize" cmp -s "$T/help.tok" "$T/help.tok2"
"$EMBER" bench -m "$MODEL" -n abc --help >"$T/help.bench" 2>/dev/null
check "--help wins over a bad value and shows the command's (bench) defaults" grep -q -- '-p, --prompt N .*(default: 128)' "$T/help.bench"
"$EMBER" --version >"$T/version" 2>/dev/null
check "--version exits 0" test $? -eq 0
v=$(awk '$1 == "#define" && $2 ~ /^EMBER_VERSION_(MAJOR|MINOR|PATCH)$/ { v = v (v == "" ? "" : ".") $3 } END { print v }' include/ember.h)
check "--version prints the version of ember.h's EMBER_VERSION_MAJOR/MINOR/PATCH ($v) and the kernels: $(tr '\n' ' ' <"$T/version")" \
    sh -c "test \"\$(sed -n 1p '$T/version')\" = 'ember $v' && grep -Eq '^cpu kernels: [a-z0-9]+' '$T/version'"

# ---- -n -1, tokenize from stdin --------------------------------------------------
"$EMBER" -m "$MODEL" -p "hello world" -n -1 -c 24 --temp 0 >/dev/null 2>"$T/n1.err"
check "-n -1 generates until the context is full: $(tail -n 1 "$T/n1.err")" grep -q 'stop: context full' "$T/n1.err"
printf 'hello world' | "$EMBER" tokenize -m "$MODEL" -f - >"$T/tok.stdin" 2>/dev/null
"$EMBER" tokenize -m "$MODEL" -p "hello world" >"$T/tok.p" 2>/dev/null
check "tokenize -f - reads standard input" cmp -s "$T/tok.stdin" "$T/tok.p"

# ---- the CLI's source compiles as C++ too (as the library does) --------------
if command -v g++ >/dev/null 2>&1; then
    g++ -x c++ -std=c++17 -Wall -Wextra -Werror -fsyntax-only -Iinclude -D_DEFAULT_SOURCE examples/ember.c >"$T/cxx.log" 2>&1
    check "examples/ember.c compiles as C++17 without warnings: $(head -n 3 "$T/cxx.log")" test $? -eq 0
fi

# ---- tokenize ---------------------------------------------------------------
"$EMBER" tokenize -m "$MODEL" -p "hello world" >"$T/tok" 2>"$T/err"
check "tokenize exits 0" test $? -eq 0
check "tokenize prints [ids] on one line: $(cat "$T/tok")" grep -Eq '^\[1(, [0-9]+)*\]$' "$T/tok"
check "tokenize prints one line" test "$(wc -l <"$T/tok")" -eq 1
"$EMBER" tokenize -m "$MODEL" -p "hello world" --no-bos >"$T/tok2" 2>/dev/null
check "tokenize --no-bos drops the leading 1" test "[1, $(sed 's/^\[//' "$T/tok2")" = "$(cat "$T/tok")"
"$EMBER" tokenize -m "$MODEL" -p "" >"$T/tok3" 2>/dev/null
check "tokenize empty text = [1]" test "$(cat "$T/tok3")" = "[1]"
printf 'hello\000world \377\376 caf\303\251' >"$T/bytes.txt"
"$EMBER" tokenize -m "$MODEL" -f "$T/bytes.txt" >"$T/tok4" 2>/dev/null
check "tokenize a file with NUL and invalid UTF-8" grep -Eq '^\[1(, [0-9]+)+\]$' "$T/tok4"

# ---- info -------------------------------------------------------------------
"$EMBER" info -m "$MODEL" >"$T/info" 2>"$T/err"
check "info exits 0" test $? -eq 0
check "info: architecture" grep -Eq '^architecture: +llama$' "$T/info"
check "info: layers" grep -Eq '^layers: +2$' "$T/info"
check "info: embedding" grep -Eq '^embedding: +64$' "$T/info"
check "info: heads" grep -Eq '^heads: +8 \(kv 4, head dim 8\)$' "$T/info"
check "info: tokenizer" grep -Eq '^tokenizer: +llama, 512 tokens, bos 1, eos 2$' "$T/info"
check "info: context" grep -Eq '^context: +256' "$T/info"

# ---- generation: stdout carries only the continuation -----------------------
"$EMBER" -m "$MODEL" -p "hello world" -n 12 --temp 0 -t 1 >"$T/gen" 2>"$T/gen.err"
check "generate exits 0" test $? -eq 0
"$EMBER" -m "$MODEL" -p "hello world" -n 12 --temp 0 -t 2 --echo >"$T/gen.echo" 2>/dev/null
printf 'hello world' >"$T/gen.want"
cat "$T/gen" >>"$T/gen.want"
check "--echo output = prompt + the continuation" cmp -s "$T/gen.echo" "$T/gen.want"
check "generation stdout is not empty" test -s "$T/gen"
check "no statistics on stdout" sh -c "! grep -q 'ember:\|tok/s\|prompt' '$T/gen'"
check "statistics on stderr" grep -q 'generated 12 tokens' "$T/gen.err"
"$EMBER" -m "$MODEL" -p "hello world" -n 12 --temp 0.8 -s 42 >"$T/s1" 2>/dev/null
"$EMBER" -m "$MODEL" -p "hello world" -n 12 --temp 0.8 -s 42 -t 2 -b 3 >"$T/s2" 2>/dev/null
check "same seed, same output (threads 1 vs 2, batch 64 vs 3)" cmp -s "$T/s1" "$T/s2"
"$EMBER" -m "$MODEL" -p "hello" -n 1000 -c 16 --temp 0.5 -s 1 >/dev/null 2>"$T/full.err"
check "generation into a full context exits 0" test $? -eq 0
check "context full reported" grep -q 'stop: context full' "$T/full.err"

# ---- chat and template --------------------------------------------------------
# GGUF copies of the demo model with chat templates in their metadata (made
# per run, they are small): a full one with ChatML, vocabulary-only ones with Qwen3's template
# and with a template ember does not know.
CHAT=$BUILD/cli/chat
TPL=tests/data/chat_templates
mkdir -p "$CHAT"
printf '{%% for m in messages %%}{{ m.role }}: {{ m.content }}\n{%% endfor %%}' >"$T/unknown.jinja"
"$PYTHON" tests/chat_gguf.py models/ember-demo.gguf "$CHAT/chatml.gguf" --template "$TPL/chatml.jinja" >/dev/null 2>&1 || fail "chat_gguf chatml"
"$PYTHON" tests/chat_gguf.py models/ember-demo.gguf "$CHAT/qwen3-vocab.gguf" --template "$TPL/qwen3.jinja" --vocab-only >/dev/null 2>&1 || fail "chat_gguf qwen3"
"$PYTHON" tests/chat_gguf.py models/ember-demo.gguf "$CHAT/unknown-vocab.gguf" --template "$T/unknown.jinja" --vocab-only >/dev/null 2>&1 || fail "chat_gguf unknown"
DEMO=models/ember-demo.gguf
cat >"$T/msgs.json" <<'JSON'
[
  {"role": "system", "content": "Be brief."},
  {"role": "user", "content": "Hi! caf\u00e9 \ud83d\ude00 \"quoted\"\n"},
  {"role": "assistant", "content": "<think>\nhm\n</think>\n\nHello."},
  {"role": "user", "content": "Again?"}
]
JSON
# `ember info` on a vocabulary-only GGUF describes its tokenizer; the expected
# lines come from the file's metadata as tools/gguf_reader.py reads it
"$EMBER" info -m "$CHAT/qwen3-vocab.gguf" >"$T/vinfo" 2>"$T/err"
check "info on a vocab-only GGUF exits 0: $(head -c 200 "$T/err")" test $? -eq 0
"$PYTHON" -c '
import sys
sys.path.insert(0, "tools")
import gguf_reader
r = gguf_reader.GGUFReader(sys.argv[1])
md = r.metadata
assert not r.tensors, "the file has tensors"
toks = md["tokenizer.ggml.tokens"]
bos, eos = md["tokenizer.ggml.bos_token_id"], md["tokenizer.ggml.eos_token_id"]
print("weights:        none: a vocabulary-only file (it tokenizes and renders chats; generation needs a model\x27s weights)")
print("tokenizer:      %s (byte-level BPE), pre-tokenizer %s" % (md["tokenizer.ggml.model"], md["tokenizer.ggml.pre"]))
print("bos:            %d \x27%s\x27, %s" % (bos, toks[bos], "added before a text" if md["tokenizer.ggml.add_bos_token"] else "not added"))
print("eos:            %d \x27%s\x27" % (eos, toks[eos]))
print("chat template:  qwen3 (recognised in tokenizer.chat_template)")
print("vocabulary:     %d tokens" % len(toks))
' "$CHAT/qwen3-vocab.gguf" >"$T/vinfo.want" 2>"$T/err" || fail "reading $CHAT/qwen3-vocab.gguf in Python: $(tail -n 1 "$T/err")"
while IFS= read -r line; do
    check "info on a vocab-only GGUF says '$line'" grep -qF -- "$line" "$T/vinfo"
done <"$T/vinfo.want"
check "info on a vocab-only GGUF: no hyperparameter lines" sh -c "! grep -q '^layers:' '$T/vinfo'"
"$EMBER" -m "$CHAT/qwen3-vocab.gguf" -p hi >/dev/null 2>"$T/err"
rc=$?
check "generate on a vocab-only GGUF: exit 1, says it has no weights: $(cat "$T/err")" test $rc -eq 1 -a \
    "$(sed "s/'[^']*'/F/g" "$T/err")" = "ember: cannot load model F: it holds a tokenizer and no weights (tokenize, template and info work on it; generate needs the weights): missing tensor F"
"$EMBER" info -m "$CHAT/chatml.gguf" >"$T/cinfo" 2>/dev/null
check "info names a model's chat template" grep -q '^chat template:  chatml ' "$T/cinfo"
# `ember template` on a vocabulary-only file prints what Jinja renders from the file's own template
for flags in "" "--no-think" "--no-generation-prompt" "--no-think --no-generation-prompt"; do
    # shellcheck disable=SC2086
    "$EMBER" template -m "$CHAT/qwen3-vocab.gguf" -f "$T/msgs.json" $flags >"$T/tpl.out" 2>"$T/err"
    check "template $flags exits 0: $(head -c 200 "$T/err")" test $? -eq 0
    "$PYTHON" -c '
import json, sys, jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
flags = sys.argv[3].split()
out = env.from_string(open(sys.argv[1], encoding="utf-8").read()).render(
    messages=json.load(open(sys.argv[2], encoding="utf-8")), bos_token="", eos_token="<|im_end|>", tools=None,
    add_generation_prompt="--no-generation-prompt" not in flags, enable_thinking="--no-think" not in flags)
sys.stdout.buffer.write(out.encode("utf-8"))' "$TPL/qwen3.jinja" "$T/msgs.json" "$flags" >"$T/tpl.want"
    check "template $flags on a vocab-only GGUF = Jinja's rendering of its template" cmp -s "$T/tpl.out" "$T/tpl.want"
done
"$EMBER" template -m "$CHAT/qwen3-vocab.gguf" -f "$T/msgs.json" --template llama3 >"$T/tpl.out" 2>/dev/null
check "template --template llama3 overrides the file's template" grep -q '^<|endoftext|><|start_header_id|>system<|end_header_id|>$' "$T/tpl.out"
expect_error "template without -f" template -m "$CHAT/qwen3-vocab.gguf"
expect_error "template: missing messages file" template -m "$CHAT/qwen3-vocab.gguf" -f "$T/nope.json"
expect_error "template: a model without a chat template" template -m "$DEMO" -f "$T/msgs.json"
expect_error "template: a template ember does not know" template -m "$CHAT/unknown-vocab.gguf" -f "$T/msgs.json"
expect_error "template: an unknown --template name" template -m "$CHAT/qwen3-vocab.gguf" -f "$T/msgs.json" --template nonesuch
"$EMBER" template -m "$CHAT/unknown-vocab.gguf" -f "$T/msgs.json" 2>"$T/err" >/dev/null
check "unknown template: the message lists the built-in names" grep -q 'chatml.*qwen3.*zephyr' "$T/err"
bad_json() {  # bad_json DESCRIPTION JSON EXPECTED-TEXT
    printf '%s' "$2" >"$T/bad.json"
    expect_error "template: $1" template -m "$CHAT/qwen3-vocab.gguf" -f "$T/bad.json"
    "$EMBER" template -m "$CHAT/qwen3-vocab.gguf" -f "$T/bad.json" 2>"$T/err" >/dev/null
    check "template: $1: says '$3' with a line and column: $(cat "$T/err")" grep -q "line [0-9]*, column [0-9]*: .*$3" "$T/err"
}
bad_json "not a list" '{"role": "user", "content": "x"}' "expected '\['"
bad_json "unclosed list" '[{"role": "user", "content": "x"}' "expected ',' or '\]'"
bad_json "trailing comma" '[{"role": "user", "content": "x"},]' "expected '{'"
bad_json "missing content" '[{"role": "user"}]' "needs both"
bad_json "unknown key" '[{"role": "user", "content": "x", "name": "y"}]' "unknown key"
bad_json "number as content" '[{"role": "user", "content": 3}]' "string was expected"
bad_json "bad escape" '[{"role": "user", "content": "\q"}]' "unknown escape"
bad_json "lone surrogate" '[{"role": "user", "content": "\ud800x"}]' "lone surrogate"
bad_json "unclosed string" '[{"role": "user", "content": "x' "not closed"
bad_json "text after the list" '[] x' "after the closing"
printf '[]' >"$T/empty.json"
"$EMBER" template -m "$CHAT/qwen3-vocab.gguf" -f "$T/empty.json" --template chatml >"$T/tpl.out" 2>/dev/null
check "template: an empty conversation is just the generation prompt" test "$(cat "$T/tpl.out")" = "<|im_start|>assistant"

# `ember chat`: stdin lines are user turns; the first reply is what generation from the rendered prompt gives
printf 'Hello there\nTell me more\n' >"$T/chat.in"
"$EMBER" chat -m "$CHAT/chatml.gguf" -n 8 --temp 0 -t 1 --system "Be brief." <"$T/chat.in" >"$T/chat.out" 2>"$T/chat.err"
check "chat exits 0: $(tail -n 1 "$T/chat.err")" test $? -eq 0
check "chat prints one line per reply" test "$(wc -l <"$T/chat.out")" -ge 2
printf '[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]' >"$T/turn1.json"
"$EMBER" template -m "$CHAT/chatml.gguf" -f "$T/turn1.json" >"$T/turn1.txt" 2>/dev/null
"$EMBER" -m "$CHAT/chatml.gguf" -f "$T/turn1.txt" --special -n 8 --temp 0 -t 1 >"$T/turn1.gen" 2>/dev/null
printf '\n' >>"$T/turn1.gen"
check "chat's first reply = generation from the rendered prompt" \
    test "$(head -c "$(wc -c <"$T/turn1.gen")" "$T/chat.out" | od -An -c)" = "$(od -An -c <"$T/turn1.gen")"
printf 'hi\n\nnot read\n' | "$EMBER" chat -m "$CHAT/chatml.gguf" -n 4 --temp 0 -t 1 >"$T/chat.out" 2>/dev/null
check "an empty line ends the chat" test "$(wc -l <"$T/chat.out")" -eq 1
expect_error "chat: a model without a chat template" chat -m "$DEMO" -n 4 </dev/null
printf 'hi\n' | "$EMBER" chat -m "$DEMO" --template zephyr -n 4 --temp 0 >/dev/null 2>&1
check "chat --template on a model without one" test $? -eq 0
printf 'Hello there\nTell me more\nAnd more\nAgain more\nmore\nmore\n' >"$T/long.in"
"$EMBER" chat -m "$CHAT/chatml.gguf" -n 40 --temp 0 -t 1 -c 128 <"$T/long.in" >/dev/null 2>"$T/full.err"
check "chat into a full context without --context-shift exits non-zero" test $? -ne 0
check "... saying so and naming --context-shift: $(tail -n 1 "$T/full.err")" grep -q '^ember: .*--context-shift' "$T/full.err"
"$EMBER" chat -m "$CHAT/chatml.gguf" -n 40 --temp 0 -t 1 -c 128 --context-shift <"$T/long.in" >"$T/shift.out" 2>"$T/shift.err"
check "chat --context-shift exits 0: $(tail -n 1 "$T/shift.err")" test $? -eq 0
check "chat --context-shift drops the oldest turns and answers every line" \
    sh -c "grep -q 'dropped the oldest turn' '$T/shift.err' && test \$(wc -l <'$T/shift.out') -ge 6"
printf 'Tell me about the weather and everything else, in great detail please, thank you\n' >"$T/huge.in"
"$EMBER" chat -m "$CHAT/chatml.gguf" -n 8 --temp 0 -t 1 -c 16 --context-shift <"$T/huge.in" >/dev/null 2>"$T/huge.err"
check "a message that cannot fit even alone exits non-zero" test $? -ne 0
check "... saying so: $(tail -n 1 "$T/huge.err")" grep -q '^ember: .*does not fit' "$T/huge.err"

# ---- saved state, stop strings, -c 0 ----------------------------------------
"$EMBER" -m "$MODEL" -p "hello world" -n 20 --temp 0 >"$T/whole" 2>/dev/null
"$EMBER" -m "$MODEL" -p "hello world" -n 8 --temp 0 --state-save "$T/st" >"$T/part1" 2>/dev/null
check "--state-save exits 0 and writes the state" test -s "$T/st"
"$EMBER" -m "$MODEL" -n 12 --temp 0 --state-load "$T/st" >"$T/part2" 2>/dev/null
cat "$T/part1" "$T/part2" >"$T/parts"
check "a run split by --state-save/--state-load prints the uninterrupted text" cmp -s "$T/whole" "$T/parts"
"$EMBER" -m "$MODEL" -p "hello world" -n 12 --temp 0.9 -s 3 --repeat-penalty 1.2 >"$T/swhole" 2>/dev/null
"$EMBER" -m "$MODEL" -p "hello world" -n 5 --temp 0.9 -s 3 --repeat-penalty 1.2 --state-save "$T/st2" >"$T/sp1" 2>/dev/null
"$EMBER" -m "$MODEL" -n 7 --temp 0.9 --repeat-penalty 1.2 --state-load "$T/st2" >"$T/sp2" 2>/dev/null
cat "$T/sp1" "$T/sp2" >"$T/sparts"
check "sampled: the saved sampler (random state, history) continues the same" cmp -s "$T/swhole" "$T/sparts"
head -c 20 "$T/st" >"$T/st.cut"
"$EMBER" -m "$MODEL" -n 4 --state-load "$T/st.cut" >"$T/cut.out" 2>"$T/cut.err"
check "a truncated state: exit != 0, a message, nothing on stdout"     sh -c "test \$? -ne 0 || true; grep -q 'state' '$T/cut.err' && test ! -s '$T/cut.out'"
# a stop string: three ASCII letters from the middle of the greedy text
stop=$("$PYTHON" -c "
import re, sys
w = open(sys.argv[1], 'rb').read()
m = re.search(rb'[A-Za-z]{3}', w[len(w) // 3:])
print(m.group(0).decode() if m else '')
" "$T/whole")
if [ -n "$stop" ]; then
    "$EMBER" -m "$MODEL" -p "hello world" -n 20 --temp 0 --stop "$stop" >"$T/stopped" 2>"$T/stopped.err"
    "$PYTHON" -c "
import sys
whole, got, stop = open(sys.argv[1], 'rb').read(), open(sys.argv[2], 'rb').read(), sys.argv[3].encode()
assert got == whole[:whole.index(stop)], (whole, got, stop)
" "$T/whole" "$T/stopped" "$stop"
    check "--stop: the text up to the stop string" test $? -eq 0
    check "--stop: reported" grep -q 'stop: stop string' "$T/stopped.err"
else
    fail "no ASCII run in the greedy text to use as a stop string"
fi
"$EMBER" -m "$MODEL" -p "hello" -n 2 -c 0 --temp 0 >/dev/null 2>"$T/c0.err"
check "-c 0 (the model's own context) runs" test $? -eq 0

# ---- examples/npc.c: three characters, one pass per step, saved and restored --
( cd "$T" && "$OLDPWD/$BUILD/examples/npc" "$OLDPWD/models/ember-demo.gguf" >npc.out 2>npc.err )
check "examples/npc runs" test $? -eq 0
check "examples/npc: three characters spoke, passes counted, one restored" sh -c \
    "grep -c '^Guard   :\|^Merchant:\|^Child   :' '$T/npc.out' | grep -qx 3 && grep -q 'passes in' '$T/npc.out' && grep -q '^restored Merchant at position' '$T/npc.out'"
check "examples/npc: the guard's decision is one of the grammar's three" grep -qx 'the guard decides to: \(attack\|flee\|talk\)' "$T/npc.out"
check "examples/npc removed its state files" sh -c "! ls '$T'/npc-*.state >/dev/null 2>&1"

# ---- bench: the JSON line has the fields tools/bench.py and the issue name --
# (a format check, never a timing check; one repeat of a tiny prompt)
"$EMBER" bench -m "$MODEL" -t 1 -p 8 -n 8 -r 1 --json >"$T/bench" 2>"$T/bench.err"
check "bench exits 0" test $? -eq 0
tail -n 1 "$T/bench" >"$T/bench.json"
check "bench --json: last line is JSON with pp_tok_s, tg_tok_s, weight_bytes, tg_gbps, mem_gbps, n_packed > 0" \
    "$PYTHON" -c "
import json, sys
j = json.load(open(sys.argv[1]))
need = ['pp_tok_s', 'tg_tok_s', 'weight_bytes', 'tg_gbps', 'mem_gbps', 'n_packed']
assert all(k in j for k in need), j
assert j['pp_tok_s'] > 0 and j['tg_tok_s'] > 0 and j['weight_bytes'] > 0 and j['load_mode'] == 'read', j
# q8_0 rows of 64, 32, 172: packed where the kernels want it (avx2/avx512/amx), never elsewhere
assert (j['n_packed'] > 0) == (j['kernels'] in ('avx2', 'avx512', 'amx')), j
" "$T/bench.json"
check "bench --json: peak_rss_bytes holds the weights and not the probe's 1 GiB buffer" "$PYTHON" -c "
import json, sys
j = json.load(open(sys.argv[1]))
assert j['weight_bytes'] <= j['peak_rss_bytes'] < j['weight_bytes'] + (256 << 20), j
" "$T/bench.json"
"$EMBER" bench -m "$MODEL" -t 1 -p 8 -n 8 -r 1 --contexts 3 --json >"$T/bench3" 2>/dev/null
check "bench --contexts 3 exits 0" test $? -eq 0
check "bench --contexts 3: tg_tok_s_total = 3 x tg_tok_s" "$PYTHON" -c "
import json, sys
j = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
assert j['contexts'] == 3 and abs(j['tg_tok_s_total'] - 3 * j['tg_tok_s']) < 1e-2 * j['tg_tok_s_total'], j
" "$T/bench3"

# ---- valgrind: allocations independent of -n; memcheck clean ---------------
if command -v valgrind >/dev/null 2>&1; then
    allocs() {  # allocs N -> prints the total heap allocation count
        valgrind --tool=memcheck "$EMBER" -m "$MODEL" -p "hello world" -n "$1" --temp 0.7 -s 3 -t 2 -c 128 \
            >/dev/null 2>"$T/vg.$1"
        sed -n 's/.*total heap usage: \([0-9,]*\) allocs.*/\1/p' "$T/vg.$1" | tr -d ,
    }
    a5=$(allocs 5)
    a50=$(allocs 50)
    check "heap allocations found in valgrind's summary ($a5, $a50)" test -n "$a5" -a -n "$a50"
    check "heap allocations do not depend on -n: $a5 for -n 5, $a50 for -n 50" test "$a5" = "$a50"
    vg() {  # vg DESCRIPTION ARGS...
        desc=$1; shift
        valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=all --track-origins=yes \
            "$EMBER" "$@" >/dev/null 2>"$T/vg.log"
        rc=$?
        if [ $rc -ne 99 ] && grep -q 'ERROR SUMMARY: 0 errors' "$T/vg.log"; then ok
        else fail "valgrind $desc: exit $rc"; grep -E 'ERROR SUMMARY|Invalid|uninitialised|lost' "$T/vg.log" | head -10; fi
    }
    vg "generate" -m "$MODEL" -p "hello world" -n 16 -t 2 -s 1
    vg "generate (mmap, f32 kv)" -m "$MODEL" -p "caf\303\251 \342\202\254" -n 8 -t 1 --mmap --kv-f32
    vg "tokenize" tokenize -m "$MODEL" -f "$T/bytes.txt"
    vg "info" info -m "$MODEL"
    vg "template" template -m "$CHAT/qwen3-vocab.gguf" -f "$T/msgs.json" --no-think
    vg "template (bad JSON)" template -m "$CHAT/qwen3-vocab.gguf" -f "$T/bad.json"
    vg "chat" chat -m "$CHAT/chatml.gguf" -n 6 -t 2 -s 1 --system "Be brief." <"$T/chat.in"
    vg "chat --context-shift" chat -m "$CHAT/chatml.gguf" -n 40 -t 1 -c 128 --context-shift <"$T/long.in"
    vg "garbage model" -m "$T/garbage.gguf" -p x
    vg "truncated model" -m "$T/truncated.gguf" -p x
else
    fail "valgrind is not installed"
fi

# ---- ThreadSanitizer: test_threads ----------------------------------------
if [ "${EMBER_SKIP_TSAN:-0}" = 1 ]; then
    echo "note: EMBER_SKIP_TSAN=1, ThreadSanitizer step skipped"
elif command -v clang >/dev/null 2>&1; then
    mkdir -p "$BUILD/tsan"
    tsan_bin=$BUILD/tsan/test_threads
    stale=1
    if [ -x "$tsan_bin" ] && [ -z "$(find src include tests/test_threads.c tests/test_hostile_model.c tests/gguf_build.h \
            tests/test.h -newer "$tsan_bin" 2>/dev/null)" ]; then stale=0; fi
    if [ $stale = 1 ]; then
        nice clang -fsanitize=thread -g -O1 -std=c11 -D_DEFAULT_SOURCE -Iinclude -Isrc -Itests \
            -o "$tsan_bin" tests/test_threads.c src/*.c -lm -lpthread >"$T/tsan-build.log" 2>&1 \
            || { cat "$T/tsan-build.log" | tail -20; fail "clang -fsanitize=thread build of test_threads"; }
    fi
    if [ -x "$tsan_bin" ]; then
        EMBER_THREADS_ROUNDS=1 EMBER_POOL_SECONDS=1 TSAN_OPTIONS="halt_on_error=0 exitcode=66" \
            "$tsan_bin" >"$T/tsan.log" 2>&1
        rc=$?
        if [ $rc -eq 0 ]; then ok
        else
            fail "test_threads under ThreadSanitizer: exit $rc"
            grep -E 'WARNING: ThreadSanitizer|SUMMARY|^FAIL' "$T/tsan.log" | sort | uniq -c | head -10
        fi
    fi
else
    fail "clang is missing: cannot build test_threads with -fsanitize=thread"
fi

echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
