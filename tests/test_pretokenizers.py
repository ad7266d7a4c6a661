"""Every tokenizer.ggml.pre name ember knows, against Hugging Face's own tokenizers.

tests/data/tokenizers/pretok (made by tools/gen_pretok_fixtures.py with the npm package
`tokenizers`, HF's Rust library) holds a small byte-level BPE vocabulary, the
tokenizer.json pre-tokenizer / normalizer each model family ships, hard strings, and the
ids HF gives.  For each name: tokenizer.json -> tools/tokenizer_readers.py (which must
detect the family from the pre-tokenizer) -> tools/convert_weights.py --vocab-only style
GGUF with that pre name -> ember (tool_tokenize) -> the same ids.  Needs no ../shared.
The qwen2 file also checks ember's NFC against Python's unicodedata (same Unicode 14) on
every code point with a canonical decomposition, NFD forms, Hangul and mark soups.

If llama.cpp's vocabulary test files are around (LLAMA_CPP_DIR, default ../llama.cpp:
models/ggml-vocab-*.gguf with .inp/.out made by HF transformers), ember must also give
their ids on the real vocabularies.  Last line: "N passed, M failed"."""
import json
import os
import random
import struct
import subprocess
import sys
import unicodedata

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


def tokenize(gguf, texts, special=False, decoded=False):
    """ids per text from ember (with decoded=True: the decoded bytes), or (None, error text)."""
    inp, outp = gguf + ".in", gguf + ".out"
    with open(inp, "wb") as f:
        for t in texts:
            b = t.encode("utf-8")
            f.write(struct.pack("<I", len(b)) + b)
    r = subprocess.run([TOOL, gguf, inp, outp] + (["--special"] if special else []), capture_output=True, text=True)
    if r.returncode:
        return None, r.stderr.strip()
    lines = open(outp, encoding="ascii").read().split("\n")[:-1]
    if decoded:
        return [bytes.fromhex(ln.split("\t")[1]) for ln in lines], ""
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


def nfc():
    """qwen2 normalizes to NFC: decoding its ids gives back unicodedata's NFC of the text
    (Python 3.11: Unicode 14, the version of src/unicode_tables.h)."""
    gguf = os.path.join(OUT, "qwen2", "vocab.gguf")
    rng = random.Random(5)
    marks = [c for c in range(0x300, 0x370)] + [0x1DC0, 0x20D0, 0x302A, 0x0591, 0x05B0, 0x093C, 0x094D, 0x0E38,
                                                0x1A60, 0x0F71, 0x0F72, 0x0F80, 0x3099, 0x309A]
    texts = []
    # every code point with a canonical decomposition, alone, decomposed, and before a mark
    dec = [c for c in range(0x110000) if not 0xD800 <= c < 0xE000 and unicodedata.decomposition(chr(c))
           and not unicodedata.decomposition(chr(c)).startswith("<")]
    for i in range(0, len(dec), 40):
        chunk = dec[i:i + 40]
        texts.append("".join(chr(c) for c in chunk))
        texts.append(unicodedata.normalize("NFD", "".join(chr(c) for c in chunk)))
        texts.append("".join(chr(c) + chr(rng.choice(marks)) for c in chunk))
    # Hangul syllables and jamo sequences, and random base + mark soup
    texts.append("".join(chr(c) for c in range(0xAC00, 0xD7A4, 7)))
    texts.append(unicodedata.normalize("NFD", "".join(chr(c) for c in range(0xAC00, 0xD7A4, 13))))
    texts.append("".join(chr(rng.choice([0x1100 + rng.randrange(19), 0x1161 + rng.randrange(21), 0x11A8 + rng.randrange(27)]))
                         for _ in range(400)))
    bases = "aeiouAEIOUnNcCsSzZ\u03b1\u03c9\u0430\u0435\u0915\u0e01\u05d0\u304b\u30cf\u1100 "
    for _ in range(300):
        texts.append("".join(rng.choice(bases) if rng.random() < 0.5 else chr(rng.choice(marks))
                             for _ in range(rng.randint(1, 30))))
    got, err = tokenize(gguf, texts, decoded=True)
    check(got is not None, "nfc: %s" % err)
    if got is None:
        return
    bad = [i for i, t in enumerate(texts) if got[i] != unicodedata.normalize("NFC", t).encode("utf-8")]
    for i in bad[:3]:
        print("  NFC differs on %r\n    want %r\n    got  %r" % (texts[i][:20], unicodedata.normalize("NFC", texts[i])[:20],
                                                              got[i][:60]))
    print("%-18s %d/%d texts normalized as unicodedata's NFC" % ("qwen2 NFC", len(texts) - len(bad), len(texts)))
    check(not bad, "NFC: %d of %d differ" % (len(bad), len(texts)))


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
nfc()
llama_cpp_vocabs()
sys.exit(summary())
