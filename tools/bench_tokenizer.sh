#!/bin/sh
# Tokenizer encoding speed (part of `make bench`): English prose (the demo
# model's held-out fortunes, repeated to ~2 MB) through `ember tokenize -v`
# for each tokenizer family; the best of 3 runs per family.  gpt2 and llama3
# use the hand-written splitters; qwen3 the cl100k one with single digits,
# after NFC; gemma3 is SentencePiece-style BPE.
set -u
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
SHARED=${EMBER_SHARED:-../shared}
out=$BUILD/bench
mkdir -p "$out"
prose=$out/prose.txt
: > "$prose"
for i in $(seq 15); do cat models/heldout.txt >> "$prose"; done
echo "| tokenizer | MB/s (best of 3, one core) |" > "$out/tokenizer.md"
echo "|---|---:|" >> "$out/tokenizer.md"
for fam in llama2 gpt2 llama3 qwen3 gemma3 demo; do
    if [ $fam = demo ]; then model=models/ember-demo.gguf
    else
        model=$out/$fam-vocab.gguf
        if [ ! -f "$model" ]; then
            [ -d "$SHARED/tokenizers/$fam" ] || { echo "$fam: $SHARED/tokenizers missing, skipped"; continue; }
            $PYTHON tools/convert_weights.py --vocab-only --tokenizer "$SHARED/tokenizers/$fam" -o "$model" -q || continue
        fi
    fi
    best=0
    for r in 1 2 3; do
        mbs=$("$BUILD/ember" tokenize -v -m "$model" -f "$prose" 2>&1 >/dev/null | sed -n 's/.*(\([0-9.]*\) MB\/s).*/\1/p')
        best=$(echo "$best $mbs" | awk '{print ($2 > $1) ? $2 : $1}')
    done
    echo "$fam: $best MB/s"
    echo "| $fam | $best |" >> "$out/tokenizer.md"
done
