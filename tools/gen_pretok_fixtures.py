#!/usr/bin/env python3
"""Make tests/data/tokenizers/pretok/: a small synthetic byte-level BPE vocabulary, the
tokenizer.json pre-tokenizer (and normalizer) of every tokenizer.ggml.pre name ember knows,
hard test strings, and the ids Hugging Face's own tokenizers give for them.

    cd /tmp/hf && npm install tokenizers          # HF's Rust library with a Node binding
    NODE_PATH=/tmp/hf/node_modules /usr/bin/python3 tools/gen_pretok_fixtures.py

The vocabulary is trained here (plain BPE over the raw bytes of the strings, no
pre-tokenization, so merges cross every boundary a pre-tokenizer may draw: a wrong split
shows as different ids).  The pre-tokenizer configurations are those the models ship in
their tokenizer.json (see PRE_CONFIGS).  Reference ids: tools/hf_tokenize.js.
Outputs: vocab.json (tokens in GPT-2's byte alphabet, merges), pre_configs.json (name ->
normalizer, pre_tokenizer), texts.jsonl (one JSON string per line), ids.jsonl (per line: the
names whose configurations give identical ids, and the ids of every text).
Run once; the outputs are committed.  Deterministic (fixed seed).
"""
import json
import os
import random
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import tokenizer_readers as tr  # noqa: E402

OUT = os.path.join(HERE, "..", "tests", "data", "tokenizers", "pretok")
N_MERGES = 1200


def bl(use_regex):
    return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": use_regex}


def split(pat):
    return {"type": "Split", "pattern": {"Regex": pat}, "behavior": "Isolated", "invert": False}


def seq(*p):
    return {"type": "Sequence", "pretokenizers": list(p)}


DS_CJK = "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"
# pre name -> (normalizer, pre_tokenizer) as the models' tokenizer.json files have them
PRE_CONFIGS = {
    "gpt-2": (None, bl(True)),                                      # openai-community/gpt2
    "mpt": (None, bl(True)),                                        # mosaicml/mpt-7b (GPT-NeoX)
    "llama-bpe": (None, seq(split(tr.LLAMA3_PATTERN), bl(False))),  # meta-llama/Llama-3.x
    "dbrx": (None, seq(split(tr.LLAMA3_PATTERN), bl(False))),       # databricks/dbrx
    "smaug-bpe": (None, seq(split(tr.LLAMA3_PATTERN), bl(False))),  # abacusai/Smaug (Llama 3)
    "qwen2": ({"type": "NFC"}, seq(split(tr.QWEN2_PATTERN), bl(False))),
    "deepseek-r1-qwen": ({"type": "NFC"}, seq(split(tr.QWEN2_PATTERN), bl(False))),
    "smollm": (None, seq({"type": "Digits", "individual_digits": True}, bl(True))),
    "starcoder": (None, seq({"type": "Digits", "individual_digits": True}, bl(True))),
    "refact": (None, seq({"type": "Digits", "individual_digits": True}, bl(True))),
    "falcon": (None, seq({"type": "Punctuation", "behavior": "Contiguous"}, bl(True),
                         {"type": "Digits", "individual_digits": False}, split("[0-9][0-9][0-9]"))),
    "deepseek-llm": (None, seq(split("[\r\n]"), split(tr.DEEPSEEK_LLM_LETTERS),
                               split(tr.DEEPSEEK_LLM_PUNCT), split("\\s+$"),
                               split(DS_CJK), {"type": "Digits", "individual_digits": True}, bl(False))),
    "deepseek-coder": (None, seq(split("[\r\n]"), split("\\s?\\p{L}+"), split("\\s?\\p{P}+"), split(DS_CJK),
                                 {"type": "Digits", "individual_digits": True}, bl(False))),
    "tekken": (None, seq(split(tr.TEKKEN_PATTERN), bl(False))),     # mistralai/Mistral-Nemo
    "gpt-4o": (None, seq(split(tr.GPT4O_PATTERN), bl(False))),      # Xenova/gpt-4o (o200k)
}

HARD = [
    "it's IT'S It'S it'S we'll WE'LL We'Ll I'd I'D i'm I'M you're YOU'RE they've THEY'VE don't DON'T",
    "it'\u017felf 's 't 're 've 'm 'll 'd ' s '\u212a",
    "1 12 123 1234 12345 123456 1234567 3.14159 1,000,000 2024-12-07 0x1F 1e-9 \u0661\u0662\u0663 \u00b2\u00b3\u00b9 \u00bd",
    "\u4e2d\u6587\u5b57\u7b26\u6d4b\u8bd5\u3002\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3001\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8",
    "\U0001f44d\U0001f3fd \U0001f468\u200d\U0001f469\u200d\U0001f467 \U0001f1fa\U0001f1f8 1\ufe0f\u20e3 \u2764\ufe0f",
    "\u00e9 e\u0301 a\u0308\u0301 \u00f1 n\u0303 \u00c5 A\u030a \u1ec7 e\u0323\u0302 \u1100\u1161\u11a8 \u212b \u2126 \u212a",
    "a  b   c    d     e", "  leading", "trailing  ", "\t\ttabs\t", "x \n y", "\n\n\n", " \n \n ", "a \t\n b",
    "line1\r\nline2\r\n\r\nline3\r", "a\u0085b \u0085 c", "nbsp\u00a0here \u00a0 \u00a0\u00a0x",
    "\u2000\u2001\u2002\u2003 wide\u3000space\u202fnarrow\u205f", "zero\u200bwidth \ufeffbom",
    "!!!??? ... --- ;;; \u00ab\u00bb \u201c\u201d \u2018\u2019 \u2014\u2013 \u2026 \u3001\u3002 \uff01\uff1f",
    "$+<=>^`|~ @#%&*()[]{} \\/ \"quoted\" 'single'",
    "def f(x):\n    return x**2 + 1  # comment\n\n\nclass A:\n\tpass\n",
    "if (a && b) { c[i] = d->e; } else { return -1; }",
    "<html><body><p class=\"x\">Hi</p></body></html>",
    "HTTPServer XMLHttpRequest camelCaseWord snake_case_word SCREAMING_CASE iPhone McDonald's",
    "\u0391\u03b8\u03ae\u03bd\u03b1 \u041c\u043e\u0441\u043a\u0432\u0430 \u0645\u0631\u062d\u0628\u0627 \u05e9\u05dc\u05d5\u05dd "
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35",
    "\uff21\uff22\uff23\uff11\uff12\uff13\uff01 \U0001d400\U0001d401 \u00b5 \u01c5 \u02b0 \u1d2c \u2c00 \ua640",
    "\u00f2\u00b2\u00b3 \u00f2 \u00e9\u00bd caf\u00e9 na\u00efve \u00fcber stra\u00dfe \u1e9e",
    " " * 40 + "x", "a" * 80, "1" * 50, "!" * 30 + "a", "\n" * 10 + " " * 10,
    "<|endoftext|> <s> </s> [INST] <think>", "", " ", "\n", "a", "'", "1", "\u4e2d",
]


def random_strings(rng, n):
    pool = (list("aAbBzZ '\n\r\t.,!?-_/:;\"()[]{}<>$+^`|~=012389") +
            ["\u00e9", "e\u0301", "\u00f1", "\u00df", "\u017f", "\u212a", "\u0391", "\u0436", "\u4e2d", "\u6587",
             "\u3042", "\ud55c", "\u0645", "\u0928", "\u094d", "\u0301", "\u00a0", "\u0085", "\u2003", "\u3000",
             "\U0001f600", "\u200d", "\u00b2", "\u00bd", "\u0663", "\u2014", "\u201c", "\u3002", "\uff01", "'s",
             "'LL", "  ", "\r\n", "HTTP", "Server"])
    out = []
    for _ in range(n):
        k = rng.randint(1, 40)
        out.append("".join(rng.choice(pool) for _ in range(k)))
    return out


def train_bpe(texts, n_merges):
    """Plain BPE on raw bytes, no pre-tokenization: (vocab list of bytes, merges)."""
    seqs = [[bytes([b]) for b in t.encode("utf-8")] for t in texts if t]
    vocab = [bytes([b]) for b in range(256)]
    known = set(vocab)
    merges = []
    for _ in range(n_merges):
        counts = {}
        for s in seqs:
            for a, b in zip(s, s[1:]):
                counts[(a, b)] = counts.get((a, b), 0) + 1
        if not counts:
            break
        (a, b), c = max(counts.items(), key=lambda kv: (kv[1], -len(kv[0][0] + kv[0][1]), kv[0]))
        if c < 2:
            break
        merges.append((a, b))
        if a + b not in known:
            known.add(a + b)
            vocab.append(a + b)
        for s in seqs:
            i = 0
            while i < len(s) - 1:
                if s[i] == a and s[i + 1] == b:
                    s[i:i + 2] = [a + b]
                i += 1
    return vocab, merges


def tokenizer_json(vocab, merges, normalizer, pre):
    v = {tr.token_bytes_to_string(t): i for i, t in enumerate(vocab)}
    # no added tokens: Hugging Face matches special ones in any text, ember only when asked
    # to parse special tokens (as llama.cpp); the qwen3 / gemma3 fixtures cover added tokens
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [],
        "normalizer": normalizer, "pre_tokenizer": pre,
        "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": v,
                  "merges": [[tr.token_bytes_to_string(a), tr.token_bytes_to_string(b)] for a, b in merges]},
    }


def main():
    rng = random.Random(12)
    texts = HARD + random_strings(rng, 150)
    vocab, merges = train_bpe(texts + HARD * 3, N_MERGES)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({"vocab": [tr.token_bytes_to_string(t) for t in vocab],
                   "merges": [[tr.token_bytes_to_string(a), tr.token_bytes_to_string(b)] for a, b in merges]},
                  f, ensure_ascii=False, indent=0)
    with open(os.path.join(OUT, "pre_configs.json"), "w", encoding="utf-8") as f:
        json.dump({k: {"normalizer": n, "pre_tokenizer": p} for k, (n, p) in PRE_CONFIGS.items()}, f,
                  ensure_ascii=False, indent=1)
    with tempfile.TemporaryDirectory() as tmp:
        inp = os.path.join(tmp, "in.jsonl")
        with open(inp, "w", encoding="utf-8") as f:
            for t in texts:
                f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
        groups = []     # [names, ids per text]: names whose configurations give the same ids
        for name, (norm, pre) in PRE_CONFIGS.items():
            tj = os.path.join(tmp, "tokenizer.json")
            with open(tj, "w", encoding="utf-8") as f:
                json.dump(tokenizer_json(vocab, merges, norm, pre), f, ensure_ascii=False)
            outp = os.path.join(tmp, "out.jsonl")
            subprocess.run(["node", os.path.join(HERE, "hf_tokenize.js"), tj, inp, outp], check=True)
            recs = [json.loads(line) for line in open(outp, encoding="utf-8")]
            assert [r["text"] for r in recs] == texts
            ids = [r["ids"] for r in recs]
            same = [g for g in groups if g[1] == ids]
            if same:
                same[0][0].append(name)
            else:
                groups.append([[name], ids])
            print(name, len(recs), sum(len(i) for i in ids))
    with open(os.path.join(OUT, "texts.jsonl"), "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps(t) + "\n")
    with open(os.path.join(OUT, "ids.jsonl"), "w", encoding="utf-8") as f:
        for names, ids in groups:
            f.write(json.dumps({"names": names, "ids": ids}, separators=(",", ":")) + "\n")

if __name__ == "__main__":
    main()
