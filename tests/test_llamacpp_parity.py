"""Numbers llama.cpp itself printed for the same files, recorded by hand
(llama.cpp built from its own sources outside this repository, ggml 0.18.1;
llama-perplexity -c 128 -b 128 -ctk f32 -ctv f32 -fa off).  ember must give
the same answers.  The files of tests/data/llamacpp were written by llama.cpp's
own tooling (its gguf-py writer, llama-quantize), one per model family; that
directory's README says how.  Last line: "N passed, M failed"."""
import json
import math
import os
import subprocess
import sys

from testlib import BUILD, EMBER, ROOT, SHARED, check, missing_shared, summary


def ember(*args):
    r = subprocess.run([EMBER] + list(args), capture_output=True, text=True)
    if r.returncode:
        print(r.stderr)
    return r.stdout


def ppl_of(out):
    line = [l for l in out.splitlines() if l.startswith("Final estimate")]
    return float(line[-1].split()[4]) if line else float("nan")


stories = os.path.join(SHARED, "models", "stories260K")
if not os.path.isdir(stories):
    missing_shared(stories)
else:
    out_dir = os.path.join(ROOT, BUILD, "test-models")
    os.makedirs(out_dir, exist_ok=True)
    gguf = os.path.join(out_dir, "stories260K-f32.gguf")
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "convert_weights.py"),
                    os.path.join(stories, "stories260K.bin"), "--tokenizer", os.path.join(stories, "tok512.bin"),
                    "-o", gguf, "--type", "f32", "-q"], check=True)
    # The text: the ASCII lines of the Llama 2 tokenizer fixtures, six times.
    lines = [json.loads(l)["text"] for l in open(os.path.join(SHARED, "tokenizers", "llama2", "fixtures.jsonl"),
                                                  encoding="utf-8")]
    text = "\n".join([t for t in lines if t.isascii()] * 6) + "\n"
    text_path = os.path.join(out_dir, "parity.txt")
    open(text_path, "w", encoding="utf-8").write(text)
    got = ppl_of(ember("perplexity", "-m", gguf, "-f", text_path, "-c", "128", "--kv-f32"))
    want = 796.8738   # llama.cpp: Final estimate: PPL = 796.8738 +/- 17.94342
    print("stories260K f32 perplexity: ember %.4f, llama.cpp %.4f" % (got, want))
    check(abs(got - want) <= 1e-4 * want, "perplexity %.4f differs from llama.cpp's %.4f" % (got, want))
    cont = ember("-m", gguf, "-p", "Zoo", "-n", "12", "--temp", "0")
    print("'Zoo' ->", repr(cont))
    check(cont.startswith(" was a little girl named Lily."), "greedy continuation of 'Zoo': %r" % cont)

demo = os.path.join(ROOT, "models", "ember-demo.gguf")
heldout = os.path.join(ROOT, "models", "heldout.txt")
got = ppl_of(ember("perplexity", "-m", demo, "-f", heldout, "-c", "128", "--kv-f32"))
want = 102.1439   # llama.cpp on models/ember-demo.gguf, models/heldout.txt
print("demo model perplexity: ember %.4f, llama.cpp %.4f" % (got, want))
check(abs(got - want) <= 2e-4 * want, "demo perplexity %.4f differs from llama.cpp's %.4f" % (got, want))

# ---- Files llama.cpp's tooling wrote, one or more per family (tests/data/llamacpp) ----
# (file, context, tokenization of text.txt in tokens.json, llama.cpp's perplexity of
# text.txt, |ln ppl(ember) - ln ppl(llama.cpp)| allowed).  The tokenization is
# llama-tokenize's, checked first: a perplexity over other tokens would compare
# nothing.  F32 files agree to ~1e-5 (ggml's table-driven tanh-GELU is the largest
# difference); quantized files differ more because each side quantizes the
# activations its own way for the dot products (the issue allows 0.03).
DATA = os.path.join(ROOT, "tests", "data", "llamacpp")
F32, QUANT = 1e-4, 2e-3
LLAMACPP = [
    ("qwen2-small-f32.gguf", 128, "qwen2", 11853.4547, F32),
    ("qwen3-small-f32.gguf", 128, "qwen2", 9448.8092, F32),
    ("gemma2-small-f32.gguf", 128, "spm-no-space-prefix", 1765.1554, F32),
    ("gemma3-small-f32.gguf", 128, "spm-no-space-prefix", 9511.1722, F32),
    ("phi3-small-f32.gguf", 128, "spm-no-bos", 12129.9464, F32),
    # llama.cpp rounds its context up to 256 before it picks LongRoPE's long factors
    ("phi3-small-f32.gguf", 64, "spm-no-bos", 12175.3697, F32),
    ("smollm3-small-f32.gguf", 128, "llama-bpe", 12100.2657, F32),
    ("granite-small-f32.gguf", 128, "refact", 11921.7885, F32),
    ("mistral-small-f32.gguf", 128, "spm", 11034.5579, F32),
    ("llama3x-small-f32.gguf", 128, "spm", 13550.6925, F32),
    ("phi3-quant-Q4_K_M.gguf", 128, "spm-no-bos", 10816.6475, QUANT),
    ("gemma2-quant-Q5_K_M.gguf", 128, "spm-no-space-prefix", 2075.5836, QUANT),
    ("granite-quant-Q6_K.gguf", 128, "refact", 12540.5492, QUANT),
    ("qwen2-quant-Q8_0.gguf", 128, "qwen2", 10546.0181, QUANT),
    # n_embd 64: llama-quantize falls back to q5_0 and q8_0 row by row
    ("mistral-small-Q4_K_M.gguf", 128, "spm", 11163.1917, QUANT),
    ("mistral-quant-IQ4_XS.gguf", 128, "spm", 10665.7061, QUANT),
    # and IQ4_NL where IQ4_XS cannot take a row of 64
    ("mistral-small-IQ4_XS.gguf", 128, "spm", 11057.2314, QUANT),
]
tokens = json.load(open(os.path.join(DATA, "tokens.json")))
text_path = os.path.join(DATA, "text.txt")
for name, ctx, tok, want, tol in LLAMACPP:
    path = os.path.join(DATA, name)
    ids = json.loads(ember("tokenize", "-m", path, "-f", text_path) or "null")
    check(ids == tokens[tok], "%s: ember's tokens of text.txt differ from llama-tokenize's (%s)" % (name, tok))
    got = ppl_of(ember("perplexity", "-m", path, "-f", text_path, "-c", str(ctx), "--kv-f32"))
    d = abs(math.log(got) - math.log(want)) if got > 0 else float("inf")
    print("%-26s -c %3d perplexity: ember %.4f, llama.cpp %.4f, |d ln| %.1e" % (name, ctx, got, want, d))
    check(d <= tol, "%s -c %d: perplexity %.4f differs from llama.cpp's %.4f (|d ln| %.2e > %.0e)"
          % (name, ctx, got, want, d, tol))

# Greedy generation from "The cat", 60 tokens at most: llama-completion's bytes
# (-n 60 --temp 0 -c 128 -ctk f32 -ctv f32 -fa off, end-of-text dropped;
# greedy.json).  This runs the one-token decode path and the local layers' ring
# of KV rows, which the perplexity's whole-chunk batches do not.
greedy = json.load(open(os.path.join(DATA, "greedy.json")))
for name in sorted(set(e[0] for e in LLAMACPP if e[0] in greedy)):
    r = subprocess.run([EMBER, "-m", os.path.join(DATA, name), "-p", "The cat", "-n", "60", "--temp", "0",
                        "--kv-f32"], capture_output=True)
    want = bytes.fromhex(greedy[name])
    print("%-26s greedy: %d bytes, %s" % (name, len(r.stdout), "as llama.cpp" if r.stdout == want else "DIFFERENT"))
    check(r.stdout == want, "%s: greedy continuation %r differs from llama.cpp's %r" % (name, r.stdout, want))
sys.exit(summary())
