#!/usr/bin/python3
"""Convert Llama-family checkpoints (and Qwen2/3, Gemma 2/3, Phi-3, SmolLM3, Granite) to GGUF (numpy only).

usage:
  convert_weights.py SRC -o OUT.gguf [--type f32|f16|bf16|q8_0|q4_0|q4_k|q6_k] [--tokenizer TOK]
                     [--vocab-only] [--name NAME]
  convert_weights.py SRC -o OUT.gguf --type q4_k_m|q5_k_m|iq4_xs|... [--ember PATH] [-t N]
  convert_weights.py --write-checkpoint random:SPEC --format llama2c|hf -o PATH
                     [--tokenizer TOK] [--ckpt-dtype f32|f16|bf16]

SRC is one of
  * a Hugging Face model directory: config.json and model.safetensors or sharded
    safetensors (model.safetensors.index.json); tensor dtypes F32, F16, BF16.  Architectures
    (GGUF general.architecture as llama.cpp's convert_hf_to_gguf.py writes it):
      LlamaForCausalLM, MistralForCausalLM -> llama     Qwen2ForCausalLM -> qwen2
      Qwen3ForCausalLM -> qwen3                        Gemma2ForCausalLM -> gemma2
      Gemma3ForCausalLM, Gemma3ForConditionalGeneration (its text model) -> gemma3
      Phi3ForCausalLM -> phi3     SmolLM3ForCausalLM -> smollm3     GraniteForCausalLM -> granite
    Keys, tensor names and layouts follow llama.cpp's converter (the Family table below):
    Q/K rows are permuted from HF's rotate-half order to adjacent pairs only for the
    families llama.cpp ropes in that order (llama, mistral, smollm3, granite); Gemma norms
    are stored as 1 + w; Phi-3 keeps its fused qkv_proj / gate_up_proj and gets
    rope_factors_long/short; tied heads write no output.weight (Gemma 2 never does).
  * a llama2.c checkpoint .bin (legacy version-0 header; negative vocab_size means an
    unshared classifier).  Not permuted (llama2.c already uses adjacent-pair RoPE).
  * random:dim=64,hidden=172,layers=2,heads=8,kv_heads=4,vocab=512,ctx=256,seed=1
    [,tied=1][,head_dim=N][,eps=1e-5][,theta=10000]: a random-weight model.
  * with --vocab-only: also a bare tokenizer file or directory (any form that
    tools/tokenizer_readers.py reads); placeholder Llama-7B hyperparameters are written.

Tokenizer: --tokenizer FILE|DIR, else for HF: SRC/tokenizer.model (SentencePiece, preferred
like llama.cpp) or SRC/tokenizer.json; for llama2.c: tok<VOCAB>.bin, tokenizer.bin or
tokenizer.model beside the checkpoint.  A random model without --tokenizer gets a synthetic
byte-fallback SentencePiece-style vocabulary of the requested size.

Tensor types (as llama.cpp's convert does for --outtype):
  * 1-D tensors (all norms, rope_freqs) are always F32;
  * 2-D weights take --type when their row length (GGUF ne[0], the input dimension) is a
    multiple of the type's block size (32 for q8_0/q4_0, 256 for q4_k/q6_k); otherwise they
    fall back to Q8_0 for a k-quant when the row length allows it, else to F16 (F32 when
    --type f32).
  * q4_k / q6_k (not offered by llama.cpp's converter) use simple min/max encoders, valid
    for ggml and ember but with more rounding error than llama-quantize's search: they
    are for test files; quantize real models with llama-quantize.
general.file_type: 0 f32, 1 f16, 2 q4_0, 7 q8_0, 14 q4_k (Q4_K_S), 18 q6_k, 32 bf16.

Any other --type that `ember quantize --help` lists (q4_k_m, q5_k_m, q3_k_l, q2_k, q5_0,
iq4_xs, ...: llama-quantize's file types) converts to an F32 file beside OUT (OUT.f32.tmp,
removed afterwards) and hands it to `ember quantize`, which chooses each tensor's type
and quantizes it as llama-quantize does.  The ember binary is --ember PATH, else build/ember
in this script's repository (run `make` first); -t N is passed on as its thread count.
"""

import argparse
import json
import math
import os
import struct
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf_writer as gw  # noqa: E402
import tokenizer_readers as tr  # noqa: E402

TYPES = {"f32": gw.GGML_TYPE_F32, "f16": gw.GGML_TYPE_F16, "bf16": gw.GGML_TYPE_BF16,
         "q4_k": gw.GGML_TYPE_Q4_K, "q6_k": gw.GGML_TYPE_Q6_K,
         "q8_0": gw.GGML_TYPE_Q8_0, "q4_0": gw.GGML_TYPE_Q4_0}


class ConvertError(Exception):
    pass


def log(msg):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


# ---------------------------------------------------------------------------
# Q/K permutation (HF rotate-half <-> GGUF adjacent pairs)
# ---------------------------------------------------------------------------
def permute_qk(w, n_head):
    """llama.cpp's LlamaModel.permute: HF rows -> GGUF rows."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_qk(w, n_head):
    """Inverse of permute_qk: GGUF rows -> HF rows."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# ---------------------------------------------------------------------------
# Hyperparameters
# ---------------------------------------------------------------------------
class HParams:
    def __init__(self, dim, hidden, layers, heads, kv_heads, vocab, ctx, eps=1e-5, theta=10000.0,
                 head_dim=None, tied=True):
        self.dim, self.hidden, self.layers = int(dim), int(hidden), int(layers)
        self.heads, self.kv_heads, self.vocab, self.ctx = int(heads), int(kv_heads), int(vocab), int(ctx)
        self.eps, self.theta = float(eps), float(theta)
        self.head_dim = int(head_dim) if head_dim else None
        self.tied = bool(tied)
        self.rope_scaling = None
        self.write_eps = True
        self.write_theta = True
        self.validate()

    @property
    def hd(self):
        return self.head_dim if self.head_dim else self.dim // self.heads

    def validate(self):
        for k in ("dim", "hidden", "layers", "heads", "kv_heads", "vocab", "ctx"):
            if getattr(self, k) <= 0:
                raise ConvertError("hyperparameter %s must be positive, got %d" % (k, getattr(self, k)))
        if self.heads % self.kv_heads:
            raise ConvertError("heads (%d) must be a multiple of kv_heads (%d)" % (self.heads, self.kv_heads))
        if not self.head_dim and self.dim % self.heads:
            raise ConvertError("dim (%d) is not a multiple of heads (%d)" % (self.dim, self.heads))
        if self.hd % 2:
            raise ConvertError("head dimension %d must be even for RoPE" % self.hd)

    def shapes(self):
        """GGUF tensor name -> numpy shape (out, in), in file order."""
        d, h, hd = self.dim, self.hidden, self.hd
        s = [("token_embd.weight", (self.vocab, d))]
        for i in range(self.layers):
            p = "blk.%d." % i
            s += [(p + "attn_norm.weight", (d,)),
                  (p + "attn_q.weight", (self.heads * hd, d)),
                  (p + "attn_k.weight", (self.kv_heads * hd, d)),
                  (p + "attn_v.weight", (self.kv_heads * hd, d)),
                  (p + "attn_output.weight", (d, self.heads * hd)),
                  (p + "ffn_norm.weight", (d,)),
                  (p + "ffn_gate.weight", (h, d)),
                  (p + "ffn_down.weight", (d, h)),
                  (p + "ffn_up.weight", (h, d))]
        s.append(("output_norm.weight", (d,)))
        if not self.tied:
            s.append(("output.weight", (self.vocab, d)))
        return s


def llama3_rope_factors(rs, head_dim, theta):
    """rope_freqs for rope_scaling type llama3, as llama.cpp's LlamaModel computes them (float32)."""
    f32 = np.float32
    base = theta
    freqs = (f32(1.0) / np.power(f32(base), (np.arange(0, head_dim, 2, dtype=np.float32) / f32(head_dim)))).astype(f32)
    factor = rs.get("factor", 8.0)
    low = rs.get("low_freq_factor", 1.0)
    high = rs.get("high_freq_factor", 4.0)
    old = rs.get("original_max_position_embeddings", 8192)
    low_wl = old / low
    high_wl = old / high
    out = []
    for fr in freqs:
        wl = f32(2 * math.pi) / fr
        if wl < high_wl:
            out.append(1.0)
        elif wl > low_wl:
            out.append(factor)
        else:
            smooth = (f32(old) / wl - f32(low)) / f32(high - low)
            out.append(f32(1) / ((f32(1) - smooth) / f32(factor) + smooth))
    return np.array(out, dtype=np.float32)


# ---------------------------------------------------------------------------
# Sources.  Each yields (gguf_name, numpy shape, loader) with loader() -> float32 array
# in GGUF layout (already permuted).
# ---------------------------------------------------------------------------
class Llama2cSource:
    kind = "llama2c"

    def __init__(self, path):
        self.path = path
        size = os.path.getsize(path)
        if size < 28:
            raise ConvertError("%s: too small for a llama2.c checkpoint" % path)
        with open(path, "rb") as f:
            head = f.read(28)
        if head[:4] == b"ak42":
            raise ConvertError("%s: llama2.c version-1/2 export (magic 'ak42') is not supported; "
                               "use the legacy (version 0) export" % path)
        dim, hidden, layers, heads, kv_heads, vocab, seq = struct.unpack("<7i", head)
        tied = vocab > 0
        vocab = abs(vocab)
        if min(dim, hidden, layers, heads, kv_heads, vocab, seq) <= 0 or dim > 1 << 16 or layers > 1024:
            raise ConvertError("%s: not a llama2.c checkpoint (implausible header %r)"
                               % (path, (dim, hidden, layers, heads, kv_heads, vocab, seq)))
        self.hp = HParams(dim, hidden, layers, heads, kv_heads, vocab, seq, eps=1e-5, theta=10000.0, tied=tied)
        hs = dim // heads
        kv = dim * kv_heads // heads
        L = layers
        blocks = [("tok_emb", (vocab, dim)), ("rms_att", (L, dim)), ("wq", (L, dim, dim)), ("wk", (L, kv, dim)),
                  ("wv", (L, kv, dim)), ("wo", (L, dim, dim)), ("rms_ffn", (L, dim)), ("w1", (L, hidden, dim)),
                  ("w2", (L, dim, hidden)), ("w3", (L, hidden, dim)), ("rms_final", (dim,)),
                  ("freq_cis_real", (seq, hs // 2)), ("freq_cis_imag", (seq, hs // 2))]
        if not tied:
            blocks.append(("wcls", (vocab, dim)))
        n = sum(int(np.prod(s)) for _, s in blocks)
        if size != 28 + 4 * n:
            raise ConvertError("%s: size %d does not match the header (expected %d bytes for dim=%d hidden=%d "
                               "layers=%d heads=%d kv_heads=%d vocab=%d%s seq_len=%d)"
                               % (path, size, 28 + 4 * n, dim, hidden, layers, heads, kv_heads, vocab,
                                  "" if tied else " (unshared classifier)", seq))
        mm = np.memmap(path, dtype="<f4", mode="r", offset=28, shape=(n,))
        self.blocks = {}
        off = 0
        for name, shape in blocks:
            cnt = int(np.prod(shape))
            self.blocks[name] = mm[off:off + cnt].reshape(shape)
            off += cnt

    def tensors(self):
        b = self.blocks
        m = {"attn_norm": "rms_att", "attn_q": "wq", "attn_k": "wk", "attn_v": "wv", "attn_output": "wo",
             "ffn_norm": "rms_ffn", "ffn_gate": "w1", "ffn_down": "w2", "ffn_up": "w3"}
        for name, shape in self.hp.shapes():
            if name == "token_embd.weight":
                src = b["tok_emb"]
            elif name == "output_norm.weight":
                src = b["rms_final"]
            elif name == "output.weight":
                src = b["wcls"]
            else:
                _, i, t, _ = name.split(".")
                src = b[m[t]][int(i)]
            yield name, shape, (lambda s=src: np.asarray(s, dtype=np.float32))


# -- safetensors ----------------------------------------------------------------------
ST_DTYPES = {"F32": "<f4", "F16": "<f2", "BF16": "<u2"}


def read_safetensors_index(path):
    """name -> (file, dtype, shape, start, end) for one .safetensors file."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ConvertError("%s: not a safetensors file (too short)" % path)
        (hlen,) = struct.unpack("<Q", raw)
        if hlen > 100 << 20:
            raise ConvertError("%s: not a safetensors file (header length %d)" % (path, hlen))
        try:
            header = json.loads(f.read(hlen).decode("utf-8"))
        except ValueError as e:
            raise ConvertError("%s: bad safetensors header: %s" % (path, e))
    base = 8 + hlen
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        s, e = info["data_offsets"]
        out[name] = (path, info["dtype"], tuple(info["shape"]), base + s, base + e)
    return out


def load_safetensor(entry):
    path, dtype, shape, start, end = entry
    if dtype not in ST_DTYPES:
        raise ConvertError("%s: tensor dtype %s is not supported (F32, F16, BF16 are)" % (path, dtype))
    n = int(np.prod(shape)) if shape else 1
    dt = np.dtype(ST_DTYPES[dtype])
    if end - start != n * dt.itemsize:
        raise ConvertError("%s: tensor byte size %d does not match shape %s" % (path, end - start, shape))
    mm = np.memmap(path, dtype=dt, mode="r", offset=start, shape=(n,))
    if dtype == "BF16":
        a = gw.bf16_bits_to_fp32(mm)
    else:
        a = mm.astype(np.float32)
    return a.reshape(shape)


# -- Hugging Face families ------------------------------------------------------------
class Family:
    """What llama.cpp's convert_hf_to_gguf.py does differently for one HF architecture.

    arch: GGUF general.architecture.  permute: Q/K rows (and biases) reordered to adjacent
    pairs (architectures llama.cpp ropes in NORM mode); NEOX families keep HF's order.
    gemma_norms: every `*norm.weight` is stored as 1 + w (Gemma's RMSNorm multiplies by
    1 + w).  post_norms: Gemma's sandwich norms (post_attention_norm, ffn_norm = the
    pre-FFN norm, post_ffw_norm).  fused: Phi-3's qkv_proj / gate_up_proj are kept fused.
    head_dim: "config" (config head_dim, else dim/heads) or "dim/heads" (the converter
    ignores a config head_dim).  defaults: transformers' config defaults (llama.cpp reads
    the config through AutoConfig, which fills them in)."""

    def __init__(self, arch, permute=False, gemma_norms=False, post_norms=False, fused=False,
                 head_dim="config", keep_lm_head=True, defaults=None):
        self.arch, self.permute, self.gemma_norms, self.post_norms = arch, permute, gemma_norms, post_norms
        self.fused, self.head_dim, self.keep_lm_head = fused, head_dim, keep_lm_head
        self.defaults = dict(defaults or {})


_LLAMA_DEFAULTS = dict(rms_norm_eps=1e-6, rope_theta=10000.0, max_position_embeddings=2048)
_GEMMA2_DEFAULTS = dict(head_dim=256, rms_norm_eps=1e-6, rope_theta=10000.0, max_position_embeddings=8192,
                        query_pre_attn_scalar=256, sliding_window=4096, final_logit_softcapping=30.0,
                        attn_logit_softcapping=50.0, tie_word_embeddings=True, num_key_value_heads=None)
_GEMMA3_DEFAULTS = dict(vocab_size=262208, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                        num_attention_heads=8, num_key_value_heads=4, head_dim=256, rms_norm_eps=1e-6,
                        rope_theta=1000000.0, rope_local_base_freq=10000.0, max_position_embeddings=131072,
                        query_pre_attn_scalar=256, sliding_window=4096, sliding_window_pattern=6,
                        tie_word_embeddings=True)
FAMILIES = {
    "LlamaForCausalLM": Family("llama", permute=True, defaults=_LLAMA_DEFAULTS),
    "LLaMAForCausalLM": Family("llama", permute=True, defaults=_LLAMA_DEFAULTS),
    "LlamaModel": Family("llama", permute=True, defaults=_LLAMA_DEFAULTS),
    "MistralForCausalLM": Family("llama", permute=True, defaults=dict(_LLAMA_DEFAULTS, max_position_embeddings=131072)),
    "Qwen2ForCausalLM": Family("qwen2", defaults=dict(rope_theta=10000.0, rms_norm_eps=1e-6,
                                                      max_position_embeddings=32768)),
    "Qwen3ForCausalLM": Family("qwen3", defaults=dict(rope_theta=10000.0, rms_norm_eps=1e-6, head_dim=128,
                                                      max_position_embeddings=32768)),
    "Gemma2ForCausalLM": Family("gemma2", gemma_norms=True, post_norms=True, keep_lm_head=False,
                                defaults=_GEMMA2_DEFAULTS),
    "Gemma3ForCausalLM": Family("gemma3", gemma_norms=True, post_norms=True, defaults=_GEMMA3_DEFAULTS),
    "Gemma3ForConditionalGeneration": Family("gemma3", gemma_norms=True, post_norms=True,
                                             defaults=_GEMMA3_DEFAULTS),
    "Phi3ForCausalLM": Family("phi3", fused=True, head_dim="dim/heads",
                              defaults=dict(rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=4096)),
    "SmolLM3ForCausalLM": Family("smollm3", permute=True,
                                 defaults=dict(rope_theta=2000000.0, rms_norm_eps=1e-6, max_position_embeddings=32768,
                                               no_rope_layer_interval=4)),
    "GraniteForCausalLM": Family("granite", permute=True, head_dim="dim/heads",
                                 defaults=dict(rms_norm_eps=1e-6, rope_theta=10000.0, max_position_embeddings=2048,
                                               embedding_multiplier=1.0, logits_scaling=1.0,
                                               residual_multiplier=1.0, attention_multiplier=1.0)),
}
HF_ARCHS = tuple(FAMILIES)

# HF per-layer tensor (after "model.layers.N.") -> GGUF per-layer name
_HF_LAYER = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "self_attn.qkv_proj": "attn_qkv",
    "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
    "post_attention_layernorm": "ffn_norm",          # llama-like; Gemma: post_attention_norm
    "pre_feedforward_layernorm": "ffn_norm", "post_feedforward_layernorm": "post_ffw_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down", "mlp.gate_up_proj": "ffn_up",
}
# multimodal checkpoints: parts that are not the language model
_NOT_TEXT = ("vision_tower.", "multi_modal_projector.", "model.vision_tower.", "model.multi_modal_projector.",
             "vision_model.", "model.vision_model.")


def _legacy_rope_keys(cfg):
    """transformers >= 5 writes `rope_parameters` ({rope_theta, rope_type, ...}, or one such
    dict per attention type) where older configs have rope_theta / rope_scaling /
    rope_local_base_freq; llama.cpp reads both.  Returns cfg with the older keys."""
    rp = cfg.get("rope_parameters")
    if not isinstance(rp, dict):
        return cfg
    cfg = dict(cfg)
    full = rp.get("full_attention", rp)
    if "sliding_attention" in rp and rp["sliding_attention"].get("rope_theta") is not None:
        cfg.setdefault("rope_local_base_freq", rp["sliding_attention"]["rope_theta"])
    if full.get("rope_theta") is not None:
        cfg.setdefault("rope_theta", full["rope_theta"])
    for k in ("partial_rotary_factor", "original_max_position_embeddings"):
        if full.get(k) is not None:
            cfg.setdefault(k, full[k])
    if full.get("rope_type", full.get("type", "default")) != "default" and cfg.get("rope_scaling") is None:
        cfg["rope_scaling"] = {k: v for k, v in full.items() if k != "rope_theta"}
    return cfg


def _text_name(name):
    """A tensor name of the language model with multimodal prefixes removed (None: not text)."""
    if name.startswith(_NOT_TEXT):
        return None
    if name.startswith("model.language_model."):
        return "model." + name[len("model.language_model."):]
    if name.startswith("language_model."):
        return name[len("language_model."):]
    return name


class HFSource:
    kind = "hf"

    def __init__(self, path):
        self.path = path
        cfgp = os.path.join(path, "config.json")
        try:
            with open(cfgp, encoding="utf-8") as f:
                cfg = json.load(f)
        except ValueError as e:
            raise ConvertError("%s: invalid JSON: %s" % (cfgp, e))
        archs = cfg.get("architectures") or ["LlamaForCausalLM"]
        if archs[0] not in FAMILIES:
            raise ConvertError("%s: architecture %s is not supported (supported: %s)"
                               % (cfgp, archs[0], ", ".join(HF_ARCHS)))
        self.hf_arch = archs[0]
        fam = self.family = FAMILIES[archs[0]]
        if isinstance(cfg.get("text_config"), dict):
            cfg = dict(cfg, **cfg["text_config"])     # the language model of a multimodal checkpoint
        cfg = _legacy_rope_keys(cfg)
        self.cfg = cfg = dict(fam.defaults, **{k: v for k, v in cfg.items() if v is not None})
        self.arch = fam.arch

        def need(*keys):
            for k in keys:
                if k in cfg and cfg[k] is not None:
                    return cfg[k]
            raise ConvertError("%s: missing required key %s" % (cfgp, " / ".join(keys)))

        dim = need("hidden_size", "dim", "n_embd")
        hidden = need("intermediate_size")
        layers = need("num_hidden_layers", "n_layers")
        heads = need("num_attention_heads", "n_heads")
        kv = cfg.get("num_key_value_heads") or heads
        vocab = need("vocab_size")
        ctx = cfg.get("max_position_embeddings") or 2048
        head_dim = cfg.get("head_dim") if fam.head_dim == "config" else None
        hp = HParams(dim, hidden, layers, heads, kv, vocab, ctx, eps=cfg.get("rms_norm_eps") or 1e-6,
                     theta=cfg.get("rope_theta") or 10000.0, head_dim=head_dim,
                     tied=bool(cfg.get("tie_word_embeddings", False)))
        hp.write_eps = "rms_norm_eps" in cfg
        hp.write_theta = "rope_theta" in cfg
        rs = cfg.get("rope_scaling")
        if isinstance(rs, dict):
            rtype = rs.get("rope_type", rs.get("type"))
            ok = {"phi3": ("longrope", "su", "default", None), "llama": ("llama3", "linear", "default", None)}.get(
                fam.arch, ("linear", "default", None))
            if rtype not in ok:
                raise ConvertError("%s: rope_scaling type %r is not supported for %s (supported: %s)"
                                   % (cfgp, rtype, self.hf_arch, ", ".join(str(t) for t in ok if t)))
            hp.rope_scaling = dict(rs, rope_type=rtype)
        self.hp = hp
        self.rot = self._rope_dims(cfgp)
        self.entries = self._index(path)
        names = {}
        for name in self.entries:
            t = _text_name(name)
            if t is not None and not t.endswith("rotary_emb.inv_freq"):
                names[t] = name
        if "lm_head.weight" in names and fam.keep_lm_head:
            hp.tied = False
        else:
            names.pop("lm_head.weight", None)    # Gemma 2: llama.cpp never writes it (always tied)
            hp.tied = True
        self.vocab_rows = vocab      # the checkpoint's embedding rows (hp.vocab may drop some: truncate_vocab)
        # map names and check shapes now so errors come before any output is written
        want = dict(self.shapes())
        self.map = {}
        for t, name in names.items():
            g = self._gguf_name(t)
            if g is None:
                raise ConvertError("%s: cannot map tensor %r to a GGUF name" % (path, name))
            if g not in want:
                raise ConvertError("%s: tensor %r (-> %s) does not belong to a %d-layer %s model"
                                   % (path, name, g, hp.layers, self.hf_arch))
            e = self.entries[name]
            if tuple(e[2]) != tuple(want[g]):
                raise ConvertError("%s: tensor %s has shape %s, expected %s from config.json"
                                   % (path, name, list(e[2]), list(want[g])))
            if e[1] not in ST_DTYPES:
                raise ConvertError("%s: tensor %s has dtype %s; supported: F32, F16, BF16" % (path, name, e[1]))
            self.map[g] = name
        missing = [g for g in self.required() if g not in self.map]
        if missing:
            raise ConvertError("%s: missing tensors: %s" % (path, ", ".join(missing[:8])))
        self._check_patterns(cfgp)

    # -- configuration ------------------------------------------------------------
    def _rope_dims(self, cfgp):
        hp, cfg = self.hp, self.cfg
        if self.arch == "phi3":
            rs = cfg.get("rope_scaling") or {}
            pct = rs.get("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0))
            rot = int(pct * hp.dim) // hp.heads
            if rot % 2 or rot <= 0 or rot > hp.hd:
                raise ConvertError("%s: partial_rotary_factor %s gives %d rotary dimensions" % (cfgp, pct, rot))
            return rot
        return hp.hd

    @staticmethod
    def _index(path):
        idx = os.path.join(path, "model.safetensors.index.json")
        single = os.path.join(path, "model.safetensors")
        entries = {}
        if os.path.isfile(idx):
            with open(idx, encoding="utf-8") as f:
                wm = json.load(f).get("weight_map", {})
            for fn in sorted(set(wm.values())):
                p = os.path.join(path, fn)
                if not os.path.isfile(p):
                    raise ConvertError("%s: shard %s listed in the index is missing" % (path, fn))
                entries.update(read_safetensors_index(p))
        elif os.path.isfile(single):
            entries = read_safetensors_index(single)
        else:
            shards = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
            if not shards:
                if any(f.endswith((".bin", ".pt", ".pth")) for f in os.listdir(path)):
                    raise ConvertError("%s: only PyTorch pickle weights found; safetensors are required" % path)
                raise ConvertError("%s: no model.safetensors found" % path)
            for s in shards:
                entries.update(read_safetensors_index(os.path.join(path, s)))
        return entries

    def _check_patterns(self, cfgp):
        """Layer patterns llama.cpp does not read from the file: warn where the config differs."""
        cfg, L = self.cfg, self.hp.layers
        lt = cfg.get("layer_types")
        if self.arch == "gemma3" and self._sliding_window():
            want = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(L)]
            got = lt or ["full_attention" if (i + 1) % int(cfg.get("sliding_window_pattern", 6)) == 0
                         else "sliding_attention" for i in range(L)]
            if list(got) != want:
                log("warning: %s: sliding layers %s differ from llama.cpp's fixed gemma3 pattern (every 6th "
                    "layer global); the GGUF will follow llama.cpp's" % (cfgp, got))
        if self.arch == "gemma2" and lt:
            want = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(L)]
            if list(lt) != want:
                log("warning: %s: layer_types differ from llama.cpp's gemma2 pattern (even layers sliding)" % cfgp)
        if self.arch == "smollm3":
            nr = cfg.get("no_rope_layers")
            step = int(cfg.get("no_rope_layer_interval", 4))
            want = [int((i + 1) % 4 != 0) for i in range(L)]
            got = list(nr) if nr else [int((i + 1) % step != 0) for i in range(L)]
            if got != want:
                log("warning: %s: no_rope_layers %s differ from llama.cpp's smollm3 rule (every 4th layer "
                    "without RoPE)" % (cfgp, got))

    def _sliding_window(self):
        cfg = self.cfg
        if self.arch == "gemma3" and cfg.get("sliding_window_pattern") == 1:
            return 0
        return int(cfg.get("sliding_window") or 0)

    def arch_keys(self):
        """(key without the '<arch>.' prefix, gguf type, value) as llama.cpp's converter writes them."""
        hp, cfg, a = self.hp, self.cfg, self.arch
        U, F = gw.GGUF_TYPE_UINT32, gw.GGUF_TYPE_FLOAT32
        k = [("context_length", U, hp.ctx), ("embedding_length", U, hp.dim), ("feed_forward_length", U, hp.hidden),
             ("block_count", U, hp.layers), ("attention.head_count", U, hp.heads),
             ("attention.head_count_kv", U, hp.kv_heads), ("attention.layer_norm_rms_epsilon", F, hp.eps)]
        rs = hp.rope_scaling or {}
        rtype = rs.get("rope_type")
        if a == "phi3":
            orig = cfg.get("original_max_position_embeddings") or rs.get("original_max_position_embeddings") or hp.ctx
            k += [("rope.scaling.original_context_length", U, orig), ("rope.dimension_count", U, self.rot),
                  ("rope.freq_base", F, hp.theta), ("attention.sliding_window", U, int(cfg.get("sliding_window") or 0))]
            if rs.get("long_factor"):
                scale = hp.ctx / orig
                attn = math.sqrt(1 + math.log(scale) / math.log(orig)) if scale > 1.0 else 1.0
                k.append(("rope.scaling.attn_factor", F, attn))
            return k
        if a not in ("gemma2",):
            if rtype == "linear" and rs.get("factor") is not None:
                k += [("rope.scaling.type", gw.GGUF_TYPE_STRING, "linear"), ("rope.scaling.factor", F, rs["factor"])]
            if hp.write_theta:
                k.append(("rope.freq_base", F, hp.theta))
        if a in ("gemma2", "gemma3") or (cfg.get("head_dim") is not None and self.family.head_dim == "config"):
            k += [("attention.key_length", U, hp.hd), ("attention.value_length", U, hp.hd)]
        if a in ("llama", "smollm3", "granite"):
            k += [("vocab_size", U, hp.vocab), ("rope.dimension_count", U, hp.hd)]
        if a == "granite":
            k += [("attention.scale", F, cfg["attention_multiplier"]), ("embedding_scale", F, cfg["embedding_multiplier"]),
                  ("residual_scale", F, cfg["residual_multiplier"]), ("logit_scale", F, cfg["logits_scaling"])]
        if a == "gemma2":
            if hp.theta != 10000.0:
                # llama.cpp's converter drops rope_theta for Gemma 2 (its graph assumes 10000); keep a
                # different value, which llama.cpp reads too
                k.append(("rope.freq_base", F, hp.theta))
            k += [("attn_logit_softcapping", F, cfg["attn_logit_softcapping"]),
                  ("final_logit_softcapping", F, cfg["final_logit_softcapping"]),
                  ("attention.sliding_window", U, int(cfg["sliding_window"]))]
        if a == "gemma3":
            k.append(("rope.freq_base_swa", F, cfg.get("rope_local_base_freq", 10000.0)))
            if cfg.get("final_logit_softcapping"):
                k.append(("final_logit_softcapping", F, cfg["final_logit_softcapping"]))
            if self._sliding_window():
                k.append(("attention.sliding_window", U, self._sliding_window()))
        return k

    # -- tensors --------------------------------------------------------------------
    def shapes(self):
        """GGUF tensor name -> numpy shape, in file order (optional tensors included)."""
        hp, fam = self.hp, self.family
        d, f, hd, H, KV = hp.dim, hp.hidden, hp.hd, hp.heads, hp.kv_heads
        s = [("token_embd.weight", (self.vocab_rows, d))]
        for i in range(hp.layers):
            p = "blk.%d." % i
            s.append((p + "attn_norm.weight", (d,)))
            if fam.fused:
                s.append((p + "attn_qkv.weight", ((H + 2 * KV) * hd, d)))
            else:
                s += [(p + "attn_q.weight", (H * hd, d)), (p + "attn_q.bias", (H * hd,)),
                      (p + "attn_k.weight", (KV * hd, d)), (p + "attn_k.bias", (KV * hd,)),
                      (p + "attn_v.weight", (KV * hd, d)), (p + "attn_v.bias", (KV * hd,))]
            s += [(p + "attn_q_norm.weight", (hd,)), (p + "attn_k_norm.weight", (hd,)),
                  (p + "attn_output.weight", (d, H * hd)), (p + "attn_output.bias", (d,))]
            if fam.post_norms:
                s.append((p + "post_attention_norm.weight", (d,)))
            s.append((p + "ffn_norm.weight", (d,)))
            if fam.fused:
                s.append((p + "ffn_up.weight", (2 * f, d)))
            else:
                s += [(p + "ffn_gate.weight", (f, d)), (p + "ffn_up.weight", (f, d))]
            s.append((p + "ffn_down.weight", (d, f)))
            if self.arch == "llama":      # llama.cpp's llama graph takes optional FFN biases (mlp_bias)
                s += [(p + "ffn_gate.bias", (f,)), (p + "ffn_up.bias", (f,)), (p + "ffn_down.bias", (d,))]
            if fam.post_norms:
                s.append((p + "post_ffw_norm.weight", (d,)))
        s.append(("output_norm.weight", (d,)))
        s.append(("output.weight", (self.vocab_rows, d)))
        return s

    def required(self):
        a = self.arch
        out = []
        for g, _ in self.shapes():
            if g.endswith(".bias") and not (a == "qwen2" and ".attn_output." not in g):
                continue
            if g.endswith(("attn_q_norm.weight", "attn_k_norm.weight")) and a not in ("qwen3", "gemma3"):
                continue
            if g == "output.weight" and self.hp.tied:
                continue
            out.append(g)
        return out

    def _gguf_name(self, name):
        simple = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                  "lm_head.weight": "output.weight", "embed_tokens.weight": "token_embd.weight",
                  "norm.weight": "output_norm.weight"}
        if name in simple:
            return simple[name]
        parts = name.split(".")
        if parts[0] == "model":
            parts = parts[1:]
        if len(parts) < 4 or parts[0] != "layers" or parts[-1] not in ("weight", "bias"):
            return None
        sub = ".".join(parts[2:-1])
        g = _HF_LAYER.get(sub)
        if g is None:
            return None
        if sub == "post_attention_layernorm" and self.family.post_norms:
            g = "post_attention_norm"
        return "blk.%s.%s.%s" % (parts[1], g, parts[-1])

    def truncate_vocab(self, n):
        """Gemma 3: llama.cpp keeps only the embedding rows the tokenizer has."""
        self.hp.vocab = n

    def tensors(self):
        hp, fam = self.hp, self.family
        have = set(self.map)
        for g, shape in self.shapes():
            if g not in have:
                continue
            e = self.entries[self.map[g]]
            steps = []
            if fam.permute and (".attn_q." in g or ".attn_k." in g):
                steps.append(lambda a, n=(hp.heads if ".attn_q." in g else hp.kv_heads): permute_qk(a, n))
            if fam.gemma_norms and g.endswith("norm.weight"):
                steps.append(lambda a: a + np.float32(1))
            if g in ("token_embd.weight", "output.weight") and e[2][0] != hp.vocab:
                steps.append(lambda a, n=hp.vocab: a[:n])
                shape = (hp.vocab, shape[1])

            def load(e=e, steps=tuple(steps)):
                a = load_safetensor(e)
                for st in steps:
                    a = st(a)
                return np.ascontiguousarray(a, dtype=np.float32)
            yield g, shape, load
        rs = hp.rope_scaling or {}
        if self.arch == "phi3" and rs.get("long_factor"):
            for key, n in (("long_factor", "rope_factors_long.weight"), ("short_factor", "rope_factors_short.weight")):
                v = rs.get(key)
                if not v or len(v) != self.rot // 2:
                    raise ConvertError("%s: rope_scaling.%s must have %d values" % (self.path, key, self.rot // 2))
                yield n, (self.rot // 2,), (lambda v=v: np.asarray(v, dtype=np.float32))


# -- random model ---------------------------------------------------------------------
def parse_random_spec(spec):
    if not spec.startswith("random:"):
        raise ConvertError("random source must look like random:dim=64,hidden=172,...")
    kv = {}
    for part in spec[len("random:"):].split(","):
        if not part:
            continue
        if "=" not in part:
            raise ConvertError("random spec: %r is not key=value" % part)
        k, v = part.split("=", 1)
        kv[k.strip()] = v.strip()
    known = {"dim", "hidden", "layers", "heads", "kv_heads", "vocab", "ctx", "seed", "tied", "head_dim", "eps", "theta"}
    bad = set(kv) - known
    if bad:
        raise ConvertError("random spec: unknown keys %s (known: %s)" % (", ".join(sorted(bad)), ", ".join(sorted(known))))
    try:
        return dict(dim=int(kv.get("dim", 64)), hidden=int(kv.get("hidden", 172)), layers=int(kv.get("layers", 2)),
                    heads=int(kv.get("heads", 8)), kv_heads=int(kv.get("kv_heads", kv.get("heads", 8))),
                    vocab=int(kv["vocab"]) if "vocab" in kv else None, ctx=int(kv.get("ctx", 256)),
                    seed=int(kv.get("seed", 1)), tied=bool(int(kv.get("tied", 0))),
                    head_dim=int(kv["head_dim"]) if "head_dim" in kv else None,
                    eps=float(kv.get("eps", 1e-5)), theta=float(kv.get("theta", 10000.0)))
    except ValueError as e:
        raise ConvertError("random spec: bad value: %s" % e)


def synthetic_spm_vocab(n):
    """A complete byte-fallback SentencePiece-style vocabulary of n tokens."""
    if n < 3:
        raise ConvertError("vocab must be at least 3 for a synthetic vocabulary")
    toks = ["<unk>", "<s>", "</s>"]
    types = [tr.TT_UNKNOWN, tr.TT_CONTROL, tr.TT_CONTROL]
    for b in range(256):
        if len(toks) >= n:
            break
        toks.append("<0x%02X>" % b)
        types.append(tr.TT_BYTE)
    alpha = [tr.SPIECE_UNDERLINE] + list("etaoinshrdlucmfwygpbvkxqjz") + list("ETAOINSHRDLUCMFWYGPBVKXQJZ0123456789.,!?'\"-")
    seen = set(toks)
    frontier = list(alpha)
    while len(toks) < n:
        nxt = []
        for s in frontier:
            if len(toks) >= n:
                break
            if s not in seen:
                seen.add(s)
                toks.append(s)
                types.append(tr.TT_NORMAL)
            nxt.extend(s + c for c in alpha[:12])
        frontier = nxt
    scores = [0.0 if t != tr.TT_NORMAL else -float(i - 259) for i, t in enumerate(types)]
    tok = tr.Tokenizer("llama", "default", toks, types, scores=scores, form="synthetic")
    tok.special.update(bos=1, eos=2, unk=0)
    tok.add_bos, tok.add_eos, tok.add_space_prefix = True, False, True
    return tok


class RandomSource:
    kind = "random"

    def __init__(self, spec, tokenizer=None):
        p = parse_random_spec(spec)
        vocab = p["vocab"]
        if tokenizer is not None:
            if vocab is None:
                vocab = len(tokenizer)
            elif vocab < len(tokenizer):
                raise ConvertError("random spec vocab=%d is smaller than the tokenizer (%d tokens)"
                                   % (vocab, len(tokenizer)))
        if vocab is None:
            vocab = 512
        self.seed = p["seed"]
        self.hp = HParams(p["dim"], p["hidden"], p["layers"], p["heads"], p["kv_heads"], vocab, p["ctx"],
                          eps=p["eps"], theta=p["theta"], head_dim=p["head_dim"], tied=p["tied"])
        self.name = "random-d%d-l%d" % (self.hp.dim, self.hp.layers)

    def _gen(self, index, name, shape):
        hp = self.hp
        rng = np.random.default_rng([self.seed, index])
        if len(shape) == 1:
            return (1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
        if name == "token_embd.weight":
            std = 1.0
        else:
            std = 1.0 / math.sqrt(shape[1])
            if name.endswith(("attn_output.weight", "ffn_down.weight")):
                std /= math.sqrt(2.0 * hp.layers)
        out = rng.standard_normal(shape, dtype=np.float32)
        out *= np.float32(std)
        return out

    def tensors(self):
        for i, (name, shape) in enumerate(self.hp.shapes()):
            yield name, shape, (lambda i=i, n=name, s=shape: self._gen(i, n, s))


# ---------------------------------------------------------------------------
# Writing GGUF
# ---------------------------------------------------------------------------
def choose_type(shape, want):
    if len(shape) <= 1:
        return gw.GGML_TYPE_F32
    bs = gw.block_size(want)
    if shape[-1] % bs == 0:
        return want
    if want in (gw.GGML_TYPE_Q4_K, gw.GGML_TYPE_Q6_K) and shape[-1] % gw.block_size(gw.GGML_TYPE_Q8_0) == 0:
        return gw.GGML_TYPE_Q8_0
    return gw.GGML_TYPE_F32 if want == gw.GGML_TYPE_F32 else gw.GGML_TYPE_F16


def _producer(loader, qtype, shape):
    def gen():
        a = loader()
        if tuple(a.shape) != tuple(shape):
            raise ConvertError("tensor has shape %s, expected %s" % (a.shape, shape))
        if qtype == gw.GGML_TYPE_F32:
            yield np.ascontiguousarray(a, dtype=np.float32)
            return
        # quantize in row chunks of ~16M values to bound memory
        a2 = a.reshape(-1, shape[-1]) if len(shape) > 1 else a.reshape(1, -1)
        step = max(1, (16 << 20) // a2.shape[1])
        for r in range(0, a2.shape[0], step):
            yield gw.quantize(np.asarray(a2[r:r + step], dtype=np.float32), qtype)
    return gen


def add_hparams(w, hp, name, ftype, src=None):
    """general.* and <arch>.* keys; an HF source says which (as llama.cpp's converter writes them)."""
    arch = src.arch if src is not None and hasattr(src, "arch_keys") else "llama"
    w.add_string("general.architecture", arch)
    w.add_string("general.type", "model")
    w.add_string("general.name", name)
    if arch != "llama" or hasattr(src, "arch_keys"):
        for key, vt, v in src.arch_keys():
            w.add("%s.%s" % (arch, key), v, vt)
        w.add_uint32("general.file_type", ftype)
        if ftype in (gw.LLAMA_FTYPE_MOSTLY_Q4_0, gw.LLAMA_FTYPE_MOSTLY_Q8_0):
            w.add_uint32("general.quantization_version", 2)
        return
    w.add_uint32("llama.block_count", hp.layers)
    w.add_uint32("llama.context_length", hp.ctx)
    w.add_uint32("llama.embedding_length", hp.dim)
    w.add_uint32("llama.feed_forward_length", hp.hidden)
    w.add_uint32("llama.attention.head_count", hp.heads)
    w.add_uint32("llama.attention.head_count_kv", hp.kv_heads)
    if hp.write_theta:
        w.add_float32("llama.rope.freq_base", hp.theta)
    if hp.write_eps:
        w.add_float32("llama.attention.layer_norm_rms_epsilon", hp.eps)
    if hp.head_dim and hp.head_dim != hp.dim // hp.heads:
        w.add_uint32("llama.attention.key_length", hp.head_dim)
        w.add_uint32("llama.attention.value_length", hp.head_dim)
    rs = hp.rope_scaling
    if rs and rs.get("rope_type") == "linear" and rs.get("factor") is not None:
        w.add_string("llama.rope.scaling.type", "linear")
        w.add_float32("llama.rope.scaling.factor", rs["factor"])
    w.add_uint32("general.file_type", ftype)
    w.add_uint32("llama.vocab_size", hp.vocab)
    w.add_uint32("llama.rope.dimension_count", hp.hd)
    if ftype not in (gw.LLAMA_FTYPE_ALL_F32, gw.LLAMA_FTYPE_MOSTLY_F16, gw.LLAMA_FTYPE_MOSTLY_BF16):
        w.add_uint32("general.quantization_version", 2)


def add_tokenizer(w, tok):
    for k, v in tok.meta.items():
        w.add(k, v)


def find_tokenizer(src, explicit):
    if explicit:
        return explicit
    if src.kind == "hf":
        for n in ("tokenizer.model", "tokenizer.json"):
            p = os.path.join(src.path, n)
            if os.path.isfile(p):
                return src.path
        for n in ("encoder.json", "vocab.json"):
            if os.path.isfile(os.path.join(src.path, n)):
                return os.path.join(src.path, n)
        raise ConvertError("%s: no tokenizer.model or tokenizer.json; pass --tokenizer" % src.path)
    if src.kind == "llama2c":
        d = os.path.dirname(os.path.abspath(src.path))
        for n in ("tok%d.bin" % src.hp.vocab, "tokenizer.bin", "tokenizer.model"):
            p = os.path.join(d, n)
            if os.path.isfile(p):
                return p
        raise ConvertError("%s: no tokenizer found beside the checkpoint (tok%d.bin, tokenizer.bin, "
                           "tokenizer.model); pass --tokenizer" % (src.path, src.hp.vocab))
    return None


def load_tokenizer(path, vocab_size):
    try:
        return tr.read_tokenizer(path, vocab_size=vocab_size)
    except tr.TokenizerError as e:
        raise ConvertError(str(e))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise ConvertError("%s: cannot read tokenizer: %s" % (path, e))


def open_source(src, tokenizer_path=None):
    if src.startswith("random:"):
        tok = load_tokenizer(tokenizer_path, None) if tokenizer_path else None
        s = RandomSource(src, tok)
        if tok is None:
            tok = synthetic_spm_vocab(s.hp.vocab)
        else:
            tok.pad_to(s.hp.vocab)
        s.tokenizer = tok
        return s
    if os.path.isdir(src):
        if not os.path.isfile(os.path.join(src, "config.json")):
            raise ConvertError("%s: directory has no config.json (not a Hugging Face model)" % src)
        s = HFSource(src)
    elif os.path.isfile(src):
        s = Llama2cSource(src)
    else:
        raise ConvertError("%s: no such file or directory" % src)
    if s.kind == "hf" and s.arch == "gemma3":
        # llama.cpp drops the embedding rows beyond the tokenizer's tokens (Gemma 3 pads its matrix)
        tok = load_tokenizer(find_tokenizer(s, tokenizer_path), None)
        if len(tok) < s.hp.vocab:
            s.truncate_vocab(len(tok))
        tok.pad_to(s.hp.vocab)
        s.tokenizer = tok
    else:
        s.tokenizer = load_tokenizer(find_tokenizer(s, tokenizer_path), s.hp.vocab)
    if s.kind == "hf" and s.arch in ("gemma2", "gemma3") and s.tokenizer.model == "llama":
        s.tokenizer.add_space_prefix = False     # as llama.cpp's Gemma converters set it
    return s


def default_ember():
    """build/ember of the repository this script is in"""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "build", "ember")


def convert_and_quantize(src_spec, out, type_name, tokenizer=None, name=None, quiet=False, ember=None, threads=None):
    """Convert to F32 beside out, then `ember quantize` it to type_name (a type the converter
    does not make itself; ember checks the name)."""
    ember = ember or default_ember()
    if not os.access(ember, os.X_OK):
        raise ConvertError("--type %s needs the ember binary to quantize: %s not found (run make, or pass --ember PATH)"
                           % (type_name, ember))
    # the names ember knows, asked before a long conversion rather than after
    r = subprocess.run([ember, "quantize", "--help"], capture_output=True, text=True)
    known = [l.split()[1:] for l in r.stdout.splitlines() if l.startswith("types:")]
    if known and type_name not in known[0]:
        raise ConvertError("unknown --type %r (choose from %s, or what ember quantizes: %s)"
                           % (type_name, ", ".join(sorted(TYPES)), ", ".join(known[0])))
    tmp = out + ".f32.tmp"
    try:
        convert(src_spec, tmp, "f32", tokenizer, False, name, quiet)
        cmd = [ember, "quantize", tmp, out, type_name] + (["-t", str(threads)] if threads else [])
        r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL if quiet else None)
        if r.returncode:
            if quiet:   # the reason was not shown: ask again for it
                r2 = subprocess.run(cmd, capture_output=True, text=True)
                msg = (r2.stderr.strip().splitlines() or ["exit status %d" % r.returncode])[-1]
            else:
                msg = "exit status %d" % r.returncode
            raise ConvertError("ember quantize %s failed: %s" % (type_name, msg))
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return out


def convert(src_spec, out, type_name="f16", tokenizer=None, vocab_only=False, name=None, quiet=False):
    t0 = time.time()
    if type_name not in TYPES:
        raise ConvertError("unknown --type %r (choose from %s)" % (type_name, ", ".join(TYPES)))
    want = TYPES[type_name]
    ftype = gw.FTYPE_OF_TYPE[want]
    src = None
    if vocab_only and not src_spec.startswith("random:") and not (
            os.path.isdir(src_spec) and os.path.isfile(os.path.join(src_spec, "config.json"))):
        # a bare tokenizer (or a llama2.c checkpoint + tokenizer)
        if os.path.isfile(src_spec):
            try:
                src = Llama2cSource(src_spec)
            except ConvertError:
                src = None
        if src is not None:
            src.tokenizer = load_tokenizer(find_tokenizer(src, tokenizer), src.hp.vocab)
        else:
            tok = load_tokenizer(tokenizer or src_spec, None)
            hp = HParams(4096, 11008, 32, 32, 32, len(tok), 4096, eps=1e-5, theta=10000.0, tied=False)
            hp.write_theta = False
            src = type("TokOnly", (), {})()
            src.kind, src.hp, src.tokenizer, src.path = "tokenizer", hp, tok, src_spec
    if src is None:
        src = open_source(src_spec, tokenizer)
    hp, tok = src.hp, src.tokenizer
    if len(tok) != hp.vocab:
        raise ConvertError("tokenizer has %d tokens but the model's vocab_size is %d" % (len(tok), hp.vocab))
    if name is None:
        name = getattr(src, "name", None) or os.path.basename(os.path.normpath(src_spec.split(":", 1)[-1]
                                                                                 if src_spec.startswith("random:")
                                                                                 else src_spec))
        name = os.path.splitext(name)[0] if src.kind == "llama2c" else name
    w = gw.GGUFWriter(out)
    add_hparams(w, hp, name, ftype, src)
    add_tokenizer(w, tok)
    counts = {}
    if not vocab_only:
        if hp.rope_scaling and hp.rope_scaling.get("rope_type") == "llama3" and getattr(src, "arch", "llama") == "llama":
            rf = llama3_rope_factors(hp.rope_scaling, hp.hd, hp.theta)
            w.add_tensor("rope_freqs.weight", rf.shape, gw.GGML_TYPE_F32, rf)
        for tname, shape, loader in src.tensors():
            qt = choose_type(shape, want)
            counts[gw.type_name(qt)] = counts.get(gw.type_name(qt), 0) + 1
            w.add_tensor(tname, shape, qt, _producer(loader, qt, shape))

    def progress(i, t):
        if not quiet:
            log("[%3d/%3d] %-28s %-5s %s" % (i + 1, len(w.tensors), t["name"], gw.type_name(t["type"]),
                                              "x".join(str(x) for x in t["ne"])))
    tmp = out + ".tmp"
    w.path = tmp
    try:
        w.write(progress)
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    if not quiet:
        log("wrote %s: %s, %d tensors %s, vocab %d (%s/%s), %.1f MB in %.1fs"
            % (out, "vocab only" if vocab_only else type_name, len(w.tensors), counts, len(tok), tok.model, tok.pre,
               os.path.getsize(out) / 1e6, time.time() - t0))
    return out


# ---------------------------------------------------------------------------
# Writing checkpoints (llama2.c .bin, HF directory) from a random model
# ---------------------------------------------------------------------------
def write_llama2c(src, out):
    hp = src.hp
    if hp.head_dim and hp.head_dim != hp.dim // hp.heads:
        raise ConvertError("llama2.c format cannot express head_dim != dim/heads")
    t = {n: l for n, _, l in src.tensors()}
    L = hp.layers
    with open(out, "wb") as f:
        f.write(struct.pack("<7i", hp.dim, hp.hidden, L, hp.heads, hp.kv_heads,
                            hp.vocab if hp.tied else -hp.vocab, hp.ctx))

        def put(a):
            f.write(np.ascontiguousarray(a, dtype="<f4").tobytes())
        put(t["token_embd.weight"]())
        for key in ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate",
                    "ffn_down", "ffn_up"):
            for i in range(L):
                put(t["blk.%d.%s.weight" % (i, key)]())
        put(t["output_norm.weight"]())
        hs = hp.dim // hp.heads
        freqs = 1.0 / (10000.0 ** (np.arange(0, hs, 2)[: hs // 2].astype(np.float32) / hs))
        ang = np.outer(np.arange(hp.ctx), freqs).astype(np.float32)
        put(np.cos(ang))
        put(np.sin(ang))
        if not hp.tied:
            put(t["output.weight"]())


def write_hf(src, out, dtype="f32"):
    hp = src.hp
    os.makedirs(out, exist_ok=True)
    inv = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
           "output.weight": "lm_head.weight"}
    sub = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
           "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
           "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
    st_dtype = {"f32": "F32", "f16": "F16", "bf16": "BF16"}[dtype]
    items = []
    for g, shape, loader in src.tensors():
        if g in inv:
            hn = inv[g]
        else:
            _, i, k, _ = g.split(".")
            hn = "model.layers.%s.%s.weight" % (i, sub[k])
        items.append((hn, g, shape, loader))
    items.sort(key=lambda x: x[0])
    header = {"__metadata__": {"format": "pt"}}
    off = 0
    isz = 4 if dtype == "f32" else 2
    for hn, g, shape, _ in items:
        n = int(np.prod(shape)) * isz
        header[hn] = {"dtype": st_dtype, "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((-len(hb)) % 8)
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for hn, g, shape, loader in items:
            a = loader()
            if g.endswith("attn_q.weight"):
                a = unpermute_qk(a, hp.heads)
            elif g.endswith("attn_k.weight"):
                a = unpermute_qk(a, hp.kv_heads)
            if dtype == "f32":
                b = np.ascontiguousarray(a, dtype="<f4")
            elif dtype == "f16":
                b = gw.fp32_to_fp16(a)
            else:
                b = gw.fp32_to_bf16_bits(a)
            f.write(b.tobytes())
    tok = src.tokenizer
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": hp.dim, "intermediate_size": hp.hidden, "num_hidden_layers": hp.layers,
        "num_attention_heads": hp.heads, "num_key_value_heads": hp.kv_heads, "head_dim": hp.hd,
        "hidden_act": "silu", "rms_norm_eps": hp.eps, "rope_theta": hp.theta, "rope_scaling": None,
        "max_position_embeddings": hp.ctx, "vocab_size": hp.vocab, "tie_word_embeddings": hp.tied,
        "attention_bias": False, "mlp_bias": False, "torch_dtype": {"f32": "float32", "f16": "float16",
                                                                   "bf16": "bfloat16"}[dtype],
        "bos_token_id": tok.special.get("bos"), "eos_token_id": tok.special.get("eos"),
    }
    with open(os.path.join(out, "config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2)
    write_tokenizer_json(tok, os.path.join(out, "tokenizer.json"))
    if tok.model == "llama":
        write_sentencepiece_model(tok, os.path.join(out, "tokenizer.model"))


def _pb_varint(v):
    v &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _pb_field(num, wt, payload):
    key = _pb_varint(num << 3 | wt)
    if wt == 2:
        return key + _pb_varint(len(payload)) + payload
    return key + payload


def write_sentencepiece_model(tok, path):
    """Write an SPM-style ("llama") tokenizer as a SentencePiece ModelProto."""
    parts = []
    for t, sc, ty in zip(tok.tokens, tok.scores, tok.token_types):
        piece = _pb_field(1, 2, t.encode("utf-8")) + _pb_field(2, 5, struct.pack("<f", sc))
        if ty != tr.TT_NORMAL:
            piece += _pb_field(3, 0, _pb_varint(ty))
        parts.append(_pb_field(1, 2, piece))
    sp = tok.special
    trainer = (_pb_field(3, 0, _pb_varint(2)) + _pb_field(4, 0, _pb_varint(len(tok.tokens))) +
               _pb_field(35, 0, _pb_varint(1)) +
               _pb_field(40, 0, _pb_varint(sp.get("unk", 0))) + _pb_field(41, 0, _pb_varint(sp.get("bos", -1))) +
               _pb_field(42, 0, _pb_varint(sp.get("eos", -1))) + _pb_field(43, 0, _pb_varint(sp.get("pad", -1))))
    norm = (_pb_field(1, 2, b"identity") + _pb_field(3, 0, _pb_varint(1 if tok.add_space_prefix else 0)) +
            _pb_field(4, 0, _pb_varint(0)))
    parts.append(_pb_field(2, 2, trainer))
    parts.append(_pb_field(3, 2, norm))
    with open(path, "wb") as f:
        f.write(b"".join(parts))


def write_tokenizer_json(tok, path):
    """Write the tokenizer as a Hugging Face tokenizer.json that tokenizer_readers reads back."""
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True}
             for i, (t, ty) in enumerate(zip(tok.tokens, tok.token_types)) if ty in (tr.TT_CONTROL, tr.TT_UNKNOWN)]
    if tok.model == "llama":
        vocab = {t: i for i, t in enumerate(tok.tokens)}
        # merges ordered by score: for each multi-char normal piece, one split into two pieces
        merges = []
        order = sorted((i for i, ty in enumerate(tok.token_types) if ty == tr.TT_NORMAL and len(tok.tokens[i]) > 1),
                       key=lambda i: -tok.scores[i])
        for i in order:
            t = tok.tokens[i]
            for k in range(1, len(t)):
                if t[:k] in vocab and t[k:] in vocab:
                    merges.append([t[:k], t[k:]])
                    break
        tj = {"version": "1.0", "added_tokens": added,
              "normalizer": {"type": "Sequence", "normalizers": [
                  {"type": "Prepend", "prepend": tr.SPIECE_UNDERLINE},
                  {"type": "Replace", "pattern": {"String": " "}, "content": tr.SPIECE_UNDERLINE}]},
              "pre_tokenizer": None,
              "decoder": {"type": "Sequence", "decoders": [
                  {"type": "Replace", "pattern": {"String": tr.SPIECE_UNDERLINE}, "content": " "},
                  {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
              "model": {"type": "BPE", "unk_token": tok.tokens[tok.special["unk"]] if "unk" in tok.special else None,
                        "byte_fallback": True, "fuse_unk": True, "vocab": vocab, "merges": merges}}
    else:
        pre = ({"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
               if tok.pre == tr.PRE_GPT2 else
               {"type": "Sequence", "pretokenizers": [
                   {"type": "Split", "pattern": {"Regex": tr.LLAMA3_PATTERN}, "behavior": "Isolated", "invert": False},
                   {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]})
        ctl = set(a["id"] for a in added)
        vocab = {t: i for i, t in enumerate(tok.tokens) if i not in ctl}
        tj = {"version": "1.0", "added_tokens": added, "normalizer": None, "pre_tokenizer": pre,
              "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
              "model": {"type": "BPE", "byte_fallback": False, "vocab": vocab,
                        "merges": list(tok.merges or [])}}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(tj, f, ensure_ascii=False)
    cfg = {"add_bos_token": bool(tok.add_bos), "add_eos_token": bool(tok.add_eos)}
    for typ in ("bos", "eos", "unk"):
        if typ in tok.special:
            cfg[typ + "_token"] = tok.tokens[tok.special[typ]]
    with open(os.path.join(os.path.dirname(path), "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, ensure_ascii=False, indent=1)


# ---------------------------------------------------------------------------
def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="convert_weights.py", description=__doc__.split("\n\n")[0],
        epilog=__doc__[__doc__.index("SRC is one of"):], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", nargs="?", help="HF directory, llama2.c .bin, random:SPEC, or (with --vocab-only) a tokenizer")
    ap.add_argument("-o", "--outfile", required=True, help="output .gguf (or checkpoint path with --write-checkpoint)")
    ap.add_argument("--type", "--outtype", dest="type", default="f16", type=str.lower,
                    help="weight type for 2-D tensors: %s (default f16), or a type of `ember quantize` "
                         "(q4_k_m, q5_k_m, iq4_xs, ...)" % "|".join(sorted(TYPES)))
    ap.add_argument("--ember", help="(--type of ember quantize) the ember binary (default: build/ember)")
    ap.add_argument("-t", "--threads", type=int, help="(--type of ember quantize) threads for ember quantize")
    ap.add_argument("--tokenizer", help="tokenizer file or directory (any supported form)")
    ap.add_argument("--vocab-only", action="store_true", help="write hyperparameters and tokenizer only")
    ap.add_argument("--name", help="general.name (default: derived from SRC)")
    ap.add_argument("--write-checkpoint", metavar="random:SPEC",
                    help="write a random model as an original checkpoint instead of GGUF")
    ap.add_argument("--format", choices=("llama2c", "hf"), help="checkpoint format for --write-checkpoint")
    ap.add_argument("--ckpt-dtype", default="f32", choices=("f32", "f16", "bf16"),
                    help="safetensors dtype for --write-checkpoint --format hf (default f32)")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    try:
        if args.write_checkpoint:
            if not args.format:
                raise ConvertError("--write-checkpoint needs --format llama2c|hf")
            src = open_source(args.write_checkpoint, args.tokenizer)
            if args.format == "llama2c":
                write_llama2c(src, args.outfile)
            else:
                write_hf(src, args.outfile, args.ckpt_dtype)
            if not args.quiet:
                log("wrote %s checkpoint %s" % (args.format, args.outfile))
            return 0
        if not args.src and args.vocab_only and args.tokenizer:
            args.src = args.tokenizer   # --vocab-only --tokenizer FILE: the tokenizer is the source
        if not args.src:
            raise ConvertError("SRC is required")
        if args.type not in TYPES and not args.vocab_only:
            convert_and_quantize(args.src, args.outfile, args.type, args.tokenizer, args.name, args.quiet,
                                 args.ember, args.threads)
        else:
            convert(args.src, args.outfile, args.type, args.tokenizer, args.vocab_only, args.name, args.quiet)
        return 0
    except ConvertError as e:
        sys.stderr.write("convert_weights.py: error: %s\n" % e)
        return 1
    except (OSError, ValueError) as e:
        sys.stderr.write("convert_weights.py: error: %s\n" % e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
