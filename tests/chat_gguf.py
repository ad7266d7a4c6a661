"""chat_gguf.py - copy a GGUF file with a chat template added (or replaced),
for the chat tests; with --vocab-only the copy keeps only the metadata (a
vocabulary-only GGUF, as llama.cpp ships for its tokenizer tests).

    chat_gguf.py IN.gguf OUT.gguf --template FILE [--vocab-only]"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
import gguf_reader  # noqa: E402
import gguf_writer as gw  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--template", required=True, help="file holding the tokenizer.chat_template text")
    ap.add_argument("--vocab-only", action="store_true")
    a = ap.parse_args()
    r = gguf_reader.GGUFReader(a.src)
    w = gw.GGUFWriter(a.dst, alignment=r.alignment)
    for key, value in r.metadata.items():
        if key == "tokenizer.chat_template" or w.has(key):
            continue
        t = r.metadata_types[key]
        if isinstance(t, tuple):
            w.add(key, value, t[0], t[1])
        else:
            w.add(key, value, t)
    w.add_string("tokenizer.chat_template", open(a.template, encoding="utf-8").read())
    if not a.vocab_only:
        for name, info in r.tensors.items():
            w.add_tensor(name, r.shape(name), info.type, lambda n=name: r.raw(n))
    w.write()


if __name__ == "__main__":
    main()
