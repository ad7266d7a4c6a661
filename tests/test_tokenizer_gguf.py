"""The whole tokenizer path a user takes: each real vocabulary in
../shared/tokenizers converted by tools/convert_weights.py --vocab-only to
GGUF, loaded by ember, must give the reference ids on every fixture, and
decode back to the text.  Last line: "N passed, M failed"."""
import json
import os
import struct
import subprocess
import sys
import unicodedata

from testlib import BUILD, ROOT, SHARED, check, missing_shared, summary

PY = sys.executable


def run_family(name, special_file, nfc=False):
    out_dir = os.path.join(ROOT, BUILD, "test-models")
    os.makedirs(out_dir, exist_ok=True)
    gguf = os.path.join(out_dir, "%s-vocab.gguf" % name)
    src = os.path.join(SHARED, "tokenizers", name)
    r = subprocess.run([PY, os.path.join(ROOT, "tools", "convert_weights.py"), "--vocab-only", "--tokenizer", src,
                        "-o", gguf, "-q"], capture_output=True, text=True)
    check(r.returncode == 0, "%s: converter failed: %s" % (name, r.stderr.strip()))
    if r.returncode:
        return
    for fixture, special in (("fixtures.jsonl", False), (special_file, True)):
        if not fixture:
            continue
        path = os.path.join(src, fixture)
        recs = [json.loads(line) for line in open(path, encoding="utf-8")]
        blob = b"".join(struct.pack("<I", len(t)) + t for t in (r_["text"].encode("utf-8") for r_ in recs))
        inp, outp = gguf + ".in", gguf + ".out"
        open(inp, "wb").write(blob)
        cmd = [os.path.join(ROOT, BUILD, "tests", "tool_tokenize"), gguf, inp, outp] + (["--special"] if special else [])
        r = subprocess.run(cmd, capture_output=True, text=True)
        check(r.returncode == 0, "%s %s: tool_tokenize failed: %s" % (name, fixture, r.stderr.strip()))
        if r.returncode:
            continue
        lines = open(outp, encoding="ascii").read().split("\n")[:-1]
        exact = roundtrip = shown = 0
        for rec, line in zip(recs, lines):
            ids_s, dec_hex = line.split("\t")
            ids = [int(x) for x in ids_s.split()] if ids_s else []
            if ids == rec["ids"]:
                exact += 1
            elif shown < 5:   # show the first few mismatches only
                shown += 1
                print("  mismatch %s: %r\n    want %s\n    got  %s" % (name, rec["text"][:80], rec["ids"][:20], ids[:20]))
            if bytes.fromhex(dec_hex) == rec["text"].encode("utf-8"):
                roundtrip += 1
        print("%s %s: %d/%d exact ids, %d/%d round trips" % (name, fixture, exact, len(recs), roundtrip, len(recs)))
        check(len(lines) == len(recs), "%s %s: %d results for %d texts" % (name, fixture, len(lines), len(recs)))
        check(exact == len(recs), "%s %s: %d of %d fixtures differ" % (name, fixture, len(recs) - exact, len(recs)))
        # Decoding strips only the dummy prefix, so every fixture round-trips, after the
        # normalizer: NFC (Qwen), U+2581 as a space (SentencePiece-style vocabularies
        # decode it so, as Hugging Face's decoder does).
        def normalized(t):
            if nfc:
                t = unicodedata.normalize("NFC", t)
            return t.replace("\u2581", " ") if spm_like else t
        spm_like = name == "gemma3"
        roundtrip = sum(bytes.fromhex(line.split("\t")[1]) == normalized(rec["text"]).encode("utf-8")
                        for rec, line in zip(recs, lines))
        check(roundtrip == len(recs), "%s %s: %d of %d do not decode back" % (name, fixture, len(recs) - roundtrip, len(recs)))


if not os.path.isdir(os.path.join(SHARED, "tokenizers")):
    missing_shared(os.path.join(SHARED, "tokenizers"))
else:
    run_family("llama2", None)
    run_family("gpt2", "fixtures_special.jsonl")
    run_family("llama3", "fixtures_special.jsonl")
    run_family("qwen3", "fixtures_special.jsonl", nfc=True)
    run_family("gemma3", "fixtures_special.jsonl")
sys.exit(summary())
