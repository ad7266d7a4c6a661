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


# What the converter must write (as llama.cpp's convert_hf_to_gguf.py does) and what ember
# must then stop at: llama.cpp's end-of-generation set by token text.
META = {
    "qwen3": {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "qwen2", "tokenizer.ggml.add_bos_token": False,
              "tokenizer.ggml.eos_token_id": 151645, "tokenizer.ggml.padding_token_id": 151643},
    "gemma3": {"tokenizer.ggml.model": "llama", "tokenizer.ggml.pre": "default", "tokenizer.ggml.add_bos_token": True,
               "tokenizer.ggml.add_eos_token": False, "tokenizer.ggml.add_space_prefix": False,
               "tokenizer.ggml.bos_token_id": 2, "tokenizer.ggml.eos_token_id": 106,
               "tokenizer.ggml.unknown_token_id": 3, "tokenizer.ggml.padding_token_id": 0},
}
EOG = {
    # </s> (an ordinary token here, but llama.cpp stops at any "</s>") <|endoftext|> <|im_end|>
    # <|fim_pad|> <|repo_name|> <|file_sep|>
    "qwen3": "bos -1 eos 151645 eog 128247 151643 151645 151662 151663 151664",
    # <eos> <end_of_turn> </s> (user-defined)
    "gemma3": "bos 2 eos 106 eog 1 106 212",
}


def check_meta(name, gguf):
    if name not in META:
        return
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import gguf_reader
    r = gguf_reader.GGUFReader(gguf)
    for k, v in META[name].items():
        check(r.metadata.get(k) == v, "%s: %s is %r, expected %r" % (name, k, r.metadata.get(k), v))
    cfg = json.load(open(os.path.join(SHARED, "tokenizers", name, "tokenizer_config.json"), encoding="utf-8"))
    check(r.metadata.get("tokenizer.chat_template") == cfg["chat_template"], "%s: chat template copied" % name)
    types = r.metadata["tokenizer.ggml.token_type"]
    toks = r.metadata["tokenizer.ggml.tokens"]
    if name == "qwen3":
        check(types[toks.index("<think>")] == 4 and types[toks.index("<|im_end|>")] == 3,
              "qwen3: <think> user-defined, <|im_end|> control")
    r2 = subprocess.run([os.path.join(ROOT, BUILD, "tests", "tool_tokenize"), gguf, "--eog"], capture_output=True,
                        text=True)
    check(r2.stdout.strip() == EOG[name], "%s: end of generation %r, expected %r" % (name, r2.stdout.strip(), EOG[name]))


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
    check_meta(name, gguf)
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
