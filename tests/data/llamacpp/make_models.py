"""Writes the random-weight GGUF files of tests/data/llamacpp with llama.cpp's own
GGUF writer (its gguf-py package), laid out as llama.cpp's convert_hf_to_gguf.py
lays out each family (keys, tensor names and shapes, tied or separate output,
Gemma's +1 already in the norms, Phi-3's fused QKV and gate|up, LongRoPE factors).

    PYTHONPATH=<llama.cpp>/gguf-py python3 make_models.py OUT_DIR [--size small|quant]
        [--tok512 <shared>/models/stories260K/tok512.bin]

small: the F32 files the test runs (n_embd 64); quant: n_embd 256, rows that
k-quants and IQ4_XS take whole, the sources for llama-quantize.  Weights are
random (seeded per family), so the files carry no one's weights.  The tokenizers:
SentencePiece families get the 512-piece vocabulary of llama2.c's tok512.bin;
byte-level BPE families get the first 253 merges of models/ember-demo.gguf's
vocabulary (trained by ember on the fortunes corpus) plus three special tokens."""
import argparse
import os
import struct
import zlib
import sys

import numpy as np

import gguf  # llama.cpp's gguf-py, from PYTHONPATH

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools"))
from gguf_reader import GGUFReader  # noqa: E402  (ember's reader, to take the BPE vocabulary)

N_VOCAB = 512


def spm_vocab(path):
    """llama2.c's tokenizer.bin: max_len, then per piece: f32 score, i32 len, bytes."""
    data = open(path, "rb").read()
    pos = 4
    toks, scores, types = [], [], []
    for i in range(N_VOCAB):
        score, n = struct.unpack_from("<fi", data, pos)
        pos += 8
        piece = data[pos:pos + n].decode("utf-8")
        pos += n
        if i == 0:
            piece, t = "<unk>", gguf.TokenType.UNKNOWN
        elif i in (1, 2):
            piece, t = ("<s>", "</s>")[i - 1], gguf.TokenType.CONTROL
        elif 3 <= i < 259:
            piece, t = "<0x%02X>" % (i - 3), gguf.TokenType.BYTE
        else:
            piece, t = piece.replace(" ", "\u2581"), gguf.TokenType.NORMAL
        toks.append(piece)
        scores.append(score)
        types.append(t)
    return toks, scores, types


def bpe_vocab(specials):
    r = GGUFReader(os.path.join(ROOT, "models", "ember-demo.gguf"))
    toks = list(r.metadata["tokenizer.ggml.tokens"])
    merges = list(r.metadata["tokenizer.ggml.merges"])
    k = N_VOCAB - 256 - len(specials)
    toks = toks[:256 + k] + list(specials)
    types = [gguf.TokenType.NORMAL] * (256 + k) + [gguf.TokenType.CONTROL] * len(specials)
    return toks, merges[:k], types


def rnd(rng, shape, std):
    return (rng.standard_normal(shape) * std).astype(np.float32)


def write(name, out_dir, size, tok512):
    rng = np.random.default_rng(zlib.crc32(("%s-%s" % (name, size)).encode()))
    d = 64 if size == "small" else 256
    n_ff = 128 if size == "small" else 256
    n_head, n_kv = 4, 2
    hd = d // n_head
    # gemma3 needs 6 layers for a global one (default pattern), smollm3 4 for a NoPE one
    n_layer = {"gemma3": 6, "smollm3": 4}.get(name, 2 if size == "small" else 1)
    arch = {"mistral": "llama", "llama3x": "llama"}.get(name, name)
    w = gguf.GGUFWriter(os.path.join(out_dir, "%s-%s-f32.gguf" % (name, size)), arch)
    # (a name holding "phi3" would make llama.cpp look for Phi-3's added tokens)
    w.add_name("ember parity test model, random weights")
    w.add_type(gguf.GGUFType.MODEL)
    t = {}  # tensor name -> numpy array in PyTorch layout [out, in]

    # -- tokenizer ---------------------------------------------------------------------
    if name in ("gemma2", "gemma3", "phi3", "mistral", "llama3x"):
        toks, scores, types = spm_vocab(tok512)
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(toks)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
        if name.startswith("gemma"):
            w.add_pad_token_id(0)
            w.add_add_bos_token(True)
            w.add_add_eos_token(False)
            w.add_add_space_prefix(False)
        elif name == "phi3":
            w.add_pad_token_id(2)
            w.add_add_bos_token(False)
            w.add_add_eos_token(False)
        else:
            w.add_add_bos_token(True)
            w.add_add_eos_token(False)
    else:
        pre, specials = {
            "qwen2": ("qwen2", ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]),
            "qwen3": ("qwen2", ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]),
            "smollm3": ("llama-bpe", ["<|begin_of_text|>", "<|end_of_text|>", "<|im_end|>"]),
            "granite": ("refact", ["<|end_of_text|>", "<fim_prefix>", "<fim_suffix>"]),
        }[name]
        toks, merges, types = bpe_vocab(specials)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(pre)
        w.add_token_list(toks)
        w.add_token_types(types)
        w.add_token_merges(merges)
        first = N_VOCAB - 3
        if name.startswith("qwen"):
            w.add_eos_token_id(first + 2)
            w.add_pad_token_id(first)
            w.add_bos_token_id(first)
            w.add_add_bos_token(False)
        elif name == "smollm3":
            # no add_bos_token key: llama.cpp's default for llama-bpe (add BOS) applies
            w.add_bos_token_id(first)
            w.add_eos_token_id(first + 2)
            w.add_pad_token_id(first + 1)
        else:
            w.add_bos_token_id(first)
            w.add_eos_token_id(first)
            w.add_pad_token_id(first)
            w.add_unk_token_id(first)
            w.add_add_bos_token(False)

    # -- hyperparameters --------------------------------------------------------------
    w.add_block_count(n_layer)
    w.add_embedding_length(d)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    eps = 1e-6
    emb_std, out_gain, qk_gain = 1.0, 2.5, 1.5
    hd_k = hd
    if name == "qwen2":
        w.add_context_length(32768)
        w.add_rope_freq_base(1000000.0)
    elif name == "qwen3":
        hd_k = 2 * hd                      # key_length != n_embd / n_head, as Qwen3 0.6B (128 vs 1024/16)
        w.add_context_length(40960)
        w.add_rope_freq_base(1000000.0)
        w.add_key_length(hd_k)
        w.add_value_length(hd_k)
    elif name == "gemma2":
        w.add_context_length(8192)
        w.add_key_length(hd)
        w.add_value_length(hd)
        w.add_attn_logit_softcapping(3.0)   # scores have std ~2: the cap bends them
        w.add_final_logit_softcapping(4.0)
        w.add_sliding_window(16)             # local layers (even ones) see 16 positions of a 128 chunk
        emb_std = 1.0 / np.sqrt(d)
    elif name == "gemma3":
        w.add_context_length(32768)
        w.add_key_length(hd)
        w.add_value_length(hd)
        w.add_rope_freq_base(1000000.0)      # global layers
        w.add_rope_freq_base_swa(20000.0)    # local layers (llama.cpp's default would be 10000)
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(8.0)       # global layers only
        w.add_sliding_window(24)             # default pattern 6: layers 0-4 local, 5 global
        emb_std = 1.0 / np.sqrt(d)
    elif name == "phi3":
        n_rot = (d // 2) // n_head           # partial_rotary_factor 0.5
        w.add_context_length(256)
        w.add_rope_scaling_orig_ctx_len(64)  # llama.cpp's context (>= 256) exceeds it: long factors
        w.add_rope_dimension_count(n_rot)
        w.add_rope_freq_base(10000.0)
        w.add_sliding_window(32)             # llama.cpp ignores it for phi3
        w.add_rope_scaling_attn_factors(float(np.sqrt(1 + np.log(256 / 64) / np.log(64))))
        long_factors = [1.0, 2.5, 7.0, 20.0] if n_rot == 8 else np.linspace(1.0, 20.0, n_rot // 2)
        t["rope_factors_long.weight"] = np.array(long_factors, dtype=np.float32)
        t["rope_factors_short.weight"] = np.array(np.linspace(1.0, 1.6, n_rot // 2), dtype=np.float32)
    elif name == "smollm3":
        w.add_context_length(65536)
        w.add_rope_freq_base(5000000.0)
        w.add_vocab_size(N_VOCAB)
        w.add_rope_dimension_count(hd)
    elif name == "granite":
        w.add_context_length(4096)
        w.add_rope_freq_base(10000.0)
        w.add_vocab_size(N_VOCAB)
        w.add_rope_dimension_count(hd)
        w.add_attention_scale(0.1)          # instead of 1/sqrt(head_dim) = 0.25 (small) or 0.125
        w.add_embedding_scale(4.0)
        w.add_residual_scale(0.5)
        w.add_logit_scale(0.5)              # logits are divided by it
        emb_std = 0.25
        out_gain = 1.25
    elif name == "mistral":
        w.add_context_length(32768)
        w.add_rope_freq_base(1000000.0)
        w.add_vocab_size(N_VOCAB)
        w.add_rope_dimension_count(hd)
        w.add_sliding_window(32)            # as Mistral's config has; llama.cpp's llama ignores it
    elif name == "llama3x":
        w.add_context_length(131072)
        w.add_rope_freq_base(500000.0)
        w.add_vocab_size(N_VOCAB)
        w.add_rope_dimension_count(hd)
        t["rope_freqs.weight"] = np.array(np.linspace(1.0, 8.0, hd // 2), dtype=np.float32)
    w.add_layer_norm_rms_eps(eps)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)

    # -- weights ----------------------------------------------------------------------
    def norm_w(n, center=1.0):
        return (center + 0.15 * rng.standard_normal(n)).astype(np.float32)

    tied = name in ("qwen2", "gemma2", "gemma3", "smollm3")
    if tied and not name.startswith("gemma"):
        emb_std = out_gain / np.sqrt(d)   # the same matrix makes the logits
    t["token_embd.weight"] = rnd(rng, (N_VOCAB, d), emb_std)
    for i in range(n_layer):
        p = "blk.%d." % i
        t[p + "attn_norm.weight"] = norm_w(d)
        q = rnd(rng, (n_head * hd_k, d), qk_gain / np.sqrt(d))
        k = rnd(rng, (n_kv * hd_k, d), qk_gain / np.sqrt(d))
        v = rnd(rng, (n_kv * hd_k, d), 1.0 / np.sqrt(d))
        if name == "phi3":
            t[p + "attn_qkv.weight"] = np.concatenate([q, k, v], axis=0)
        else:
            t[p + "attn_q.weight"], t[p + "attn_k.weight"], t[p + "attn_v.weight"] = q, k, v
        if name in ("qwen2", "llama3x"):
            t[p + "attn_q.bias"] = rnd(rng, (n_head * hd_k,), 0.5)
            t[p + "attn_k.bias"] = rnd(rng, (n_kv * hd_k,), 0.5)
            t[p + "attn_v.bias"] = rnd(rng, (n_kv * hd_k,), 0.5)
        if name in ("qwen3", "gemma3"):
            t[p + "attn_q_norm.weight"] = norm_w(hd_k, 1.6)
            t[p + "attn_k_norm.weight"] = norm_w(hd_k, 1.6)
        t[p + "attn_output.weight"] = rnd(rng, (d, n_head * hd_k), 1.0 / np.sqrt(n_head * hd_k))
        if name == "llama3x":
            t[p + "attn_output.bias"] = rnd(rng, (d,), 0.3)
        if name.startswith("gemma"):
            t[p + "post_attention_norm.weight"] = norm_w(d)
        t[p + "ffn_norm.weight"] = norm_w(d)
        gate = rnd(rng, (n_ff, d), 1.5 / np.sqrt(d))
        up = rnd(rng, (n_ff, d), 1.5 / np.sqrt(d))
        if name == "phi3":
            t[p + "ffn_up.weight"] = np.concatenate([gate, up], axis=0)   # gate | up, as Phi-3 stores it
        else:
            t[p + "ffn_gate.weight"], t[p + "ffn_up.weight"] = gate, up
        t[p + "ffn_down.weight"] = rnd(rng, (d, n_ff), 2.0 / np.sqrt(n_ff))
        if name.startswith("gemma"):
            t[p + "post_ffw_norm.weight"] = norm_w(d)
    if name.startswith("gemma"):
        t["output_norm.weight"] = norm_w(d, out_gain)   # tied output: the norm sets the logit scale
    else:
        t["output_norm.weight"] = norm_w(d)
    if not tied:
        t["output.weight"] = rnd(rng, (N_VOCAB, d), out_gain / np.sqrt(d))
    for k_, v_ in t.items():
        w.add_tensor(k_, np.ascontiguousarray(v_, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


FAMILIES = ["qwen2", "qwen3", "gemma2", "gemma3", "phi3", "smollm3", "granite", "mistral", "llama3x"]

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--size", choices=["small", "quant"], default="small")
    ap.add_argument("--tok512", default=os.path.join(ROOT, "..", "shared", "models", "stories260K", "tok512.bin"))
    ap.add_argument("families", nargs="*", default=FAMILIES)
    a = ap.parse_args()
    os.makedirs(a.out_dir, exist_ok=True)
    for f in a.families:
        write(f, a.out_dir, a.size, a.tok512)
