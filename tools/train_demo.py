#!/usr/bin/python3
"""Train ember's bundled demo model (issue 6).

A small Llama-architecture model trained from scratch, on the CPU, with
PyTorch, on the BSD `fortunes` databases that Debian's `fortunes` and
`fortunes-min` packages install under /usr/share/games/fortunes.

Run from the repository root:

    nice -n 5 /usr/bin/python3 tools/train_demo.py            # --budget-min 75 (default)

Outputs
  build/demo/hf/            Hugging Face style model directory (config.json,
                            model.safetensors, tokenizer.json,
                            tokenizer_config.json), input of
                            tools/convert_weights.py
  build/demo/ckpt.pt        periodic training checkpoint (resumable: rerun the
                            same command; it continues where it stopped)
  build/demo/train.log      the log
  models/heldout.txt        held-out fortunes (never trained on)
  models/reference.json     reference values computed with PyTorch: held-out
                            perplexity exactly as llama.cpp's perplexity tool
                            computes it (F32 and F16-rounded weights), the
                            tokenization of models/heldout.txt, greedy
                            continuations of a few prompts

Everything is deterministic given the arguments (corpus split, tokenizer,
initialisation, sampling of training windows); the amount of training depends
on the wall-clock budget.

Requires: python3-torch, python3-numpy, python3-regex (Debian packages).
Other steps: `--export-only` re-exports hf/ and the reference from the
checkpoint; `--samples N` prints samples from the trained model.
"""

import argparse
import hashlib
import json
import math
import os
import signal
import struct
import sys
import time
from collections import Counter, defaultdict

import numpy as np
import regex
import torch
import torch.nn as nn
import torch.nn.functional as F

FORTUNE_DIR = "/usr/share/games/fortunes"
# GPT-2's pre-tokenizer regex, exactly (ember implements this one in C).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
EOT = "<|endoftext|>"


def log(msg, logf=None):
    line = time.strftime("%H:%M:%S ") + msg
    print(line, flush=True)
    if logf is not None:
        logf.write(line + "\n")
        logf.flush()


# --------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------

def fortune_files():
    """The plain-text fortune databases (no .dat index, no .u8 links, no off/)."""
    out = []
    for name in sorted(os.listdir(FORTUNE_DIR)):
        p = os.path.join(FORTUNE_DIR, name)
        if name.endswith(".dat") or name.endswith(".u8") or name == "off":
            continue
        if not os.path.isfile(p) or os.path.islink(p):
            continue
        out.append(p)
    return out


def load_fortunes():
    """List of (database name, fortune text), in file order, deduplicated."""
    seen = set()
    out = []
    for p in fortune_files():
        with open(p, "rb") as f:
            text = f.read().decode("utf-8")
        cur = []
        for line in text.split("\n") + ["%"]:
            if line == "%":
                t = "\n".join(cur).strip("\n")
                # Drop trailing whitespace on each line; keep indentation.
                t = "\n".join(l.rstrip() for l in t.split("\n"))
                cur = []
                if t.strip() and t not in seen:
                    seen.add(t)
                    out.append((os.path.basename(p), t))
            else:
                cur.append(line)
    return out


def split_fortunes(fortunes, heldout_every=20):
    """Deterministic split by fortune: a fortune is held out when the md5 of
    its text is 0 mod heldout_every (~5%)."""
    train, held = [], []
    for name, t in fortunes:
        h = int(hashlib.md5(t.encode("utf-8")).hexdigest(), 16)
        (held if h % heldout_every == 0 else train).append(t)
    return train, held


# --------------------------------------------------------------------------
# Byte-level BPE tokenizer (GPT-2 style). All tokenization goes through this
# class; tokenizer.json is written from the same vocab and merges.
# --------------------------------------------------------------------------

def bytes_to_unicode():
    """GPT-2's byte -> printable unicode char mapping, in GPT-2's order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return list(zip(bs, [chr(c) for c in cs]))


BYTE_ORDER = bytes_to_unicode()          # [(byte, char)], GPT-2's order = ids 0..255
BYTE2CHAR = {b: c for b, c in BYTE_ORDER}
CHAR2BYTE = {c: b for b, c in BYTE_ORDER}
PRETOK = regex.compile(GPT2_PATTERN)


def pretokenize(text):
    return PRETOK.findall(text)


def word_to_chars(word):
    return "".join(BYTE2CHAR[b] for b in word.encode("utf-8"))


class Tokenizer:
    def __init__(self, vocab, merges):
        self.vocab = vocab                      # list of token strings (byte-unicode), id = index
        self.merges = merges                    # list of (a, b) strings, rank = index
        self.tok2id = {}
        for i, t in enumerate(vocab):
            assert t not in self.tok2id, t
            self.tok2id[t] = i
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.eot_id = self.tok2id[EOT]
        self.bos_id = self.eot_id
        self.eos_id = self.eot_id
        self.cache = {}

    def _bpe(self, chars):
        if chars in self.cache:
            return self.cache[chars]
        parts = list(chars)
        while len(parts) > 1:
            best, best_rank = None, None
            for i in range(len(parts) - 1):
                r = self.ranks.get((parts[i], parts[i + 1]))
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = (parts[i], parts[i + 1]), r
            if best is None:
                break
            out, i = [], 0
            while i < len(parts):
                if i < len(parts) - 1 and parts[i] == best[0] and parts[i + 1] == best[1]:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(parts[i])
                    i += 1
            parts = out
        ids = [self.tok2id[p] for p in parts]
        self.cache[chars] = ids
        return ids

    def encode(self, text, bos=False):
        ids = [self.bos_id] if bos else []
        for w in pretokenize(text):
            ids.extend(self._bpe(word_to_chars(w)))
        return ids

    def decode_bytes(self, ids):
        out = bytearray()
        for i in ids:
            if i == self.eot_id:
                continue
            out.extend(CHAR2BYTE[c] for c in self.vocab[i])
        return bytes(out)

    def decode(self, ids):
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def to_json(self):
        return {"vocab": self.vocab, "merges": [list(m) for m in self.merges]}

    @staticmethod
    def from_json(d):
        return Tokenizer(d["vocab"], [tuple(m) for m in d["merges"]])

    def hf_tokenizer_json(self):
        """Hugging Face `tokenizers` format."""
        special = {"id": self.eot_id, "content": EOT, "single_word": False, "lstrip": False,
                   "rstrip": False, "normalized": False, "special": True}
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [special],
            "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False,
                              "trim_offsets": True, "use_regex": True},
            "post_processor": {
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": EOT, "type_id": 0}},
                           {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": EOT, "type_id": 0}},
                         {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": EOT, "type_id": 1}},
                         {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {EOT: {"id": EOT, "ids": [self.eot_id], "tokens": [EOT]}},
            },
            "decoder": {"type": "ByteLevel", "add_prefix_space": True,
                        "trim_offsets": True, "use_regex": True},
            "model": {
                "type": "BPE",
                "dropout": None,
                "unk_token": None,
                "continuing_subword_prefix": None,
                "end_of_word_suffix": None,
                "fuse_unk": False,
                "byte_fallback": False,
                "vocab": {t: i for i, t in enumerate(self.vocab)},
                "merges": [a + " " + b for a, b in self.merges],
            },
        }


def train_bpe(texts, vocab_size, logf=None):
    """Byte-level BPE: 256 byte tokens (GPT-2 order), merges until the vocab
    holds vocab_size-1 distinct strings, then <|endoftext|>.

    Word counts of pre-tokens, pair counts updated incrementally; ties broken
    by the pair's strings so the result is deterministic."""
    t0 = time.time()
    wc = Counter()
    for t in texts:
        wc.update(pretokenize(t))
    words = []      # list of [list of symbols]
    counts = []
    for w, c in sorted(wc.items()):
        words.append(list(word_to_chars(w)))
        counts.append(c)
    pair_counts = defaultdict(int)
    where = defaultdict(set)    # pair -> set of word indices
    for wi, syms in enumerate(words):
        c = counts[wi]
        for i in range(len(syms) - 1):
            p = (syms[i], syms[i + 1])
            pair_counts[p] += c
            where[p].add(wi)
    vocab = [c for _, c in BYTE_ORDER]
    vocab_set = set(vocab)
    merges = []
    while len(vocab) < vocab_size - 1 and pair_counts:
        best = max(pair_counts.items(), key=lambda kv: (kv[1], kv[0][0], kv[0][1]))
        (a, b), n = best
        if n < 2:
            break
        new = a + b
        merges.append((a, b))
        if new not in vocab_set:
            vocab.append(new)
            vocab_set.add(new)
        for wi in list(where[(a, b)]):
            syms = words[wi]
            c = counts[wi]
            # remove old pairs of this word
            for i in range(len(syms) - 1):
                p = (syms[i], syms[i + 1])
                pair_counts[p] -= c
                if pair_counts[p] <= 0:
                    del pair_counts[p]
                where[p].discard(wi)
            out, i = [], 0
            while i < len(syms):
                if i < len(syms) - 1 and syms[i] == a and syms[i + 1] == b:
                    out.append(new)
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            words[wi] = out
            for i in range(len(out) - 1):
                p = (out[i], out[i + 1])
                pair_counts[p] += c
                where[p].add(wi)
        where.pop((a, b), None)
    vocab.append(EOT)
    log("BPE: %d merges, vocab %d, %d distinct pre-tokens, %.1fs" %
        (len(merges), len(vocab), len(words), time.time() - t0), logf)
    return Tokenizer(vocab, merges)


# --------------------------------------------------------------------------
# Model: Llama, computed as Hugging Face's LlamaForCausalLM computes it.
# --------------------------------------------------------------------------

class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        var = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(var + self.eps))


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, h, kv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
        self.h, self.kv, self.hd = h, kv, d // h
        self.q_proj = nn.Linear(d, h * self.hd, bias=False)
        self.k_proj = nn.Linear(d, kv * self.hd, bias=False)
        self.v_proj = nn.Linear(d, kv * self.hd, bias=False)
        self.o_proj = nn.Linear(h * self.hd, d, bias=False)

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.h, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.kv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.kv, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.h // self.kv
        if rep > 1:   # HF repeat_kv: query head i uses kv head i // rep
            k = k[:, :, None].expand(B, self.kv, rep, T, self.hd).reshape(B, self.h, T, self.hd)
            v = v[:, :, None].expand(B, self.kv, rep, T, self.hd).reshape(B, self.h, T, self.hd)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd) + mask
        att = torch.softmax(att.float(), dim=-1).to(q.dtype)
        y = (att @ v).transpose(1, 2).reshape(B, T, self.h * self.hd)
        return self.o_proj(y)


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, f = cfg["hidden_size"], cfg["intermediate_size"]
        self.gate_proj = nn.Linear(d, f, bias=False)
        self.up_proj = nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])
        self.post_attention_layernorm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x


class Llama(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = nn.ModuleList([Block(cfg) for _ in range(cfg["num_hidden_layers"])])
        self.norm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])
        if not cfg["tie_word_embeddings"]:
            self.lm_head = nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)
        hd = cfg["hidden_size"] // cfg["num_attention_heads"]
        inv_freq = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
        t = torch.arange(cfg["max_position_embeddings"], dtype=torch.float32)
        freqs = torch.outer(t, inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)
        self._init()

    def _init(self):
        std = 0.02
        n = self.cfg["num_hidden_layers"]
        for name, p in self.named_parameters():
            if p.dim() == 2:
                s = std / math.sqrt(2 * n) if name.endswith(("o_proj.weight", "down_proj.weight")) else std
                nn.init.normal_(p, mean=0.0, std=s)

    def forward(self, idx):
        B, T = idx.shape
        x = self.embed_tokens(idx)
        cos, sin = self.cos[:T], self.sin[:T]
        mask = torch.full((T, T), float("-inf")).triu(1)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        x = self.norm(x)
        w = self.embed_tokens.weight if self.cfg["tie_word_embeddings"] else self.lm_head.weight
        return x @ w.t()

    def hf_state_dict(self):
        """Tensors under Hugging Face's names."""
        out = {}
        for name, p in self.state_dict().items():
            if name in ("cos", "sin"):
                continue
            out[name if name.startswith("lm_head") else "model." + name] = p.detach().float().contiguous()
        return out


def count_params(model):
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------

@torch.no_grad()
def llama_cpp_perplexity(model, tokens, n_ctx, bos_id, batch=16, max_chunks=None):
    """Exactly llama.cpp's perplexity tool: tokens has BOS prepended; chunks of
    n_ctx with the first token replaced by BOS, each run from scratch; score
    positions n_ctx//2 .. n_ctx-2 predicting the next token."""
    n_chunk = len(tokens) // n_ctx
    if max_chunks is not None:
        n_chunk = min(n_chunk, max_chunks)
    first = n_ctx // 2
    nlls = []
    model.eval()
    for c0 in range(0, n_chunk, batch):
        rows = []
        for c in range(c0, min(n_chunk, c0 + batch)):
            row = list(tokens[c * n_ctx:(c + 1) * n_ctx])
            row[0] = bos_id
            rows.append(row)
        x = torch.tensor(rows, dtype=torch.long)
        logits = model(x).double()
        lp = torch.log_softmax(logits[:, first:n_ctx - 1], dim=-1)
        tgt = x[:, first + 1:n_ctx]
        nll = -lp.gather(-1, tgt[..., None])[..., 0]
        nlls.append(nll.reshape(-1))
    nll = torch.cat(nlls).double()
    count = nll.numel()
    mean = nll.mean().item()
    mean2 = (nll * nll).mean().item()
    ppl = math.exp(mean)
    var = mean2 - mean * mean
    err = ppl * math.sqrt(var / (count - 1)) if var > 0 else 0.0
    return {"ppl": ppl, "error": err, "mean_nll": mean, "n_chunk": n_chunk, "count": count}


@torch.no_grad()
def greedy(model, ids, n):
    """n greedy tokens after ids; also the logit margin top1-top2 per step."""
    model.eval()
    ids = list(ids)
    out, margins = [], []
    for _ in range(n):
        logits = model(torch.tensor([ids[-model.cfg["max_position_embeddings"]:]]))[0, -1]
        top = torch.topk(logits, 2)
        t = int(top.indices[0])
        margins.append(float(top.values[0] - top.values[1]))
        out.append(t)
        ids.append(t)
    return out, margins


@torch.no_grad()
def sample(model, tok, prompt, n, temp=0.8, seed=0):
    model.eval()
    g = torch.Generator().manual_seed(seed)
    ids = tok.encode(prompt, bos=True)
    n_prompt = len(ids)
    for _ in range(n):
        logits = model(torch.tensor([ids[-model.cfg["max_position_embeddings"]:]]))[0, -1]
        p = torch.softmax(logits / temp, dim=-1)
        t = int(torch.multinomial(p, 1, generator=g))
        if t == tok.eos_id:
            break
        ids.append(t)
    return tok.decode(ids[n_prompt:])


def f16_rounded(model):
    m = Llama(model.cfg)
    m.load_state_dict(model.state_dict())
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(p.half().float())
    return m


# --------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------

def write_safetensors(path, tensors, metadata=None):
    header = {}
    off = 0
    blobs = []
    for name in sorted(tensors):
        a = tensors[name].numpy().astype("<f4", copy=False)
        b = a.tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def write_json(path, obj, indent=2):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


def export_hf(model, tok, outdir):
    os.makedirs(outdir, exist_ok=True)
    cfg = dict(model.cfg)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": cfg["hidden_size"],
        "intermediate_size": cfg["intermediate_size"],
        "num_hidden_layers": cfg["num_hidden_layers"],
        "num_attention_heads": cfg["num_attention_heads"],
        "num_key_value_heads": cfg["num_key_value_heads"],
        "head_dim": cfg["hidden_size"] // cfg["num_attention_heads"],
        "hidden_act": "silu",
        "rms_norm_eps": cfg["rms_norm_eps"],
        "rope_theta": cfg["rope_theta"],
        "rope_scaling": None,
        "max_position_embeddings": cfg["max_position_embeddings"],
        "vocab_size": cfg["vocab_size"],
        "tie_word_embeddings": cfg["tie_word_embeddings"],
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": tok.bos_id,
        "eos_token_id": tok.eos_id,
        "initializer_range": 0.02,
        "torch_dtype": "float32",
    }
    write_json(os.path.join(outdir, "config.json"), config)
    write_safetensors(os.path.join(outdir, "model.safetensors"), model.hf_state_dict(),
                      {"format": "pt"})
    write_json(os.path.join(outdir, "tokenizer.json"), tok.hf_tokenizer_json())
    write_json(os.path.join(outdir, "tokenizer_config.json"), {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": EOT,
        "eos_token": EOT,
        "unk_token": None,
        "add_bos_token": True,
        "add_eos_token": False,
        "model_max_length": cfg["max_position_embeddings"],
        "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": {str(tok.eot_id): {
            "content": EOT, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": True}},
    })
    write_json(os.path.join(outdir, "generation_config.json"),
               {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id})


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

PROMPTS = ["The", "A man", "Life is", ""]


def build_reference(model, tok, heldout_path, state, args, logf):
    with open(heldout_path, "rb") as f:
        held_text = f.read().decode("utf-8")
    toks = tok.encode(held_text, bos=True)
    ref = {
        "description": "Reference values for models/ember-demo.gguf computed with PyTorch by "
                       "tools/train_demo.py (the F16 figures use the weights rounded to float16, "
                       "as shipped).",
        "heldout_file": "models/heldout.txt",
        "heldout_bytes": len(held_text.encode("utf-8")),
        "heldout_sha256": hashlib.sha256(held_text.encode("utf-8")).hexdigest(),
        "tokenization": {
            "add_bos": True,
            "bos_id": tok.bos_id,
            "n_tokens": len(toks),
            "ids_sha256": hashlib.sha256(json.dumps(toks, separators=(", ", ": ")).encode()).hexdigest(),
            "ids_sha256_of": "sha256 of the ids printed as a JSON list with ', ' separators, e.g. [1, 2, 3]",
            "first_1000": toks[:1000],
        },
    }
    m16 = f16_rounded(model)
    ppl = {}
    for name, m in (("f32", model), ("f16", m16)):
        r = llama_cpp_perplexity(m, toks, args.ppl_ctx, tok.bos_id)
        ppl[name] = r
        log("reference perplexity %s: %.4f +/- %.5f (%d chunks of %d)" %
            (name, r["ppl"], r["error"], r["n_chunk"], args.ppl_ctx), logf)
    ref["perplexity"] = {"n_ctx": args.ppl_ctx, "method": "llama.cpp perplexity: BOS + whole file, "
                         "chunks of n_ctx with the first token replaced by BOS, positions "
                         "n_ctx/2 .. n_ctx-2 scored", **ppl}
    gens = []
    for p in PROMPTS:
        pids = tok.encode(p, bos=True)
        out, margins = greedy(m16, pids, args.greedy_n)
        stop = out.index(tok.eos_id) if tok.eos_id in out else len(out)
        text_bytes = tok.decode_bytes(out[:stop])
        gens.append({
            "prompt": p,
            "prompt_ids": pids,
            "n_predict": args.greedy_n,
            "ids": out,
            "ids_until_eos": out[:stop],
            "text": text_bytes.decode("utf-8", errors="replace"),
            "text_hex": text_bytes.hex(),
            "text_valid_utf8": _valid_utf8(text_bytes),
            "min_logit_margin": min(margins),
            "logit_margins": [round(x, 4) for x in margins],
        })
        log("greedy %r -> %r (min margin %.3f)" % (p, gens[-1]["text"], min(margins)), logf)
    ref["greedy"] = {"weights": "f16-rounded", "temperature": 0, "runs": gens}
    ref["training"] = state
    ref["config"] = model.cfg
    ref["n_params"] = count_params(model)
    return ref


def _valid_utf8(b):
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default="build/demo")
    ap.add_argument("--heldout", default="models/heldout.txt")
    ap.add_argument("--reference", default="models/reference.json")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=640)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--untied", action="store_true")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.05)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--budget-min", type=float, default=75.0, help="wall-clock training budget")
    ap.add_argument("--set-budget-min", type=float, default=None,
                    help="on resume: change the stored budget (the cosine schedule follows)")
    ap.add_argument("--eval-every-min", type=float, default=5.0)
    ap.add_argument("--ckpt-every-min", type=float, default=3.0)
    ap.add_argument("--eval-chunks", type=int, default=64)
    ap.add_argument("--ppl-ctx", type=int, default=128)
    ap.add_argument("--greedy-n", type=int, default=20)
    ap.add_argument("--heldout-max-kb", type=int, default=145)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--export-only", action="store_true")
    ap.add_argument("--samples", type=int, default=0, help="print N samples (temp 0.8) and exit")
    ap.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    os.makedirs(args.out_dir, exist_ok=True)
    logf = open(os.path.join(args.out_dir, "train.log"), "a")
    ckpt_path = os.path.join(args.out_dir, "ckpt.pt")
    tok_path = os.path.join(args.out_dir, "bpe.json")

    # ---- corpus and split
    fortunes = load_fortunes()
    train, held = split_fortunes(fortunes)
    held_text = ""
    n_held = 0
    for t in held:
        cand = held_text + ("\n\n" if held_text else "") + t
        if len((cand + "\n").encode("utf-8")) > args.heldout_max_kb * 1024:
            break
        held_text = cand
        n_held += 1
    held_text += "\n"
    os.makedirs(os.path.dirname(args.heldout) or ".", exist_ok=True)
    with open(args.heldout, "w", encoding="utf-8") as f:
        f.write(held_text)
    train_text = "\n\n".join(train) + "\n"
    log("corpus: %d fortunes from %d files; train %d (%d bytes), held out %d (%d in %s, %d bytes)" %
        (len(fortunes), len(fortune_files()), len(train), len(train_text.encode()), len(held), n_held,
         args.heldout, len(held_text.encode())), logf)

    # ---- tokenizer
    if os.path.exists(tok_path) and not args.fresh:
        with open(tok_path) as f:
            tok = Tokenizer.from_json(json.load(f))
        log("tokenizer loaded from %s" % tok_path, logf)
    else:
        tok = train_bpe(train, args.vocab, logf)
        write_json(tok_path, tok.to_json(), indent=None)

    # ---- model / checkpoint
    cfg = {
        "vocab_size": len(tok.vocab),
        "hidden_size": args.dim,
        "intermediate_size": args.hidden,
        "num_hidden_layers": args.layers,
        "num_attention_heads": args.heads,
        "num_key_value_heads": args.kv_heads,
        "max_position_embeddings": args.ctx,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": not args.untied,
    }
    state = {"step": 0, "elapsed_s": 0.0, "tokens_seen": 0, "train_loss": None,
             "budget_s": args.budget_min * 60, "history": []}
    torch.manual_seed(args.seed)
    ckpt = None
    if os.path.exists(ckpt_path) and not args.fresh:
        ckpt = torch.load(ckpt_path)
        cfg = ckpt["cfg"]
        state = ckpt["state"]
        if args.set_budget_min is not None:
            state["budget_s"] = args.set_budget_min * 60
            log("training budget set to %.1f min" % args.set_budget_min, logf)
        log("resuming from %s at step %d (%.1f min elapsed)" % (ckpt_path, state["step"], state["elapsed_s"] / 60), logf)
    model = Llama(cfg)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
    n_params = count_params(model)
    log("model: %s, %d parameters (%.2f MB as F16)" % (json.dumps(cfg), n_params, n_params * 2 / 1e6), logf)

    held_tokens = tok.encode(held_text, bos=True)
    if args.samples:
        for i, p in enumerate(PROMPTS * ((args.samples + len(PROMPTS) - 1) // len(PROMPTS))):
            if i >= args.samples:
                break
            print("---- prompt %r" % p)
            print(p + sample(f16_rounded(model), tok, p, 120, seed=i))
        return

    if not args.export_only:
        t0 = time.time()
        stream = tok.encode(train_text)
        # token offsets of fortune starts (the token that begins at each
        # fortune's first byte; pre-token boundaries always fall there)
        tok_bytes = np.cumsum([0] + [len(tok.decode_bytes([i])) for i in stream])
        byte_starts, pos = [], 0
        for t in train:
            byte_starts.append(pos)
            pos += len((t + "\n\n").encode("utf-8"))
        starts = np.searchsorted(tok_bytes, np.array(byte_starts)).tolist()
        log("train stream: %d tokens (%.2f bytes/token), %d held-out tokens; encoded in %.1fs" %
            (len(stream), len(train_text.encode()) / len(stream), len(held_tokens), time.time() - t0), logf)
        stream = torch.tensor(stream, dtype=torch.long)
        starts = torch.tensor([s for s in starts if s + args.ctx <= len(stream)], dtype=torch.long)
        train_loop(model, tok, stream, starts, held_tokens, state, cfg, args, ckpt, ckpt_path, logf)

    # ---- export and reference
    export_hf(model, tok, os.path.join(args.out_dir, "hf"))
    log("exported %s" % os.path.join(args.out_dir, "hf"), logf)
    ref = build_reference(model, tok, args.heldout, state, args, logf)
    os.makedirs(os.path.dirname(args.reference) or ".", exist_ok=True)
    write_json(args.reference, ref)
    log("wrote %s" % args.reference, logf)
    m16 = f16_rounded(model)
    samples = []
    for i, p in enumerate(["The", "A man", "Life is", "", "Computers"]):
        s = sample(m16, tok, p, 80, temp=0.8, seed=i)
        samples.append({"prompt": p, "text": p + s})
        log("sample %r: %r" % (p, p + s), logf)
    write_json(os.path.join(args.out_dir, "samples.json"), samples)


def lr_at(step, frac, args):
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    frac = min(max(frac, 0.0), 1.0)
    m = args.min_lr_frac
    return args.lr * (m + (1 - m) * 0.5 * (1 + math.cos(math.pi * frac)))


def train_loop(model, tok, stream, starts, held_tokens, state, cfg, args, ckpt, ckpt_path, logf):
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (decay if p.dim() >= 2 else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    gen = torch.Generator().manual_seed(args.seed + 1)
    if ckpt is not None:
        opt.load_state_dict(ckpt["opt"])
        gen.set_state(ckpt["gen"])
    budget = state["budget_s"]
    T, B = args.ctx, args.batch
    n_stream = len(stream)
    last_eval = state["elapsed_s"]
    last_ckpt = state["elapsed_s"]
    ema = state["train_loss"]
    seg_start = time.time()
    base_elapsed = state["elapsed_s"]
    step_times = []

    def save():
        tmp = ckpt_path + ".tmp"
        torch.save({"cfg": cfg, "state": state, "model": model.state_dict(),
                    "opt": opt.state_dict(), "gen": gen.get_state()}, tmp)
        os.replace(tmp, ckpt_path)

    def evaluate():
        # periodic: the first eval_chunks chunks only (the full file at the end)
        r = llama_cpp_perplexity(model, held_tokens, args.ppl_ctx, tok.bos_id,
                                 max_chunks=args.eval_chunks)
        model.train()
        return r

    # SIGTERM / SIGINT / SIGUSR1: save a checkpoint and stop (rerun to resume)
    stop = []

    def on_signal(signum, frame):
        stop.append(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(sig, on_signal)

    model.train()
    while state["elapsed_s"] < budget:
        if stop:
            save()
            sys.stderr.write("\n")
            log("signal %d: checkpoint saved at step %d (%.1f min elapsed); rerun to resume" %
                (stop[0], state["step"], state["elapsed_s"] / 60), logf)
            sys.exit(3)
        ts = time.time()
        # half the windows start at a fortune, half anywhere; BOS first
        nb = B // 2
        o1 = starts[torch.randint(len(starts), (nb,), generator=gen)]
        o2 = torch.randint(n_stream - T, (B - nb,), generator=gen)
        offs = torch.cat([o1, o2])
        idx = offs[:, None] + torch.arange(T)[None, :]
        y = stream[idx]
        x = torch.cat([torch.full((B, 1), tok.bos_id, dtype=torch.long), y[:, :-1]], dim=1)
        lr = lr_at(state["step"], state["elapsed_s"] / budget, args)
        for g in opt.param_groups:
            g["lr"] = lr
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        state["step"] += 1
        state["tokens_seen"] += B * T
        lv = loss.item()
        ema = lv if ema is None else 0.98 * ema + 0.02 * lv
        state["train_loss"] = ema
        state["elapsed_s"] = base_elapsed + (time.time() - seg_start)
        step_times.append(time.time() - ts)
        frac = min(1.0, state["elapsed_s"] / budget)
        if state["step"] % 5 == 0 or state["step"] < 5:
            sps = len(step_times[-50:]) / max(1e-9, sum(step_times[-50:]))
            bar = "#" * int(30 * frac) + "." * (30 - int(30 * frac))
            sys.stderr.write("\r[%s] %5.1f%% step %d loss %.3f lr %.2e %.2f step/s %.0f tok/s epoch %.2f " %
                             (bar, 100 * frac, state["step"], ema, lr, sps, sps * B * T,
                              state["tokens_seen"] / n_stream))
            sys.stderr.flush()
        if state["step"] % 50 == 0:
            sps = len(step_times[-50:]) / max(1e-9, sum(step_times[-50:]))
            logf.write("%s step %d loss %.4f (ema %.4f) lr %.3e gnorm %.2f %.2f step/s elapsed %.1f min\n" %
                       (time.strftime("%H:%M:%S"), state["step"], lv, ema, lr, float(gn), sps, state["elapsed_s"] / 60))
            logf.flush()
        done = state["elapsed_s"] >= budget
        if state["elapsed_s"] - last_eval >= args.eval_every_min * 60 or done:
            r = evaluate()
            state["history"].append({"step": state["step"], "elapsed_min": round(state["elapsed_s"] / 60, 2),
                                     "train_loss": round(ema, 4), "heldout_ppl": round(r["ppl"], 3)})
            sys.stderr.write("\n")
            log("step %d elapsed %.1f min loss %.4f heldout ppl(c=%d) %.3f +/- %.3f epoch %.2f" %
                (state["step"], state["elapsed_s"] / 60, ema, args.ppl_ctx, r["ppl"], r["error"],
                 state["tokens_seen"] / n_stream), logf)
            last_eval = state["elapsed_s"]
        if state["elapsed_s"] - last_ckpt >= args.ckpt_every_min * 60 or done:
            save()
            last_ckpt = state["elapsed_s"]
    model.eval()
    log("training done: %d steps, %.1f min, %d tokens, train loss %.4f" %
        (state["step"], state["elapsed_s"] / 60, state["tokens_seen"], state["train_loss"]), logf)


if __name__ == "__main__":
    main()
