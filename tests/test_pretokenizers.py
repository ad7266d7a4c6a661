"""Every tokenizer.ggml.pre name ember knows, against Hugging Face's own tokenizers.

tests/data/tokenizers/pretok (made by tools/gen_pretok_fixtures.py with the npm package
`tokenizers`, HF's Rust library) holds a small byte-level BPE vocabulary, the
tokenizer.json pre-tokenizer / normalizer each model family ships, hard strings, and the
ids HF gives.  For each name: tokenizer.json -> tools/tokenizer_readers.py (which must
detect the family from the pre-tokenizer) -> tools/convert_weights.py --vocab-only style
GGUF with that pre name -> ember (tool_tokenize) -> the same ids.  Needs no ../shared.

If llama.cpp's vocabulary test files are around (LLAMA_CPP_DIR, default ../llama.cpp:
models/ggml-vocab-*.gguf with .inp/.out made by HF transformers), ember must also give
their ids on the real vocabularies.  Last line: "N passed, M failed"."""
import json
import os
import struct
import subprocess
import sys

from testlib import BUILD, ROOT, check, summary

sys.path.insert(0, os.path.join(ROOT, "tools"))
import tokenizer_readers as tr  # noqa: E402
import convert_weights as cw  # noqa: E402

DATA = os.path.join(ROOT, "tests", "data", "tokenizers", "pretok")
OUT = os.path.join(ROOT, BUILD, "test-models", "pretok")
TOOL = os.path.join(ROOT, BUILD, "tests", "tool_tokenize")

# the name tokenizer_readers gives each configuration (aliases share a configuration)
DETECTED = {"gpt-2": "gpt-2", "mpt": "gpt-2", "llama-bpe": "llama-bpe", "dbrx": "llama-bpe",
            "smaug-bpe": "llama-bpe", "qwen2": "qwen2", "deepseek-r1-qwen": "qwen2", "smollm": "smollm",
            "starcoder": "smollm", "refact": "smollm", "falcon": "falcon", "deepseek-llm": "deepseek-llm",
            "deepseek-coder": "deepseek-coder", "tekken": "tekken", "gpt-4o": "gpt-4o"}


def tokenize(gguf, texts, special=False):
    """ids per text from ember, or (None, error text)."""
    inp, outp = gguf + ".in", gguf + ".out"
    with open(inp, "wb") as f:
        for t in texts:
            b = t.encode("utf-8")
            f.write(struct.pack("<I", len(b)) + b)
    r = subprocess.run([TOOL, gguf, inp, outp] + (["--special"] if special else []), capture_output=True, text=True)
    if r.returncode:
        return None, r.stderr.strip()
    lines = open(outp, encoding="ascii").read().split("\n")[:-1]
    return [[int(x) for x in ln.split("\t")[0].split()] for ln in lines], ""


def write_gguf(tok, out):
    """The converter's --vocab-only GGUF for tok (its reader patched to hand back tok)."""
    saved = cw.load_tokenizer
    cw.load_tokenizer = lambda path, vocab_size: tok
    try:
        cw.convert(os.path.dirname(out), out, vocab_only=True, quiet=True)
    finally:
        cw.load_tokenizer = saved


def compare(name, texts, want, got):
    bad = [i for i, (w, g) in enumerate(zip(want, got)) if w != g]
    for i in bad[:3]:
        print("  %s mismatch on %r\n    want %s\n    got  %s" % (name, texts[i][:60], want[i][:24], got[i][:24]))
    print("%-18s %d/%d exact" % (name, len(texts) - len(bad), len(texts)))
    check(len(got) == len(want) and not bad, "%s: %d of %d differ from Hugging Face" % (name, len(bad), len(texts)))


def synthetic():
    vocab = json.load(open(os.path.join(DATA, "vocab.json"), encoding="utf-8"))
    configs = json.load(open(os.path.join(DATA, "pre_configs.json"), encoding="utf-8"))
    texts = [json.loads(line) for line in open(os.path.join(DATA, "texts.jsonl"), encoding="utf-8")]
    groups = [json.loads(line) for line in open(os.path.join(DATA, "ids.jsonl"), encoding="utf-8")]
    names = [n for g in groups for n in g["names"]]
    check(sorted(names) == sorted(DETECTED), "fixtures cover %s" % sorted(names))
    for g in groups:
        check(len(g["ids"]) == len(texts), "%s: one id list per text" % g["names"])
        for name in g["names"]:
            d = os.path.join(OUT, name)
            os.makedirs(d, exist_ok=True)
            tj = {
                "version": "1.0", "truncation": None, "padding": None,
                "added_tokens": [],
                "normalizer": configs[name]["normalizer"], "pre_tokenizer": configs[name]["pre_tokenizer"],
                "post_processor": None, "decoder": {"type": "ByteLevel"},
                "model": {"type": "BPE", "ignore_merges": True, "byte_fallback": False,
                          "vocab": {t: i for i, t in enumerate(vocab["vocab"])}, "merges": vocab["merges"]},
            }
            with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
                json.dump(tj, f, ensure_ascii=False)
            tok = tr.read_tokenizer(os.path.join(d, "tokenizer.json"))
            check(tok.pre == DETECTED[name], "%s: tokenizer_readers detected %r" % (name, tok.pre))
            tok.pre = name
            gguf = os.path.join(d, "vocab.gguf")
            write_gguf(tok, gguf)
            got, err = tokenize(gguf, texts)
            check(got is not None, "%s: tool_tokenize failed: %s" % (name, err))
            if got is not None:
                compare(name, texts, g["ids"], got)
    # an unknown name fails at load, naming it
    tok = tr.read_tokenizer(os.path.join(OUT, "gpt-2", "tokenizer.json"))
    tok.pre = "no-such-pre"
    gguf = os.path.join(OUT, "unknown.gguf")
    write_gguf(tok, gguf)
    got, err = tokenize(gguf, ["x"])
    check(got is None and "no-such-pre" in err, "unknown pre name: %r" % err)


def llama_cpp_vocabs():
    base = os.environ.get("LLAMA_CPP_DIR", os.path.join(ROOT, "..", "llama.cpp"))
    models = os.path.join(base, "models")
    names = ["gpt-2", "mpt", "starcoder", "refact", "falcon", "deepseek-llm", "deepseek-coder"]
    if not os.path.isfile(os.path.join(models, "ggml-vocab-gpt-2.gguf.inp")):
        print("SKIP llama.cpp vocabularies: %s not found" % models)
        return
    for name in names:
        g = os.path.join(models, "ggml-vocab-%s.gguf" % name)
        if not os.path.isfile(g):
            continue
        texts = open(g + ".inp", encoding="utf-8").read().split("\n__ggml_vocab_test__\n")
        want = [[int(x) for x in ln.split()] for ln in open(g + ".out").read().split("\n")]
        local = os.path.join(OUT, "llamacpp-%s.gguf" % name)   # tool_tokenize writes beside its model
        with open(g, "rb") as src, open(local, "wb") as dst:
            dst.write(src.read())
        got, err = tokenize(local, texts)
        check(got is not None, "llama.cpp %s: %s" % (name, err))
        if got is not None:
            compare("llama.cpp " + name, texts, want[:len(texts)], got)


os.makedirs(OUT, exist_ok=True)
synthetic()
llama_cpp_vocabs()
sys.exit(summary())
