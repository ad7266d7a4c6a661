#!/usr/bin/env python3
"""Independent numpy reference for ember's forward pass.

Reads the ORIGINAL checkpoints (never GGUF weights):
  * llama2.c `.bin` (legacy / version-0 export: 7 x int32 header, fp32 blocks,
    shared or unshared classifier, freq_cis tables skipped), RoPE on adjacent
    pairs (x[2i], x[2i+1]) as llama2.c's run.c does;
  * Hugging Face directories (config.json + model.safetensors, or shards listed
    in model.safetensors.index.json; F32/F16/BF16 parsed from the safetensors
    header here), RoPE by rotate_half over the two halves of each head as
    transformers' LlamaModel does, `rope_scaling` of type llama3,
    tie_word_embeddings, explicit head_dim.

  * Hugging Face checkpoints of the other families (Qwen2/3, Gemma 2/3 and Gemma 3's
    text model, Phi-3, SmolLM3, Granite, Mistral): read_family / family_forward,
    written from transformers' modeling code (see "Model families" below).

Each checkpoint is evaluated in its OWN RoPE convention: that is what makes
this an independent check of the GGUF converter (which permutes HF q/k rows)
and of ember (which uses adjacent pairs).

Also here: ggml-style quantize/dequantize simulation (Q8_0, Q4_0, F16, BF16,
written from the ggml reference algorithms, not imported from tools/), a
writer for random checkpoints in both original formats, greedy generation,
llama.cpp-style perplexity, a llama2.c tokenizer-.bin decoder and a minimal
GGUF tensor-table reader (types/shapes/raw bytes only, used to check which
types the converter chose).

CLI (run with /usr/bin/python3):
  ref_forward.py write-checkpoint random:dim=64,hidden=172,layers=2,heads=8,kv_heads=4,vocab=512,ctx=256,seed=1[,tied=1]
                 --format llama2c|hf -o PATH [--dtype f32|f16|bf16] [--shards N]
  ref_forward.py logits MODEL -o OUT.f32 [--quant TYPE] [--float32] TOKEN...
  ref_forward.py generate MODEL [-n 200] [--tokenizer TOK.bin] [--prompt-ids 1,...]
  ref_forward.py perplexity MODEL --tokens-file IDS [-c 64]
  ref_forward.py selftest [SHARED_DIR]
"""

import json
import math
import os
import struct
import sys

import numpy as np

# ---------------------------------------------------------------------------
# Model description
# ---------------------------------------------------------------------------


class Config:
    def __init__(self, dim, hidden, n_layers, n_heads, n_kv_heads, vocab, max_seq,
                 head_dim=None, norm_eps=1e-5, rope_theta=10000.0, rope_style="pairs",
                 rope_scaling=None, tied=True):
        self.dim = int(dim)
        self.hidden = int(hidden)
        self.n_layers = int(n_layers)
        self.n_heads = int(n_heads)
        self.n_kv_heads = int(n_kv_heads)
        self.vocab = int(vocab)
        self.max_seq = int(max_seq)
        self.head_dim = int(head_dim) if head_dim else self.dim // self.n_heads
        self.norm_eps = float(norm_eps)
        self.rope_theta = float(rope_theta)
        self.rope_style = rope_style          # "pairs" (llama2.c) or "halves" (HF)
        self.rope_scaling = rope_scaling      # dict (HF config) or None
        self.tied = bool(tied)

    def __repr__(self):
        return ("Config(dim=%d hidden=%d layers=%d heads=%d kv_heads=%d head_dim=%d vocab=%d "
                "ctx=%d eps=%g theta=%g rope=%s scaling=%s tied=%s)" % (
                    self.dim, self.hidden, self.n_layers, self.n_heads, self.n_kv_heads,
                    self.head_dim, self.vocab, self.max_seq, self.norm_eps, self.rope_theta,
                    self.rope_style, self.rope_scaling, self.tied))


# Weight names used inside the reference (numpy order: (out, in) for matrices).
LAYER_KEYS = ("attn_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w1", "w2", "w3")
# The GGUF names the converter gives these (for the type-table checks).
GGUF_NAMES = {"attn_norm": "attn_norm", "wq": "attn_q", "wk": "attn_k", "wv": "attn_v",
              "wo": "attn_output", "ffn_norm": "ffn_norm", "w1": "ffn_gate",
              "w2": "ffn_down", "w3": "ffn_up"}


class Model:
    """cfg + weights: tok_emb [V,dim], layers [{...}], norm [dim], cls [V,dim]."""

    def __init__(self, cfg, tok_emb, layers, norm, cls):
        self.cfg = cfg
        self.tok_emb = tok_emb
        self.layers = layers
        self.norm = norm
        self.cls = cls

    def tensors(self):
        """(gguf name, array) for every tensor, as the converter would name them."""
        out = [("token_embd.weight", self.tok_emb)]
        for i, L in enumerate(self.layers):
            for k in LAYER_KEYS:
                out.append(("blk.%d.%s.weight" % (i, GGUF_NAMES[k]), L[k]))
        out.append(("output_norm.weight", self.norm))
        if not self.cfg.tied:
            out.append(("output.weight", self.cls))
        return out

    def map_weights(self, fn):
        """A new Model whose weights are fn(gguf_name, array)."""
        layers = []
        for i, L in enumerate(self.layers):
            layers.append({k: fn("blk.%d.%s.weight" % (i, GGUF_NAMES[k]), L[k]) for k in LAYER_KEYS})
        tok = fn("token_embd.weight", self.tok_emb)
        cls = tok if self.cfg.tied else fn("output.weight", self.cls)
        return Model(self.cfg, tok, layers, fn("output_norm.weight", self.norm), cls)


# ---------------------------------------------------------------------------
# llama2.c .bin
# ---------------------------------------------------------------------------


def read_llama2c(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 28:
        raise ValueError("%s: too short for a llama2.c header" % path)
    dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len = struct.unpack("<7i", data[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    head_size = dim // n_heads
    kv_dim = dim * n_kv_heads // n_heads
    floats = np.frombuffer(data, dtype="<f4", offset=28).astype(np.float32)
    pos = [0]

    def take(*shape):
        n = int(np.prod(shape))
        if pos[0] + n > floats.size:
            raise ValueError("%s: truncated (need %d more floats)" % (path, pos[0] + n - floats.size))
        a = floats[pos[0]:pos[0] + n].reshape(shape)
        pos[0] += n
        return a

    tok_emb = take(vocab, dim)
    rms_att = take(n_layers, dim)
    wq = take(n_layers, dim, dim)
    wk = take(n_layers, kv_dim, dim)
    wv = take(n_layers, kv_dim, dim)
    wo = take(n_layers, dim, dim)
    rms_ffn = take(n_layers, dim)
    w1 = take(n_layers, hidden, dim)
    w2 = take(n_layers, dim, hidden)
    w3 = take(n_layers, hidden, dim)
    rms_final = take(dim)
    take(seq_len, head_size // 2)   # freq_cis_real (skipped, as run.c does)
    take(seq_len, head_size // 2)   # freq_cis_imag
    cls = tok_emb if shared else take(vocab, dim)
    if pos[0] != floats.size:
        raise ValueError("%s: %d trailing floats" % (path, floats.size - pos[0]))
    cfg = Config(dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len,
                 norm_eps=1e-5, rope_theta=10000.0, rope_style="pairs", tied=shared)
    layers = [dict(attn_norm=rms_att[l], wq=wq[l], wk=wk[l], wv=wv[l], wo=wo[l],
                   ffn_norm=rms_ffn[l], w1=w1[l], w2=w2[l], w3=w3[l]) for l in range(n_layers)]
    return Model(cfg, tok_emb, layers, rms_final, cls)


def write_llama2c(path, model):
    c = model.cfg
    if c.head_dim * c.n_heads != c.dim:
        raise ValueError("llama2.c format needs head_dim == dim / heads")
    if c.rope_style != "pairs":
        raise ValueError("llama2.c checkpoints use adjacent-pair RoPE")
    with open(path, "wb") as f:
        f.write(struct.pack("<7i", c.dim, c.hidden, c.n_layers, c.n_heads, c.n_kv_heads,
                            c.vocab if c.tied else -c.vocab, c.max_seq))

        def w(a):
            f.write(np.ascontiguousarray(a, dtype="<f4").tobytes())

        w(model.tok_emb)
        for k in LAYER_KEYS[:5]:
            if k == "attn_norm":
                w(np.stack([L["attn_norm"] for L in model.layers]))
            else:
                w(np.stack([L[k] for L in model.layers]))
        for k in ("ffn_norm", "w1", "w2", "w3"):
            w(np.stack([L[k] for L in model.layers]))
        w(model.norm)
        hs = c.head_dim
        freqs = 1.0 / (c.rope_theta ** (np.arange(0, hs, 2)[: hs // 2].astype(np.float64) / hs))
        ang = np.outer(np.arange(c.max_seq), freqs)
        w(np.cos(ang))
        w(np.sin(ang))
        if not c.tied:
            w(model.cls)


# ---------------------------------------------------------------------------
# safetensors / Hugging Face
# ---------------------------------------------------------------------------


def bf16_bits_to_f32(u16):
    return (np.asarray(u16, dtype=np.uint32) << np.uint32(16)).view(np.float32)


def read_safetensors(path):
    """{name: float32 array} from one .safetensors file (F32, F16, BF16)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        raw = data[base + b:base + e]
        shape = tuple(info["shape"])
        dt = info["dtype"]
        if dt == "F32":
            a = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        elif dt == "F16":
            a = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        elif dt == "BF16":
            a = bf16_bits_to_f32(np.frombuffer(raw, dtype="<u2"))
        else:
            raise ValueError("%s: tensor %s has unsupported dtype %s" % (path, name, dt))
        if a.size != int(np.prod(shape)):
            raise ValueError("%s: tensor %s: %d values for shape %s" % (path, name, a.size, shape))
        out[name] = a.reshape(shape)
    return out


def write_safetensors(path, tensors, dtype="f32", metadata=None):
    """tensors: list of (name, float array).  dtype f32|f16|bf16 (bf16 rounds to nearest even)."""
    header = {}
    blobs = []
    off = 0
    for name, a in tensors:
        a = np.ascontiguousarray(a, dtype=np.float32)
        if dtype == "f32":
            raw, st = a.astype("<f4").tobytes(), "F32"
        elif dtype == "f16":
            raw, st = a.astype("<f2").tobytes(), "F16"
        elif dtype == "bf16":
            raw, st = f32_to_bf16_bits(a).astype("<u2").tobytes(), "BF16"
        else:
            raise ValueError("dtype %s" % dtype)
        header[name] = {"dtype": st, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((-len(h)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_hf(path):
    with open(os.path.join(path, "config.json")) as f:
        conf = json.load(f)
    idx = os.path.join(path, "model.safetensors.index.json")
    st = {}
    if os.path.exists(idx):
        with open(idx) as f:
            wm = json.load(f)["weight_map"]
        for fn in sorted(set(wm.values())):
            st.update(read_safetensors(os.path.join(path, fn)))
        missing = set(wm) - set(st)
        if missing:
            raise ValueError("%s: index lists tensors missing from the shards: %s" % (path, sorted(missing)[:5]))
    else:
        st = read_safetensors(os.path.join(path, "model.safetensors"))
    dim = conf["hidden_size"]
    n_heads = conf["num_attention_heads"]
    tied = bool(conf.get("tie_word_embeddings", False))
    rs = conf.get("rope_scaling")
    if rs is not None:
        kind = rs.get("rope_type", rs.get("type"))
        if kind == "default":
            rs = None
        elif kind != "llama3":
            raise ValueError("rope_scaling type %r is not supported by the reference" % kind)
    cfg = Config(dim, conf["intermediate_size"], conf["num_hidden_layers"], n_heads,
                 conf.get("num_key_value_heads", n_heads), conf["vocab_size"],
                 conf.get("max_position_embeddings", 2048),
                 head_dim=conf.get("head_dim") or dim // n_heads,
                 norm_eps=conf.get("rms_norm_eps", 1e-6), rope_theta=conf.get("rope_theta", 10000.0),
                 rope_style="halves", rope_scaling=rs, tied=tied)
    if conf.get("hidden_act", "silu") != "silu":
        raise ValueError("hidden_act %r not supported" % conf.get("hidden_act"))
    if conf.get("attention_bias") or conf.get("mlp_bias"):
        raise ValueError("attention/MLP biases are not supported by the reference")
    known = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}
    for l in range(cfg.n_layers):
        for n in ("input_layernorm", "post_attention_layernorm", "self_attn.q_proj", "self_attn.k_proj",
                  "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
            known.add("model.layers.%d.%s.weight" % (l, n))
    unknown = [n for n in st if n not in known and not n.endswith("rotary_emb.inv_freq")]
    if unknown:
        raise ValueError("%s: tensors the reference does not understand: %s" % (path, unknown[:5]))
    p = "model.layers.%d."
    layers = []
    for l in range(cfg.n_layers):
        q = p % l
        layers.append(dict(
            attn_norm=st[q + "input_layernorm.weight"],
            wq=st[q + "self_attn.q_proj.weight"], wk=st[q + "self_attn.k_proj.weight"],
            wv=st[q + "self_attn.v_proj.weight"], wo=st[q + "self_attn.o_proj.weight"],
            ffn_norm=st[q + "post_attention_layernorm.weight"],
            w1=st[q + "mlp.gate_proj.weight"], w2=st[q + "mlp.down_proj.weight"],
            w3=st[q + "mlp.up_proj.weight"]))
    tok = st["model.embed_tokens.weight"]
    if tied:
        cls = tok
    else:
        cls = st["lm_head.weight"]
    # If a checkpoint says untied but has no lm_head, that is an error in the checkpoint.
    return Model(cfg, tok, layers, st["model.norm.weight"], cls)


def write_hf(path, model, dtype="f32", shards=1):
    c = model.cfg
    os.makedirs(path, exist_ok=True)
    conf = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "hidden_size": c.dim, "intermediate_size": c.hidden, "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads, "num_key_value_heads": c.n_kv_heads,
        "head_dim": c.head_dim, "vocab_size": c.vocab, "max_position_embeddings": c.max_seq,
        "rms_norm_eps": c.norm_eps, "rope_theta": c.rope_theta,
        "tie_word_embeddings": c.tied, "bos_token_id": 1, "eos_token_id": 2,
        "torch_dtype": {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}[dtype],
    }
    if c.rope_scaling:
        conf["rope_scaling"] = c.rope_scaling
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(conf, f, indent=2)
    ts = [("model.embed_tokens.weight", model.tok_emb)]
    for l, L in enumerate(model.layers):
        q = "model.layers.%d." % l
        ts += [(q + "input_layernorm.weight", L["attn_norm"]),
               (q + "self_attn.q_proj.weight", L["wq"]), (q + "self_attn.k_proj.weight", L["wk"]),
               (q + "self_attn.v_proj.weight", L["wv"]), (q + "self_attn.o_proj.weight", L["wo"]),
               (q + "post_attention_layernorm.weight", L["ffn_norm"]),
               (q + "mlp.gate_proj.weight", L["w1"]), (q + "mlp.up_proj.weight", L["w3"]),
               (q + "mlp.down_proj.weight", L["w2"])]
    ts.append(("model.norm.weight", model.norm))
    if not c.tied:
        ts.append(("lm_head.weight", model.cls))
    for fn in os.listdir(path):
        if fn.endswith(".safetensors") or fn == "model.safetensors.index.json":
            os.remove(os.path.join(path, fn))
    if shards <= 1:
        write_safetensors(os.path.join(path, "model.safetensors"), ts, dtype, {"format": "pt"})
        return
    per = int(math.ceil(len(ts) / shards))
    wm = {}
    total = 0
    for s in range(shards):
        fn = "model-%05d-of-%05d.safetensors" % (s + 1, shards)
        part = ts[s * per:(s + 1) * per]
        write_safetensors(os.path.join(path, fn), part, dtype, {"format": "pt"})
        for n, a in part:
            wm[n] = fn
            total += a.size * (4 if dtype == "f32" else 2)
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": wm}, f, indent=2)


def load(path):
    """Read an original checkpoint: a llama2.c .bin file or an HF directory."""
    if os.path.isdir(path):
        return read_hf(path)
    return read_llama2c(path)


# ---------------------------------------------------------------------------
# Random checkpoints
# ---------------------------------------------------------------------------


def parse_spec(spec):
    """'random:dim=64,hidden=172,...' -> dict of ints/floats."""
    if not spec.startswith("random:"):
        raise ValueError("spec must start with random:")
    d = {}
    for kv in spec[len("random:"):].split(","):
        if not kv:
            continue
        k, v = kv.split("=", 1)
        try:
            d[k] = int(v)
        except ValueError:
            d[k] = float(v)
    return d


def random_model(dim=64, hidden=172, layers=2, heads=8, kv_heads=None, vocab=512, ctx=256,
                 seed=1, tied=1, head_dim=None, style="pairs", eps=1e-5, theta=10000.0,
                 rope_scaling=None, emb_scale=1.0):
    """Weights scaled so activations stay O(1) and logits spread over a few units
    (an all-near-zero model would hide errors).  emb_scale < 1 makes the first
    RMSNorm's input so small that its epsilon matters (checks eps is honoured)."""
    kv_heads = kv_heads or heads
    hd = head_dim or dim // heads
    rng = np.random.default_rng(seed)

    def mat(o, i):
        return (rng.standard_normal((o, i)) / math.sqrt(i)).astype(np.float32)

    def norm(n):
        return (1.0 + 0.2 * rng.standard_normal(n)).astype(np.float32)

    cfg = Config(dim, hidden, layers, heads, kv_heads, vocab, ctx, head_dim=hd, norm_eps=eps,
                 rope_theta=theta, rope_style=style, rope_scaling=rope_scaling, tied=bool(tied))
    tok = (rng.standard_normal((vocab, dim)) * emb_scale).astype(np.float32)
    Ls = []
    for _ in range(layers):
        Ls.append(dict(attn_norm=norm(dim), wq=mat(heads * hd, dim) * 2.0, wk=mat(kv_heads * hd, dim) * 2.0,
                       wv=mat(kv_heads * hd, dim), wo=mat(dim, heads * hd),
                       ffn_norm=norm(dim), w1=mat(hidden, dim), w2=mat(dim, hidden), w3=mat(hidden, dim)))
    fnorm = norm(dim)
    cls = tok if tied else mat(vocab, dim) * 3.0
    return Model(cfg, tok, Ls, fnorm, cls)


def write_random_checkpoint(spec, fmt, out, dtype="f32", shards=1):
    d = parse_spec(spec) if isinstance(spec, str) else dict(spec)
    rs = None
    if d.pop("llama3", 0):
        rs = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
              "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    m = random_model(dim=d.get("dim", 64), hidden=d.get("hidden", 172), layers=d.get("layers", 2),
                     heads=d.get("heads", 8), kv_heads=d.get("kv_heads"), vocab=d.get("vocab", 512),
                     ctx=d.get("ctx", 256), seed=d.get("seed", 1), tied=d.get("tied", 0),
                     head_dim=d.get("head_dim"), style="pairs" if fmt == "llama2c" else "halves",
                     eps=d.get("eps", 1e-5), theta=d.get("theta", 10000.0), rope_scaling=rs,
                     emb_scale=d.get("emb_scale", 1.0))
    if fmt == "llama2c":
        write_llama2c(out, m)
    elif fmt == "hf":
        write_hf(out, m, dtype=dtype, shards=shards)
    else:
        raise ValueError("format %s" % fmt)
    return out


# ---------------------------------------------------------------------------
# Quantization simulation (ggml reference algorithms, float32 arithmetic)
# ---------------------------------------------------------------------------

QK = 32


def f32_to_f16_f32(x):
    """fp32 -> fp16 (round to nearest even, as F16C / GGML_FP32_TO_FP16) -> fp32."""
    return np.asarray(x, dtype=np.float32).astype(np.float16).astype(np.float32)


def f32_to_bf16_bits(x):
    """ggml_compute_fp32_to_bf16: round to nearest even; NaN made quiet."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    r = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    r = np.where(nan, (u >> 16) | 64, r)
    return r.astype(np.uint16)


def f32_to_bf16_f32(x):
    return bf16_bits_to_f32(f32_to_bf16_bits(x)).reshape(np.shape(x))


def round_half_away(x):
    """C roundf() in float32: floor(|x|) + (frac >= 0.5), sign restored."""
    a = np.abs(x).astype(np.float32)
    f = np.floor(a)
    return np.copysign(f + (a - f >= np.float32(0.5)).astype(np.float32), x).astype(np.float32)


def q8_0_roundtrip(x):
    """dequantize(quantize_row_q8_0_ref(x)) along the last axis (blocks of 32)."""
    x = np.asarray(x, dtype=np.float32)
    b = x.reshape(-1, QK)
    amax = np.abs(b).max(axis=1)
    d = amax / np.float32(127)
    safe = np.where(d == 0, np.float32(1), d)
    inv = np.where(d == 0, np.float32(0), np.float32(1) / safe).astype(np.float32)
    q = round_half_away(b * inv[:, None])
    dq = f32_to_f16_f32(d)
    return (q * dq[:, None]).astype(np.float32).reshape(x.shape)


def q4_0_roundtrip(x):
    """dequantize(quantize_row_q4_0_ref(x)): d = (signed value of max |x|) / -8,
    q = min(15, (int)(x/d + 8.5)), value = (q - 8) * fp16(d)."""
    x = np.asarray(x, dtype=np.float32)
    b = x.reshape(-1, QK)
    i = np.abs(b).argmax(axis=1)                   # first of equal maxima, like the C loop
    mx = b[np.arange(b.shape[0]), i]
    d = (mx / np.float32(-8)).astype(np.float32)
    safe = np.where(d == 0, np.float32(1), d)
    inv = np.where(d == 0, np.float32(0), np.float32(1) / safe).astype(np.float32)
    y = (b * inv[:, None]).astype(np.float32) + np.float32(8.5)
    q = np.minimum(np.trunc(y), np.float32(15))
    dq = f32_to_f16_f32(d)
    return ((q - 8) * dq[:, None]).astype(np.float32).reshape(x.shape)


GGML_TYPE_IDS = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 8, "q4_k": 12, "q6_k": 14, "bf16": 30}
GGML_TYPE_NAMES = {v: k for k, v in GGML_TYPE_IDS.items()}


def converter_type(name, shape, qtype):
    """The ggml type the converter is specified to give a tensor for `--type qtype`:
    1-D tensors stay F32; 2-D weights take qtype, except that block types
    (q8_0, q4_0) fall back to F16 when the row length is not a multiple of 32."""
    if len(shape) < 2 or qtype == "f32":
        return "f32"
    if qtype in ("q8_0", "q4_0") and shape[-1] % QK:
        return "f16"
    return qtype


def q8_k_roundtrip(x):
    """ggml's quantize_row_q8_K_ref (the activation format of k-quant dot products):
    blocks of 256, iscale = -128 / (signed value of max |x|), q = min(127, rint(iscale*x)),
    value = q / iscale."""
    x = np.asarray(x, dtype=np.float32)
    b = x.reshape(-1, 256)
    i = np.abs(b).argmax(axis=1)
    mx = b[np.arange(b.shape[0]), i]
    with np.errstate(divide="ignore"):
        iscale = np.where(mx != 0, np.float32(-128) / np.where(mx != 0, mx, np.float32(1)), np.float32(0)).astype(
            np.float32)
        d = np.where(iscale != 0, np.float32(1) / np.where(iscale != 0, iscale, np.float32(1)), np.float32(0))
    q = np.minimum(np.rint(b * iscale[:, None]), 127)
    return (q * d.astype(np.float32)[:, None]).astype(np.float32).reshape(x.shape)


def roundtrip(x, t):
    if t == "q8_k":
        return q8_k_roundtrip(x)
    if t == "f32":
        return np.asarray(x, dtype=np.float32)
    if t == "f16":
        return f32_to_f16_f32(x)
    if t == "bf16":
        return f32_to_bf16_f32(x)
    if t == "q8_0":
        return q8_0_roundtrip(x)
    if t == "q4_0":
        return q4_0_roundtrip(x)
    raise ValueError("type %s" % t)


def act_quant_map(model, types, act_type="q8_0", weight_types=("q8_0", "q4_0")):
    """{id(W): roundtrip_fn} for forward(act_quant=...): the activation entering a
    product with a weight stored as one of weight_types is rounded to act_type,
    as ggml's quantized dot products do (Q8_0 activations for Q8_0/Q4_0 weights)."""
    out = {}

    def visit(name, a):
        # (token_embd only enters a product when it is the tied classifier)
        if a.ndim == 2 and types.get(name) in weight_types:
            out[id(a)] = lambda x, t=act_type: roundtrip(x, t)
        return a
    model.map_weights(visit)
    return out


def quantized_model(model, qtype, types=None):
    """model with every weight replaced by dequantize(quantize(W)) of the type the
    converter uses for it (types: optional {gguf name: type} overriding the rule)."""
    def fn(name, a):
        t = types.get(name) if types else None
        return roundtrip(a, t or converter_type(name, a.shape, qtype))
    return model.map_weights(fn)


# ---------------------------------------------------------------------------
# Forward pass
# ---------------------------------------------------------------------------


def rope_inv_freq(cfg):
    hd = cfg.head_dim
    inv = 1.0 / (cfg.rope_theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
    rs = cfg.rope_scaling
    if rs:
        # transformers' _compute_llama3_parameters
        factor = float(rs["factor"])
        lo = float(rs.get("low_freq_factor", 1.0))
        hi = float(rs.get("high_freq_factor", 4.0))
        old = float(rs.get("original_max_position_embeddings", 8192))
        lo_wl = old / lo
        hi_wl = old / hi
        wl = 2 * math.pi / inv
        inv_l = np.where(wl > lo_wl, inv / factor, inv)
        smooth = (old / wl - lo) / (hi - lo)
        smoothed = (1 - smooth) * inv_l / factor + smooth * inv_l
        medium = ~(wl < hi_wl) & ~(wl > lo_wl)
        inv = np.where(medium, smoothed, inv_l)
    return inv


def apply_rope(x, positions, cfg, dt):
    """x: [T, n_heads, head_dim]; positions: [T]."""
    inv = rope_inv_freq(cfg)
    ang = np.outer(np.asarray(positions, dtype=np.float64), inv)    # [T, hd/2]
    cos = np.cos(ang).astype(dt)[:, None, :]
    sin = np.sin(ang).astype(dt)[:, None, :]
    if cfg.rope_style == "pairs":
        # llama2.c: (x[2i], x[2i+1]) rotated by pos * theta^(-2i/hd)
        x0 = x[..., 0::2]
        x1 = x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = x0 * cos - x1 * sin
        out[..., 1::2] = x0 * sin + x1 * cos
        return out
    # HF: x * cat(cos, cos) + rotate_half(x) * cat(sin, sin), rotate_half = cat(-x2, x1)
    h = x.shape[-1] // 2
    x1 = x[..., :h]
    x2 = x[..., h:]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


class Cache:
    def __init__(self, model, dt):
        self.pos = 0
        self.k = [None] * model.cfg.n_layers
        self.v = [None] * model.cfg.n_layers


def forward(model, tokens, cache=None, dtype=np.float64, act_quant=None, kv_round=None):
    """Logits [len(tokens), vocab] for tokens appended at cache.pos (0 if no cache).

    Simulation hooks, used only to estimate how large an implementation's
    legitimate rounding errors are (not part of the reference proper):
    act_quant: {id(weight matrix): fn} rounds the activation entering a product
    with that matrix (e.g. ggml's Q8_0 quantization of the input vector);
    kv_round: fn applied to K and V as they enter the cache (e.g. F16 storage)."""
    cfg = model.cfg
    dt = np.dtype(dtype)
    tokens = np.asarray(tokens, dtype=np.int64)
    if tokens.min() < 0 or tokens.max() >= cfg.vocab:
        raise ValueError("token id out of range")
    if cache is None:
        cache = Cache(model, dt)
    T = len(tokens)
    p0 = cache.pos
    pos = np.arange(p0, p0 + T)
    H, KH, hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    rep = H // KH

    def mm(x, W):
        W = np.asarray(W)
        if act_quant is not None and id(W) in act_quant:
            x = act_quant[id(W)](x.astype(np.float32)).astype(dt)
        return x @ W.astype(dt).T

    x = model.tok_emb[tokens].astype(dt)
    mask = pos[:, None] < np.arange(p0 + T)[None, :]       # [T, S] True = masked (future)
    for l, L in enumerate(model.layers):
        xb = rmsnorm(x, L["attn_norm"].astype(dt), cfg.norm_eps)
        q = mm(xb, L["wq"]).reshape(T, H, hd)
        k = mm(xb, L["wk"]).reshape(T, KH, hd)
        v = mm(xb, L["wv"]).reshape(T, KH, hd)
        q = apply_rope(q, pos, cfg, dt)
        k = apply_rope(k, pos, cfg, dt)
        if kv_round is not None:
            k = kv_round(k).astype(dt)
            v = kv_round(v).astype(dt)
        K = k if cache.k[l] is None else np.concatenate([cache.k[l], k])
        V = v if cache.v[l] is None else np.concatenate([cache.v[l], v])
        cache.k[l], cache.v[l] = K, V
        Kr = np.repeat(K, rep, axis=1)                        # [S, H, hd]: q head h uses kv h // rep
        Vr = np.repeat(V, rep, axis=1)
        s = np.einsum("thd,shd->hts", q, Kr) / np.asarray(math.sqrt(hd), dtype=dt)
        s = np.where(mask[None], -np.inf, s)
        s = s - s.max(axis=-1, keepdims=True)
        e = np.exp(s)
        pr = e / e.sum(axis=-1, keepdims=True)
        att = np.einsum("hts,shd->thd", pr, Vr).reshape(T, H * hd)
        x = x + mm(att, L["wo"])
        xb = rmsnorm(x, L["ffn_norm"].astype(dt), cfg.norm_eps)
        g = mm(xb, L["w1"])
        u = mm(xb, L["w3"])
        x = x + mm(g / (1 + np.exp(-g)) * u, L["w2"])
    cache.pos = p0 + T
    x = rmsnorm(x, model.norm.astype(dt), cfg.norm_eps)
    return mm(x, model.cls)


def greedy(model, prompt, n, dtype=np.float64, stop=None):
    """Greedy continuation: returns the generated ids (prompt excluded).  Stops
    early at a token in `stop` (not included)."""
    cache = Cache(model, dtype)
    logits = forward(model, prompt, cache, dtype)[-1]
    out = []
    for _ in range(n):
        t = int(np.argmax(logits))
        if stop and t in stop:
            break
        out.append(t)
        if cache.pos >= model.cfg.max_seq:
            break
        logits = forward(model, [t], cache, dtype)[-1]
    return out


def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def perplexity(model, tokens, n_ctx, bos=1, dtype=np.float64, kv_round=None):
    """llama.cpp perplexity: tokens already include BOS; chunks of n_ctx, first token
    of each chunk set to BOS, positions n_ctx/2 .. n_ctx-2 predict the next token.
    Returns (ppl, err, mean_nll, n_chunks, count)."""
    tokens = list(tokens)
    n_chunk = len(tokens) // n_ctx
    if n_chunk < 2:
        raise ValueError("need at least 2*n_ctx tokens")
    first = n_ctx // 2
    nll = []
    for c in range(n_chunk):
        chunk = tokens[c * n_ctx:(c + 1) * n_ctx]
        chunk[0] = bos
        lp = log_softmax(forward(model, chunk, None, dtype, kv_round=kv_round))
        for j in range(first, n_ctx - 1):
            nll.append(-lp[j, tokens[c * n_ctx + j + 1]])
    nll = np.asarray(nll, dtype=np.float64)
    cnt = nll.size
    m = nll.mean()
    m2 = (nll * nll).mean()
    ppl = math.exp(m)
    var = m2 - m * m
    err = ppl * math.sqrt(var / (cnt - 1)) if var > 0 else 0.0
    return ppl, err, m, n_chunk, cnt


# ---------------------------------------------------------------------------
# llama2.c tokenizer .bin (decoding only)
# ---------------------------------------------------------------------------


def read_llama2c_vocab(path, n_vocab):
    with open(path, "rb") as f:
        data = f.read()
    pos = 4
    pieces, scores = [], []
    for _ in range(n_vocab):
        sc, n = struct.unpack_from("<fi", data, pos)
        pos += 8
        pieces.append(data[pos:pos + n])
        scores.append(sc)
        pos += n
    return pieces, scores


def write_llama2c_tokenizer(path, n_vocab):
    """A synthetic tokenizer in llama2.c's .bin format (like tok512.bin's layout):
    <unk>, <s>, </s>, 256 byte pieces <0xHH>, then distinct letter pieces."""
    pieces = [b"<unk>", b"\n<s>\n", b"\n</s>\n"] + [("<0x%02X>" % i).encode() for i in range(256)]
    letters = "etaoinshrdlucmfwypvbgkjqxz"
    i = 0
    while len(pieces) < n_vocab:
        a, b = divmod(i, len(letters))
        p = (" " if a % 2 == 0 else "") + letters[b] + (letters[a // 2 % len(letters)] if a >= 2 else "")
        i += 1
        if p.encode() not in pieces:
            pieces.append(p.encode())
    pieces = pieces[:n_vocab]
    with open(path, "wb") as f:
        f.write(struct.pack("<i", max(len(p) for p in pieces)))
        for k, p in enumerate(pieces):
            f.write(struct.pack("<fi", -float(k - 259) if k >= 259 else 0.0, len(p)))
            f.write(p)
    return path


def decode(pieces, ids, prev=1):
    """llama2.c run.c decode(): drop the leading space of a piece that follows BOS,
    turn <0xHH> pieces into raw bytes.  Returns bytes."""
    out = b""
    for t in ids:
        p = pieces[t]
        if prev == 1 and p.startswith(b" "):
            p = p[1:]
        if len(p) == 6 and p.startswith(b"<0x") and p.endswith(b">"):
            try:
                p = bytes([int(p[3:5], 16)])
            except ValueError:
                pass
        out += p
        prev = t
    return out


# ---------------------------------------------------------------------------
# GGUF tensor table (types, shapes, raw bytes) - no weights are taken from it
# for the reference; used to check the converter's type choices / bytes.
# ---------------------------------------------------------------------------


def gguf_tensor_table(path):
    """{name: (type name or id, numpy shape, raw bytes)} plus metadata dict."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"GGUF":
        raise ValueError("%s: not GGUF" % path)
    ver, nt, nkv = struct.unpack_from("<IQQ", data, 4)
    pos = [24]

    def u(fmt):
        v = struct.unpack_from(fmt, data, pos[0])
        pos[0] += struct.calcsize(fmt)
        return v[0]

    def s():
        n = u("<Q")
        b = data[pos[0]:pos[0] + n]
        pos[0] += n
        return b.decode("utf-8", "replace")

    sc = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}

    def val(t):
        if t == 8:
            return s()
        if t in sc:
            return u(sc[t])
        if t == 9:
            et = u("<I")
            n = u("<Q")
            return [val(et) for _ in range(n)] if n < 64 or et not in sc else (
                "<array of %d>" % n, [pos.__setitem__(0, pos[0] + n * struct.calcsize(sc[et]))])[0]
        raise ValueError("bad value type %d" % t)

    meta = {}
    for _ in range(nkv):
        k = s()
        meta[k] = val(u("<I"))
    infos = []
    for _ in range(nt):
        name = s()
        nd = u("<I")
        ne = [u("<Q") for _ in range(nd)]
        t = u("<I")
        off = u("<Q")
        infos.append((name, ne, t, off))
    al = int(meta.get("general.alignment", 32))
    base = pos[0] + ((-pos[0]) % al)
    out = {}
    for name, ne, t, off in infos:
        n = int(np.prod(ne))
        nb = {0: 4 * n, 1: 2 * n, 30: 2 * n, 8: n // 32 * 34, 2: n // 32 * 18, 12: n // 256 * 144,
              14: n // 256 * 210}.get(t)
        raw = data[base + off:base + off + nb] if nb is not None else None
        out[name] = (GGML_TYPE_NAMES.get(t, t), tuple(reversed(ne)), raw)
    return out, meta


def gguf_dequant(t, shape, raw):
    """Decode raw GGUF tensor bytes (own implementation) -> float32 array."""
    n = int(np.prod(shape))
    if t == "f32":
        a = np.frombuffer(raw, "<f4")
    elif t == "f16":
        a = np.frombuffer(raw, "<f2").astype(np.float32)
    elif t == "bf16":
        a = bf16_bits_to_f32(np.frombuffer(raw, "<u2"))
    elif t == "q8_0":
        b = np.frombuffer(raw, np.uint8).reshape(-1, 34)
        d = b[:, :2].copy().view("<f2").astype(np.float32)
        q = b[:, 2:].copy().view(np.int8).astype(np.float32)
        a = q * d
    elif t == "q4_0":
        b = np.frombuffer(raw, np.uint8).reshape(-1, 18)
        d = b[:, :2].copy().view("<f2").astype(np.float32)
        qs = b[:, 2:]
        q = np.concatenate([(qs & 15).astype(np.float32) - 8, (qs >> 4).astype(np.float32) - 8], axis=1)
        a = q * d
    elif t == "q4_k":
        a = decode_q4_k(np.frombuffer(raw, np.uint8).reshape(-1, 144))
    elif t == "q6_k":
        a = decode_q6_k(np.frombuffer(raw, np.uint8).reshape(-1, 210))
    else:
        raise ValueError("type %s" % t)
    return np.asarray(a, dtype=np.float32).reshape(-1)[:n].reshape(shape)


def _f16(b):
    return b.copy().view("<f2").astype(np.float32).reshape(-1, 1)


def decode_q4_k(blk):
    """ggml's dequantize_row_q4_K, over all blocks at once: 8 sub-blocks of 32 with
    6-bit scale and min (get_scale_min_k4), y = d*sc*q - dmin*m."""
    d, dmin, sc8, qs = _f16(blk[:, 0:2]), _f16(blk[:, 2:4]), blk[:, 4:16].astype(np.int32), blk[:, 16:]
    out = np.empty((blk.shape[0], 256), np.float32)

    def scale_min(j):
        if j < 4:
            return sc8[:, j] & 63, sc8[:, j + 4] & 63
        return (sc8[:, j + 4] & 0xF) | ((sc8[:, j - 4] >> 6) << 4), (sc8[:, j + 4] >> 4) | ((sc8[:, j] >> 6) << 4)
    for c in range(4):                                  # 64 values per step, like the C loop
        q = qs[:, 32 * c:32 * c + 32].astype(np.int32)
        s1, m1 = scale_min(2 * c)
        s2, m2 = scale_min(2 * c + 1)
        out[:, 64 * c:64 * c + 32] = d * s1[:, None] * (q & 0xF) - dmin * m1[:, None]
        out[:, 64 * c + 32:64 * c + 64] = d * s2[:, None] * (q >> 4) - dmin * m2[:, None]
    return out


def decode_q6_k(blk):
    """ggml's dequantize_row_q6_K over all blocks: two halves of 128, 6-bit q from
    ql (low 4) and qh (high 2), int8 scales per 16 values, y = d*sc*(q - 32)."""
    ql, qh, sc, d = blk[:, :128].astype(np.int32), blk[:, 128:192].astype(np.int32), \
        blk[:, 192:208].copy().view(np.int8).astype(np.float32), _f16(blk[:, 208:210])
    out = np.empty((blk.shape[0], 256), np.float32)
    for h in range(2):
        L, H, S = ql[:, 64 * h:64 * h + 64], qh[:, 32 * h:32 * h + 32], sc[:, 8 * h:8 * h + 8]
        for l in range(32):
            i = l // 16
            q1 = ((L[:, l] & 0xF) | (((H[:, l] >> 0) & 3) << 4)) - 32
            q2 = ((L[:, l + 32] & 0xF) | (((H[:, l] >> 2) & 3) << 4)) - 32
            q3 = ((L[:, l] >> 4) | (((H[:, l] >> 4) & 3) << 4)) - 32
            q4 = ((L[:, l + 32] >> 4) | (((H[:, l] >> 6) & 3) << 4)) - 32
            o = 128 * h + l
            out[:, o] = d[:, 0] * S[:, i] * q1
            out[:, o + 32] = d[:, 0] * S[:, i + 2] * q2
            out[:, o + 64] = d[:, 0] * S[:, i + 4] * q3
            out[:, o + 96] = d[:, 0] * S[:, i + 6] * q4
    return out


# ---------------------------------------------------------------------------
# Model families: Hugging Face semantics, read from the HF checkpoint itself
# ---------------------------------------------------------------------------
#
# Written from transformers' modeling_{llama,mistral,qwen2,qwen3,gemma2,gemma3,
# phi3,smollm3,granite}.py: RoPE by rotate_half on the first `rot` dimensions of
# each head (the HF rows, never permuted), RMSNorm as each family defines it
# (Gemma: x/rms * (1 + w) with the checkpoint's raw w), Gemma's sqrt(hidden)
# embedding scale, query_pre_attn_scalar, soft-capping and sandwich norms,
# per-head q/k norms (Qwen3, Gemma 3), sliding windows on the layers HF makes
# sliding, Gemma 3's local RoPE base and global rope_scaling, Phi-3's fused
# projections and LongRoPE, SmolLM3's no-RoPE layers, Granite's multipliers.
#
# Where llama.cpp departs from HF, the reference follows HF and the test picks a
# configuration on which both agree (tests/test_families.py says which).

# transformers' config defaults for the keys used here (a config may omit them)
FAMILY_DEFAULTS = {
    "llama": dict(rms_norm_eps=1e-6, rope_theta=10000.0, hidden_act="silu"),
    "mistral": dict(rms_norm_eps=1e-6, rope_theta=10000.0, hidden_act="silu", sliding_window=4096),
    "qwen2": dict(rms_norm_eps=1e-6, rope_theta=10000.0, hidden_act="silu", use_sliding_window=False),
    "qwen3": dict(rms_norm_eps=1e-6, rope_theta=10000.0, hidden_act="silu", head_dim=128, use_sliding_window=False),
    "gemma2": dict(rms_norm_eps=1e-6, rope_theta=10000.0, hidden_activation="gelu_pytorch_tanh", head_dim=256,
                   query_pre_attn_scalar=256, sliding_window=4096, final_logit_softcapping=30.0,
                   attn_logit_softcapping=50.0, tie_word_embeddings=True),
    "gemma3_text": dict(rms_norm_eps=1e-6, rope_theta=1000000.0, rope_local_base_freq=10000.0,
                        hidden_activation="gelu_pytorch_tanh", head_dim=256, query_pre_attn_scalar=256,
                        sliding_window=4096, sliding_window_pattern=6, num_attention_heads=8,
                        num_key_value_heads=4, tie_word_embeddings=True),
    "phi3": dict(rms_norm_eps=1e-5, rope_theta=10000.0, hidden_act="silu", partial_rotary_factor=1.0),
    "smollm3": dict(rms_norm_eps=1e-6, rope_theta=2000000.0, hidden_act="silu", no_rope_layer_interval=4,
                    tie_word_embeddings=True),
    "granite": dict(rms_norm_eps=1e-6, rope_theta=10000.0, hidden_act="silu", embedding_multiplier=1.0,
                    logits_scaling=1.0, residual_multiplier=1.0, attention_multiplier=1.0),
}
MODEL_TYPE_OF_ARCH = {
    "LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3", "Gemma2ForCausalLM": "gemma2", "Gemma3ForCausalLM": "gemma3_text",
    "Gemma3ForConditionalGeneration": "gemma3_text", "Phi3ForCausalLM": "phi3",
    "SmolLM3ForCausalLM": "smollm3", "GraniteForCausalLM": "granite",
}


class FamilyModel:
    """An HF checkpoint: family, merged config (defaults filled in) and weights by
    HF name, with the multimodal prefixes of a Gemma 3 checkpoint removed."""

    def __init__(self, family, conf, w):
        self.family, self.conf, self.w = family, conf, w
        c = conf
        self.dim = c["hidden_size"]
        self.n_layers = c["num_hidden_layers"]
        self.n_heads = c["num_attention_heads"]
        self.n_kv_heads = c.get("num_key_value_heads") or self.n_heads
        if family in ("phi3", "granite"):
            self.head_dim = self.dim // self.n_heads            # these configs have no head_dim
        else:
            self.head_dim = c.get("head_dim") or self.dim // self.n_heads
        self.vocab = self.w["model.embed_tokens.weight"].shape[0]
        self.tied = "lm_head.weight" not in w

    def map_weights(self, fn):
        """A new FamilyModel with weights fn(hf_name, array)."""
        return FamilyModel(self.family, self.conf, {n: fn(n, a) for n, a in self.w.items()})

    def layer_types(self):
        """'sliding' or 'full' for each layer, as HF decides it."""
        c, L = self.conf, self.n_layers
        lt = c.get("layer_types")
        if self.family in ("gemma2", "gemma3_text"):
            if lt:
                return ["sliding" if t == "sliding_attention" else "full" for t in lt]
            period = 2 if self.family == "gemma2" else int(c.get("sliding_window_pattern", 6))
            return ["sliding" if (i + 1) % period else "full" for i in range(L)]
        if self.family == "mistral" or self.family == "phi3":
            return ["sliding" if c.get("sliding_window") else "full"] * L
        if self.family in ("qwen2", "qwen3", "smollm3"):
            if c.get("use_sliding_window") and c.get("sliding_window"):
                mwl = c.get("max_window_layers", L)
                return ["sliding" if i >= mwl else "full" for i in range(L)]
        return ["full"] * L

    def uses_rope(self, i):
        if self.family != "smollm3":
            return True
        nr = self.conf.get("no_rope_layers")
        if nr:
            return bool(nr[i])
        return (i + 1) % int(self.conf.get("no_rope_layer_interval", 4)) != 0

    def rope(self, i, seq_len):
        """(inv_freq [rot/2], attention scaling of cos/sin, rot) for layer i at this sequence length."""
        c, hd = self.conf, self.head_dim
        rot = int(hd * float(c.get("partial_rotary_factor", 1.0))) if self.family == "phi3" else hd
        base = float(c.get("rope_theta", 10000.0))
        rs = c.get("rope_scaling") or {}
        rtype = rs.get("rope_type", rs.get("type"))
        sliding = self.layer_types()[i] == "sliding"
        if self.family == "gemma3_text" and sliding:
            base = float(c.get("rope_local_base_freq", 10000.0))
            rtype = None                                      # the local rotary embedding is the default one
        expo = np.arange(0, rot, 2, dtype=np.float64) / rot
        inv = 1.0 / base ** expo
        scale = 1.0
        if rtype == "linear":
            inv = inv / float(rs["factor"])
        elif rtype in ("longrope", "su"):
            orig = c.get("original_max_position_embeddings") or rs.get("original_max_position_embeddings")
            ext = rs["long_factor"] if seq_len > orig else rs["short_factor"]
            inv = 1.0 / (np.asarray(ext, dtype=np.float64) * base ** expo)
            factor = c["max_position_embeddings"] / orig
            scale = rs.get("attention_factor") or (
                math.sqrt(1 + math.log(factor) / math.log(orig)) if factor > 1.0 else 1.0)
        elif rtype == "llama3":
            inv = rope_inv_freq(Config(self.dim, 1, 1, self.n_heads, self.n_kv_heads, 1, 1, head_dim=hd,
                                       rope_theta=base, rope_scaling=rs))
        elif rtype not in (None, "default"):
            raise ValueError("rope_scaling type %r is not supported by the reference" % rtype)
        return inv, scale, rot


def read_family(path):
    """Read an HF directory of one of the supported families."""
    with open(os.path.join(path, "config.json")) as f:
        conf = json.load(f)
    arch = (conf.get("architectures") or ["LlamaForCausalLM"])[0]
    if arch not in MODEL_TYPE_OF_ARCH:
        raise ValueError("%s: architecture %s is not supported by the reference" % (path, arch))
    family = MODEL_TYPE_OF_ARCH[arch]
    if isinstance(conf.get("text_config"), dict):
        conf = dict(conf, **conf["text_config"])
    rp = conf.get("rope_parameters")
    if isinstance(rp, dict):
        # transformers 5: one rope_parameters dict, or one per attention type (Gemma 3)
        full, local = rp.get("full_attention", rp), rp.get("sliding_attention")
        conf = dict(conf, rope_theta=full.get("rope_theta", conf.get("rope_theta")))
        if local:
            conf["rope_local_base_freq"] = local.get("rope_theta")
        for k in ("partial_rotary_factor", "original_max_position_embeddings"):
            if k in full:
                conf[k] = full[k]
        conf["rope_scaling"] = None if full.get("rope_type", "default") == "default" else full
    conf = dict(FAMILY_DEFAULTS[family], **{k: v for k, v in conf.items() if v is not None})
    idx = os.path.join(path, "model.safetensors.index.json")
    st = {}
    if os.path.exists(idx):
        with open(idx) as f:
            for fn in sorted(set(json.load(f)["weight_map"].values())):
                st.update(read_safetensors(os.path.join(path, fn)))
    else:
        st = read_safetensors(os.path.join(path, "model.safetensors"))
    w = {}
    for n, a in st.items():
        if n.startswith(("vision_tower.", "multi_modal_projector.", "model.vision_tower.",
                         "model.multi_modal_projector.")):
            continue
        if n.startswith("model.language_model."):
            n = "model." + n[len("model.language_model."):]
        elif n.startswith("language_model."):
            n = n[len("language_model."):]
        w[n] = a
    if conf.get("tie_word_embeddings") and family in ("gemma2", "gemma3_text"):
        w.pop("lm_head.weight", None)
    return FamilyModel(family, conf, w)


def _act(x, name):
    if name == "silu":
        return x / (1 + np.exp(-x))
    if name in ("gelu_pytorch_tanh", "gelu_tanh"):
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    raise ValueError("activation %s not supported by the reference" % name)


def family_forward(m, tokens, dtype=np.float64, act_quant=None):
    """Logits [T, vocab] of the whole sequence (HF semantics, no cache: LongRoPE picks
    its factors by this sequence's length, as HF does for a single forward).
    act_quant: {hf weight name: fn} rounds the activation entering that product."""
    c, fam, dt = m.conf, m.family, np.dtype(dtype)
    gemma = fam in ("gemma2", "gemma3_text")
    w = {n: np.asarray(a, dtype=dt) for n, a in m.w.items()}
    T = len(tokens)
    H, KV, hd, d = m.n_heads, m.n_kv_heads, m.head_dim, m.dim
    eps = float(c["rms_norm_eps"])
    act = c.get("hidden_activation") if gemma else c.get("hidden_act", "silu")

    def norm(x, name):
        g = w[name]
        y = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
        return y * (1 + g) if gemma else y * g

    def lin(x, name, bias=True):
        if act_quant is not None and name + ".weight" in act_quant:
            x = act_quant[name + ".weight"](x.astype(np.float32)).astype(dt)
        y = x @ w[name + ".weight"].T
        if bias and name + ".bias" in w:
            y = y + w[name + ".bias"]
        return y

    x = w["model.embed_tokens.weight"][np.asarray(tokens)]
    if gemma:
        x = x * np.asarray(math.sqrt(d), dtype=dt)
    if fam == "granite":
        x = x * float(c["embedding_multiplier"])
    res_mul = float(c["residual_multiplier"]) if fam == "granite" else 1.0
    if fam == "granite":
        scaling = float(c["attention_multiplier"])
    elif gemma:
        scaling = float(c["query_pre_attn_scalar"]) ** -0.5
    else:
        scaling = hd ** -0.5
    softcap = c.get("attn_logit_softcapping") if fam == "gemma2" else None
    pos = np.arange(T)
    causal = pos[None, :] > pos[:, None]                      # [T, S] True = masked
    window = int(c.get("sliding_window") or 0)
    types = m.layer_types()
    for i in range(m.n_layers):
        p = "model.layers.%d." % i
        h = norm(x, p + "input_layernorm.weight")
        if fam == "phi3":
            qkv = lin(h, p + "self_attn.qkv_proj")
            q, k, v = qkv[:, :H * hd], qkv[:, H * hd:(H + KV) * hd], qkv[:, (H + KV) * hd:]
        else:
            q, k, v = lin(h, p + "self_attn.q_proj"), lin(h, p + "self_attn.k_proj"), lin(h, p + "self_attn.v_proj")
        q, k, v = q.reshape(T, H, hd), k.reshape(T, KV, hd), v.reshape(T, KV, hd)
        if p + "self_attn.q_norm.weight" in w:
            q = norm(q, p + "self_attn.q_norm.weight")
            k = norm(k, p + "self_attn.k_norm.weight")
        if m.uses_rope(i):
            inv, sc, rot = m.rope(i, T)
            ang = np.outer(pos.astype(np.float64), inv)
            cos = (np.cos(ang) * sc).astype(dt)[:, None, :]
            sin = (np.sin(ang) * sc).astype(dt)[:, None, :]

            def rope(t):
                r, rest = t[..., :rot], t[..., rot:]
                a, b = r[..., :rot // 2], r[..., rot // 2:]
                return np.concatenate([a * cos - b * sin, b * cos + a * sin, rest], axis=-1)
            q, k = rope(q), rope(k)
        rep = H // KV
        s = np.einsum("thd,shd->hts", q, np.repeat(k, rep, axis=1)) * scaling
        if softcap:
            s = np.tanh(s / softcap) * softcap
        mask = causal
        if types[i] == "sliding" and window:
            mask = mask | (pos[:, None] - pos[None, :] >= window)
        s = np.where(mask[None], -np.inf, s)
        s = s - s.max(axis=-1, keepdims=True)
        e = np.exp(s)
        pr = e / e.sum(axis=-1, keepdims=True)
        o = np.einsum("hts,shd->thd", pr, np.repeat(v, rep, axis=1)).reshape(T, H * hd)
        o = lin(o, p + "self_attn.o_proj")
        if gemma:
            o = norm(o, p + "post_attention_layernorm.weight")
            h = norm(x + o * res_mul, p + "pre_feedforward_layernorm.weight")
        else:
            h = norm(x + o * res_mul, p + "post_attention_layernorm.weight")
        x = x + o * res_mul
        if fam == "phi3":
            gu = lin(h, p + "mlp.gate_up_proj")
            f = gu.shape[-1] // 2
            y = lin(_act(gu[:, :f], act) * gu[:, f:], p + "mlp.down_proj")
        else:
            y = lin(_act(lin(h, p + "mlp.gate_proj"), act) * lin(h, p + "mlp.up_proj"), p + "mlp.down_proj")
        if gemma:
            y = norm(y, p + "post_feedforward_layernorm.weight")
        x = x + y * res_mul
    x = norm(x, "model.norm.weight")
    head = "lm_head" if "lm_head.weight" in w else "model.embed_tokens"
    logits = lin(x, head, bias=False)
    if fam == "granite":
        logits = logits / float(c["logits_scaling"])
    cap = c.get("final_logit_softcapping")
    if gemma and cap:
        logits = np.tanh(logits / cap) * cap
    return logits


# The GGUF tensor that holds each HF weight (for the types the converter chose).
def gguf_name_of(hf_name, family):
    simple = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
              "lm_head.weight": "output.weight"}
    if hf_name in simple:
        return simple[hf_name]
    _, _, i, *rest = hf_name.split(".")
    sub, kind = ".".join(rest[:-1]), rest[-1]
    gemma = family in ("gemma2", "gemma3_text")
    g = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
         "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "self_attn.qkv_proj": "attn_qkv",
         "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
         "post_attention_layernorm": "post_attention_norm" if gemma else "ffn_norm",
         "pre_feedforward_layernorm": "ffn_norm", "post_feedforward_layernorm": "post_ffw_norm",
         "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
         "mlp.gate_up_proj": "ffn_up"}[sub]
    return "blk.%s.%s.%s" % (i, g, kind)


NORM_ROPE_FAMILIES = ("llama", "mistral", "smollm3", "granite")   # GGUF q/k rows in adjacent-pair order


def quantized_family(m, types, table=None):
    """m with every 2-D weight replaced by dequantize(quantize(W)) of the type its GGUF
    tensor has (types: {gguf name: type}).  Row blocks are unaffected by the row
    permutation and the fused layouts the converter uses, so this is exact.  k-quant
    tensors (no reference encoder here) are decoded from the file's bytes (table from
    gguf_tensor_table) with their rows put back in HF order."""
    def fn(name, a):
        if a.ndim < 2:
            return a
        g = gguf_name_of(name, m.family)
        t = types[g]
        if t not in ("q4_k", "q6_k"):
            return roundtrip(a, t)
        tt, shape, raw = table[g]
        w = gguf_dequant(tt, shape, raw)
        if m.family in NORM_ROPE_FAMILIES and (".attn_q." in g or ".attn_k." in g):
            w = pairs_to_halves(w, m.n_heads if ".attn_q." in g else m.n_kv_heads)
        if w.shape[0] < a.shape[0]:          # embedding rows the converter dropped
            w = np.concatenate([w, a[w.shape[0]:]])
        return w
    return m.map_weights(fn)


def family_act_quant(m, types):
    """{hf weight name: roundtrip} for family_forward(act_quant=...), as act_quant_map:
    ggml rounds the activation to Q8_0 for Q8_0/Q4_0 weights and to Q8_K for k-quants."""
    act = {"q8_0": "q8_0", "q4_0": "q8_0", "q4_k": "q8_k", "q6_k": "q8_k"}
    out = {}
    for name, a in m.w.items():
        t = types.get(gguf_name_of(name, m.family))
        if a.ndim == 2 and t in act:
            out[name] = lambda x, t=act[t]: roundtrip(x, t)
    return out


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------

STORIES_EXPECTED_START = "Once upon a time, there was a little girl named Lily."


def selftest_quiet(shared):
    return selftest(shared, verbose=False)


def selftest(shared, verbose=True):
    """Validates the reference itself: RoPE conventions against each other,
    quantizer spot values and, if shared is given, the real stories260K
    checkpoint (greedy text = llama2.c's, KV cache = full recompute, float32 ~ float64)."""
    e_hf = rope_convention_check()
    e_q = quantizer_check()
    if verbose:
        print("llama2.c pairs vs HF halves on row-permuted q/k: %.2e" % e_hf)
        print("quantizer spot checks: %s" % ("ok" if e_q else "FAILED"))
    if shared is None:
        return e_hf < 1e-12 and e_q
    d = os.path.join(shared, "models", "stories260K")
    m = load(os.path.join(d, "stories260K.bin"))
    pieces, _ = read_llama2c_vocab(os.path.join(d, "tok512.bin"), m.cfg.vocab)
    ids = greedy(m, [1], 200)
    text = decode(pieces, ids).decode("utf-8", "replace")
    ok = text.startswith(STORIES_EXPECTED_START)
    # incremental (KV cache) == full-sequence forward, float32 close to float64
    full = forward(m, [1] + ids[:40])
    c = Cache(m, np.float64)
    inc = np.concatenate([forward(m, [1] + ids[:10], c), forward(m, ids[10:25], c), forward(m, ids[25:40], c)])
    f32 = forward(m, [1] + ids[:40], dtype=np.float32)
    e_inc = np.abs(full - inc).max() / np.abs(full).max()
    e_32 = np.abs(full - f32).max() / np.abs(full).max()
    if verbose:
        print(text)
        print("greedy text starts with the expected sentence: %s" % ok)
        print("incremental vs full: %.2e, float32 vs float64: %.2e" % (e_inc, e_32))
    return ok and e_inc < 1e-12 and e_32 < 1e-5 and e_hf < 1e-12 and e_q


def pairs_to_halves(w, n_heads):
    """Rows of a q/k matrix in adjacent-pair order -> rotate-half (HF) order."""
    hd = w.shape[0] // n_heads
    return w.reshape(n_heads, hd // 2, 2, -1).swapaxes(1, 2).reshape(w.shape)


def rope_convention_check():
    """The two RoPE conventions agree once q/k rows are reordered per head from
    adjacent pairs (2i, 2i+1) to halves (i, i + hd/2): checks the HF path."""
    m = random_model(dim=48, hidden=64, layers=2, heads=4, kv_heads=2, vocab=40, ctx=64, seed=5, tied=0)
    c = m.cfg
    hc = Config(c.dim, c.hidden, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab, c.max_seq,
                norm_eps=c.norm_eps, rope_style="halves", tied=False)
    h = Model(hc, m.tok_emb, [dict(L, wq=pairs_to_halves(L["wq"], c.n_heads),
                                   wk=pairs_to_halves(L["wk"], c.n_kv_heads)) for L in m.layers],
              m.norm, m.cls)
    toks = [1, 5, 9, 30, 2, 7, 7, 11, 39, 0, 3, 17]
    a = forward(m, toks)
    b = forward(h, toks)
    return float(np.abs(a - b).max() / np.abs(a).max())


def quantizer_check():
    x = np.zeros(32, np.float32)
    x[0], x[1], x[2], x[3] = 1.27, -0.635, 0.005, 0.015   # d = 0.01 -> q = 127, -63.5 -> -64, 0.5 -> 1, 1.5 -> 2
    y = q8_0_roundtrip(x)
    d = np.float32(np.float16(np.float32(1.27) / np.float32(127)))
    ok = np.array_equal(y[:4], np.array([127, -64, 1, 2], np.float32) * d)
    x = np.linspace(-1, 0.5, 32).astype(np.float32)      # max |x| = -1 -> d = 1/8, q = trunc(-8x + 8.5)
    y = q4_0_roundtrip(x)
    q = np.minimum(np.trunc(x * np.float32(8) + np.float32(8.5)), 15)
    ok = ok and np.array_equal(y, (q - 8) * np.float32(0.125))
    ok = ok and y[0] == -1.0 and y[-1] == np.float32(0.5)
    b = f32_to_bf16_f32(np.array([1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -9], np.float32))
    ok = ok and list(b) == [1.0, 1 + 2 ** -6, 1.0]         # ties to even, below half rounds down
    return bool(ok)


def main(argv):
    import argparse
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write-checkpoint")
    w.add_argument("spec")
    w.add_argument("--format", choices=("llama2c", "hf"), required=True)
    w.add_argument("-o", required=True)
    w.add_argument("--dtype", default="f32", choices=("f32", "f16", "bf16"))
    w.add_argument("--shards", type=int, default=1)
    g = sub.add_parser("logits")
    g.add_argument("model")
    g.add_argument("-o", required=True)
    g.add_argument("--quant", default="f32", choices=("f32", "f16", "bf16", "q8_0", "q4_0"))
    g.add_argument("--float32", action="store_true")
    g.add_argument("tokens", nargs="+", type=int)
    gen = sub.add_parser("generate")
    gen.add_argument("model")
    gen.add_argument("-n", type=int, default=200)
    gen.add_argument("--tokenizer")
    gen.add_argument("--prompt-ids", default="1")
    p = sub.add_parser("perplexity")
    p.add_argument("model")
    p.add_argument("--tokens-file", required=True)
    p.add_argument("-c", type=int, default=64)
    st = sub.add_parser("selftest")
    st.add_argument("shared", nargs="?", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared"))
    a = ap.parse_args(argv[1:])
    if a.cmd == "write-checkpoint":
        write_random_checkpoint(a.spec, a.format, a.o, a.dtype, a.shards)
        return 0
    if a.cmd == "selftest":
        return 0 if selftest(a.shared) else 1
    if a.cmd == "logits" and os.path.isdir(a.model):
        # any supported HF family (Llama included) through the family forward
        fm = read_family(a.model)
        if a.quant != "f32":
            fm = fm.map_weights(lambda n, w: roundtrip(w, converter_type(n, w.shape, a.quant)) if w.ndim == 2 else w)
        lg = family_forward(fm, a.tokens, dtype=np.float32 if a.float32 else np.float64)
        lg.astype("<f4").tofile(a.o)
        return 0
    m = load(a.model)
    if a.cmd == "logits":
        if a.quant != "f32":
            m = quantized_model(m, a.quant)
        lg = forward(m, a.tokens, dtype=np.float32 if a.float32 else np.float64)
        lg.astype("<f4").tofile(a.o)
        return 0
    if a.cmd == "generate":
        ids = greedy(m, [int(t) for t in a.prompt_ids.split(",")], a.n)
        print(ids)
        if a.tokenizer:
            pieces, _ = read_llama2c_vocab(a.tokenizer, m.cfg.vocab)
            sys.stdout.write(decode(pieces, ids).decode("utf-8", "replace") + "\n")
        return 0
    if a.cmd == "perplexity":
        with open(a.tokens_file) as f:
            txt = f.read()
        ids = [int(t) for t in txt.replace("[", " ").replace("]", " ").replace(",", " ").split()]
        ppl, err, mn, nc, cnt = perplexity(m, ids, a.c)
        print("chunks %d, scored %d, mean nll %.8f" % (nc, cnt, mn))
        print("Final estimate: PPL = %.4f +/- %.5f" % (ppl, err))
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
