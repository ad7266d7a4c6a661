#!/usr/bin/python3
"""Model families: Hugging Face checkpoint -> tools/convert_weights.py -> ember,
against the independent numpy forward pass of tests/ref_forward.py (HF semantics,
read from the ORIGINAL checkpoint).  Last line: "N passed, M failed".

For each family a random-weight checkpoint in Hugging Face layout (config.json,
model.safetensors, a synthetic SentencePiece tokenizer) small enough to be quick
but shaped so that every family trait matters: GQA, head_dim != hidden/heads where
the family allows it, sliding windows SMALLER than the evaluated sequence on the
layers HF makes sliding, Gemma 3's 5 local + 1 global layers (local RoPE base,
global linear scaling), SmolLM3's no-RoPE 4th layer, Phi-3's partial rotary and
LongRoPE, Qwen2's biases, Llama's optional attention and MLP biases, Granite's
multipliers, soft-capping, tied and untied heads, F32/F16/BF16 safetensors.
Every such trait is shown to move the logits by far more than the tolerance
(TRAITS), so ember getting one wrong cannot pass.

Checked:
  * the converter's GGUF against llama.cpp's conventions: exact key set and
    tensor set per architecture (recorded here from llama.cpp's
    convert_hf_to_gguf.py and gguf-py; cross-checked against
    gguf-py/gguf/constants.py when /work/llama.cpp is present), key values, and
    every tensor equal to the HF weight after exactly llama.cpp's transform
    (Q/K row permutation only for NORM-rope families, Gemma's 1 + w norms,
    Phi-3's fused tensors as stored, LongRoPE factor tensors);
  * the reference itself: on a Llama checkpoint the family forward equals
    ref_forward's llama path, and HF's rotate-half RoPE on HF rows equals
    adjacent-pair RoPE on the converter's permuted rows;
  * ember's logits (tests/tool_logits) against the reference, the whole sequence
    as one batch, token by token (--batch 1) and in batches of 7 (so batches
    straddle the sliding windows' ring): F32 maxrel <= 1e-4 with
    maxrel = max|ember - ref| / max|ref| (as tests/test_reference.py); Q8_0 and
    Q4_0 against the reference on dequantize(quantize(W)) weights with
    test_reference.py's bound nmse <= 5 * nmse(ggml activation rounding
    simulated) + 1e-8; Q4_K and Q6_K (four families at dim 256, short rows
    falling back to Q8_0) the same way, on the weights the reference decodes from
    the file itself (Q8_K activation rounding simulated);
  * Gemma3ForConditionalGeneration checkpoints (both tensor layouts) give the
    text model's GGUF.

Where llama.cpp and HF disagree the checkpoints use a configuration on which they
agree (and llama.cpp's choice is what ember must follow):
  * Gemma 2/3: llama.cpp scales queries by 1/sqrt(head_dim) and ignores
    query_pre_attn_scalar (except its 27B special case): query_pre_attn_scalar = head_dim.
  * Gemma 3: llama.cpp's local/global pattern is fixed (every 6th layer global);
    the checkpoint uses HF's default pattern 6.
  * SmolLM3: llama.cpp hard-codes no RoPE on every 4th layer: default no_rope_layers.
  * Phi-3: llama.cpp disables sliding windows for phi3: sliding_window (262144,
    like Phi-3.5/Phi-4-mini) exceeds the sequence.  LongRoPE: HF picks long
    factors when the sequence is longer than original_max_position_embeddings,
    llama.cpp when the context is (n_ctx padded up to a multiple of 256, so a
    file with original_max_position_embeddings < 256 always gets the long ones);
    with original 256 the long case evaluates 264 tokens (n_ctx 264, padded 512)
    and the short one 40 tokens (n_ctx 40, padded 256): both choose alike.
  * Mistral (llama): llama.cpp ignores sliding_window for llama; the window
    (4096) exceeds the sequence.
  * GELU: ggml's CPU GELU reads an fp16 table (gelu(fp16(x)) rounded to fp16);
    the reference computes gelu_pytorch_tanh exactly, as HF does.

Cross-check made once by hand (not part of the suite): llama.cpp's own library
(F32 K/V, no flash attention) on these F32 GGUFs against this reference: maxrel
1e-7..1e-5 for qwen2, qwen3, phi3 (long and short), smollm3, granite, llama
(with attention and MLP biases), mistral; gemma2 8.4e-5 and gemma3 5.6e-5, about
1e-5 with ggml's fp16 GELU table simulated in the reference.  On the Q4_K/Q6_K files (the
converter's own encoders) ember and llama.cpp agree to maxrel 3e-7..6e-7 for
phi3 and granite (all rows k-quant), 2e-3..5e-3 (nmse <= 1.3e-6) for qwen2
(Q8_0 fallback rows) and 2e-3 (nmse 4e-5) for gemma3 (ggml's GELU table):
ggml reads our k-quant bytes as ember and the reference do.
"""

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import ref_forward as rf  # noqa: E402
import testlib  # noqa: E402
from testlib import BUILD, ROOT  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "tools"))
import convert_weights as cw  # noqa: E402
import gguf_reader as gr  # noqa: E402

TOOL = os.path.join(ROOT, BUILD, "tests", "tool_logits")
WORK = os.path.join(ROOT, BUILD, "test-families")
LLAMA_CPP = os.environ.get("LLAMA_CPP", "/work/llama.cpp")
N_VOCAB = 512
T0 = time.time()


def check(cond, msg):
    return testlib.check(cond, msg, verbose=True)


def run(cmd, timeout=120):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (os.path.basename(cmd[0]), r.returncode,
                                                   r.stderr.decode("utf-8", "replace").strip()[-400:]))
    return r


def errs(a, ref):
    d = a - ref
    return float(np.abs(d).max() / np.abs(ref).max()), float((d * d).sum() / (ref * ref).sum())


# ---------------------------------------------------------------------------
# The families: HF config (beyond the shared shape keys) per test checkpoint
# ---------------------------------------------------------------------------
#   arch: HF architectures[0]; extra: config keys; tied; dims
FAMILIES = [
    dict(name="qwen2", arch="Qwen2ForCausalLM", model_type="qwen2", dim=64, hidden=160, layers=2, heads=4,
         kv=2, head_dim=None, tied=False, extra=dict(rope_theta=1000000.0, rms_norm_eps=1e-6,
                                                       use_sliding_window=False, sliding_window=32768)),
    dict(name="qwen3", arch="Qwen3ForCausalLM", model_type="qwen3", dim=64, hidden=128, layers=2, heads=4,
         kv=2, head_dim=32, tied=True, dtype="bf16", extra=dict(rope_theta=1000000.0, rms_norm_eps=1e-6)),
    dict(name="gemma2", arch="Gemma2ForCausalLM", model_type="gemma2", dim=64, hidden=128, layers=3, heads=4,
         kv=2, head_dim=32, tied=True, dtype="f16",
         extra=dict(query_pre_attn_scalar=32, sliding_window=8, attn_logit_softcapping=4.0,
                    final_logit_softcapping=30.0, rms_norm_eps=1e-6, rope_theta=10000.0,
                    hidden_activation="gelu_pytorch_tanh")),
    dict(name="gemma3", arch="Gemma3ForCausalLM", model_type="gemma3_text", dim=64, hidden=128, layers=6, heads=4,
         kv=1, head_dim=32, tied=True, vocab=N_VOCAB + 8,
         extra=dict(query_pre_attn_scalar=32, sliding_window=8, sliding_window_pattern=6, rms_norm_eps=1e-6,
                    rope_theta=1000000.0, rope_local_base_freq=10000.0,
                    rope_scaling={"rope_type": "linear", "factor": 4.0},
                    hidden_activation="gelu_pytorch_tanh", final_logit_softcapping=None,
                    attn_logit_softcapping=None)),
    dict(name="phi3", arch="Phi3ForCausalLM", model_type="phi3", dim=96, hidden=128, layers=2, heads=4,
         kv=2, head_dim=None, tied=False,
         extra=dict(partial_rotary_factor=0.75, rope_theta=10000.0, rms_norm_eps=1e-5,
                    max_position_embeddings=1024, original_max_position_embeddings=256, sliding_window=262144,
                    rope_scaling="longrope")),
    dict(name="smollm3", arch="SmolLM3ForCausalLM", model_type="smollm3", dim=64, hidden=128, layers=4, heads=4,
         kv=2, head_dim=None, tied=True, extra=dict(rope_theta=2000000.0, rms_norm_eps=1e-6,
                                                      no_rope_layer_interval=4)),
    dict(name="granite", arch="GraniteForCausalLM", model_type="granite", dim=64, hidden=128, layers=2, heads=4,
         kv=2, head_dim=None, tied=False,
         extra=dict(embedding_multiplier=6.0, residual_multiplier=0.5, attention_multiplier=0.15,
                    logits_scaling=4.0, rope_theta=10000.0, rms_norm_eps=1e-6)),
    dict(name="llama", arch="LlamaForCausalLM", model_type="llama", dim=64, hidden=128, layers=2, heads=4,
         kv=2, head_dim=None, tied=True, extra=dict(rope_theta=10000.0, rms_norm_eps=1e-5, attention_bias=True,
                                                      mlp_bias=True)),
    dict(name="mistral", arch="MistralForCausalLM", model_type="mistral", dim=64, hidden=160, layers=2, heads=4,
         kv=2, head_dim=32, tied=False, extra=dict(rope_theta=1000000.0, rms_norm_eps=1e-5, sliding_window=4096)),
]

# What llama.cpp's converter writes for these checkpoints (read from
# convert_hf_to_gguf.py / conversion/*.py): <arch>.* keys and per-layer tensors.
BASE_KEYS = ["context_length", "embedding_length", "feed_forward_length", "block_count", "attention.head_count",
             "attention.head_count_kv", "attention.layer_norm_rms_epsilon", "rope.freq_base"]
LLAMA_TENSORS = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_down",
                 "ffn_up"]
EXPECTED = {
    "qwen2": dict(arch="qwen2", keys=BASE_KEYS,
                  layer=LLAMA_TENSORS + ["attn_q.bias", "attn_k.bias", "attn_v.bias"]),
    "qwen3": dict(arch="qwen3", keys=BASE_KEYS + ["attention.key_length", "attention.value_length"],
                  layer=LLAMA_TENSORS + ["attn_q_norm", "attn_k_norm"]),
    "gemma2": dict(arch="gemma2",
                   keys=[k for k in BASE_KEYS if k != "rope.freq_base"] + [
                       "attention.key_length", "attention.value_length", "attn_logit_softcapping",
                       "final_logit_softcapping", "attention.sliding_window"],
                   layer=["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "post_attention_norm",
                          "ffn_norm", "ffn_gate", "ffn_up", "ffn_down", "post_ffw_norm"]),
    "gemma3": dict(arch="gemma3",
                   keys=BASE_KEYS + ["attention.key_length", "attention.value_length", "rope.freq_base_swa",
                                     "rope.scaling.type", "rope.scaling.factor", "attention.sliding_window"],
                   layer=["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "attn_q_norm", "attn_k_norm",
                          "post_attention_norm", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down", "post_ffw_norm"]),
    "phi3": dict(arch="phi3", keys=BASE_KEYS + ["rope.scaling.original_context_length", "rope.dimension_count",
                                               "attention.sliding_window", "rope.scaling.attn_factor"],
                 layer=["attn_norm", "attn_qkv", "attn_output", "ffn_norm", "ffn_up", "ffn_down"],
                 globals=["rope_factors_long.weight", "rope_factors_short.weight"]),
    "smollm3": dict(arch="smollm3", keys=BASE_KEYS + ["vocab_size", "rope.dimension_count"], layer=LLAMA_TENSORS),
    "granite": dict(arch="granite", keys=BASE_KEYS + ["vocab_size", "rope.dimension_count", "attention.scale",
                                                     "embedding_scale", "residual_scale", "logit_scale"],
                    layer=LLAMA_TENSORS),
    "llama": dict(arch="llama", keys=BASE_KEYS + ["vocab_size", "rope.dimension_count"],
                  layer=LLAMA_TENSORS + ["attn_q.bias", "attn_k.bias", "attn_v.bias", "attn_output.bias",
                                         "ffn_gate.bias", "ffn_up.bias", "ffn_down.bias"]),
    "mistral": dict(arch="llama", keys=BASE_KEYS + ["vocab_size", "rope.dimension_count", "attention.key_length",
                                                   "attention.value_length"], layer=LLAMA_TENSORS),
}
PERMUTED = ("smollm3", "granite", "mistral", "llama")        # llama.cpp ropes these in NORM mode (adjacent pairs)


def family_weights(f, seed):
    """HF-named random weights: activations O(1), attention far from uniform."""
    rng = np.random.default_rng(seed)
    d, ff, L, H, KV = f["dim"], f["hidden"], f["layers"], f["heads"], f["kv"]
    hd = f["head_dim"] or d // H
    V = f.get("vocab", N_VOCAB)
    gemma = f["name"].startswith("gemma")

    def mat(o, i, s=1.0):
        return (rng.standard_normal((o, i)) * (s / math.sqrt(i))).astype(np.float32)

    def norm(n):
        if gemma:       # stored w, used as 1 + w
            return (0.2 * rng.standard_normal(n)).astype(np.float32)
        return (1.0 + 0.2 * rng.standard_normal(n)).astype(np.float32)

    w = {"model.embed_tokens.weight": rng.standard_normal((V, d)).astype(np.float32)}
    for i in range(L):
        p = "model.layers.%d." % i
        w[p + "input_layernorm.weight"] = norm(d)
        q, k, v = mat(H * hd, d, 2.0), mat(KV * hd, d, 2.0), mat(KV * hd, d)
        if f["name"] == "phi3":
            w[p + "self_attn.qkv_proj.weight"] = np.concatenate([q, k, v])
        else:
            w[p + "self_attn.q_proj.weight"], w[p + "self_attn.k_proj.weight"] = q, k
            w[p + "self_attn.v_proj.weight"] = v
        if f["name"] == "qwen2" or f["extra"].get("attention_bias"):
            for n, r in (("q", H * hd), ("k", KV * hd), ("v", KV * hd)):
                w[p + "self_attn.%s_proj.bias" % n] = (0.5 * rng.standard_normal(r)).astype(np.float32)
        if f["extra"].get("attention_bias"):
            w[p + "self_attn.o_proj.bias"] = (0.2 * rng.standard_normal(d)).astype(np.float32)
        if f["extra"].get("mlp_bias"):
            for n, r in (("gate", ff), ("up", ff), ("down", d)):
                w[p + "mlp.%s_proj.bias" % n] = (0.3 * rng.standard_normal(r)).astype(np.float32)
        if f["name"] in ("qwen3", "gemma3"):
            w[p + "self_attn.q_norm.weight"] = norm(hd)
            w[p + "self_attn.k_norm.weight"] = norm(hd)
        w[p + "self_attn.o_proj.weight"] = mat(d, H * hd)
        w[p + "post_attention_layernorm.weight"] = norm(d)
        if gemma:
            w[p + "pre_feedforward_layernorm.weight"] = norm(d)
            w[p + "post_feedforward_layernorm.weight"] = norm(d)
        if f["name"] == "phi3":
            w[p + "mlp.gate_up_proj.weight"] = mat(2 * ff, d)
        else:
            w[p + "mlp.gate_proj.weight"] = mat(ff, d)
            w[p + "mlp.up_proj.weight"] = mat(ff, d)
        w[p + "mlp.down_proj.weight"] = mat(d, ff)
    w["model.norm.weight"] = norm(d)
    if not f["tied"]:
        w["lm_head.weight"] = mat(V, d, 3.0)
    return w


def family_config(f, seed):
    d, H = f["dim"], f["heads"]
    cfg = {"architectures": [f["arch"]], "model_type": f["model_type"], "hidden_size": d,
           "intermediate_size": f["hidden"], "num_hidden_layers": f["layers"], "num_attention_heads": H,
           "num_key_value_heads": f["kv"], "vocab_size": f.get("vocab", N_VOCAB), "max_position_embeddings": 512,
           "tie_word_embeddings": f["tied"], "bos_token_id": 1, "eos_token_id": 2,
           "torch_dtype": {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}[f.get("dtype", "f32")]}
    if f["head_dim"]:
        cfg["head_dim"] = f["head_dim"]
    if f["name"] not in ("gemma2", "gemma3"):
        cfg["hidden_act"] = "silu"
    cfg.update(f["extra"])
    if cfg.get("rope_scaling") == "longrope":
        rot = int(cfg["partial_rotary_factor"] * d) // H
        rng = np.random.default_rng(seed + 1000)
        cfg["rope_scaling"] = {"type": "longrope",
                               "long_factor": [float(x) for x in np.round(rng.uniform(1.0, 6.0, rot // 2), 4)],
                               "short_factor": [float(x) for x in np.round(rng.uniform(0.8, 1.6, rot // 2), 4)]}
    return cfg


def write_checkpoint(f, path, seed, multimodal=False):
    """An HF directory: config.json, model.safetensors (F32, or the family's dtype: the
    reference and the converter both read the rounded values), tokenizer.model/.json."""
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    cfg = family_config(f, seed)
    w = family_weights(f, seed)
    if multimodal:   # Gemma 3 4B layout: text_config, language_model.* tensors, a vision part to skip
        text = {k: v for k, v in cfg.items() if k not in ("architectures",)}
        cfg = {"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
               "text_config": dict(text, model_type="gemma3_text"), "vision_config": {"hidden_size": 16},
               "mm_tokens_per_image": 4}
        if multimodal == "v4.52":    # transformers >= 4.52 saves model.language_model.* and lm_head.*
            w = {(n.replace("model.", "model.language_model.", 1) if n.startswith("model.") else n): a
                 for n, a in w.items()}
        else:
            w = {("language_model." + n): a for n, a in w.items()}
        rng = np.random.default_rng(seed + 7)
        w["vision_tower.vision_model.embeddings.patch_embedding.weight"] = rng.standard_normal((16, 12)).astype(
            np.float32)
        w["multi_modal_projector.mm_input_projection_weight"] = rng.standard_normal((16, f["dim"])).astype(
            np.float32)
    with open(os.path.join(path, "config.json"), "w") as fh:
        json.dump(cfg, fh, indent=1)
    rf.write_safetensors(os.path.join(path, "model.safetensors"), sorted(w.items()), f.get("dtype", "f32"),
                         {"format": "pt"})
    tok = cw.synthetic_spm_vocab(N_VOCAB)
    cw.write_sentencepiece_model(tok, os.path.join(path, "tokenizer.model"))
    cw.write_tokenizer_json(tok, os.path.join(path, "tokenizer.json"))
    return path


def convert(src, out, qtype):
    """tools/convert_weights.py in this process (its command line is tested in test_convert.py)."""
    cw.convert(src, out, qtype, quiet=True)
    return out


def ember_logits(gguf, tokens, batch=None, ctx=None):
    out = gguf + ".logits.f32"
    cmd = [TOOL, gguf, out, "--kv", "f32"]
    if batch:
        cmd += ["--batch", str(batch)]
    if ctx:
        cmd += ["--ctx", str(ctx)]
    run(cmd + [str(t) for t in tokens])
    a = np.fromfile(out, dtype="<f4")
    os.remove(out)
    if a.size != len(tokens) * N_VOCAB:
        raise RuntimeError("tool_logits wrote %d floats, expected %d x %d" % (a.size, len(tokens), N_VOCAB))
    return a.reshape(len(tokens), N_VOCAB).astype(np.float64)


# ---------------------------------------------------------------------------
# GGUF against llama.cpp's conventions
# ---------------------------------------------------------------------------
def gguf_py_tables():
    """(tensor name patterns by arch name, key patterns) from llama.cpp's gguf-py, or None."""
    p = os.path.join(LLAMA_CPP, "gguf-py", "gguf", "constants.py")
    if not os.path.isfile(p):
        return None
    import importlib.util
    spec = importlib.util.spec_from_file_location("llamacpp_gguf_constants", p)
    c = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = c
    spec.loader.exec_module(c)
    tensors = {}
    for arch, name in c.MODEL_ARCH_NAMES.items():
        tensors.setdefault(name, set()).update(c.TENSOR_NAMES[t] for t in c.MODEL_TENSORS.get(arch, []) if t in c.TENSOR_NAMES)
    keys = set()
    for group in vars(c.Keys).values():
        if isinstance(group, type):
            keys.update(v for k, v in vars(group).items() if isinstance(v, str) and not k.startswith("_"))
    return tensors, keys


def check_gguf(f, ck, gguf, m, tables):
    name = f["name"]
    e = EXPECTED[name]
    arch = e["arch"]
    r = gr.GGUFReader(gguf)
    md = r.metadata
    check(md.get("general.architecture") == arch, "%s: general.architecture = %r (llama.cpp: %r)"
          % (name, md.get("general.architecture"), arch))
    got_keys = sorted(k[len(arch) + 1:] for k in md if k.startswith(arch + "."))
    check(got_keys == sorted(e["keys"]), "%s: %s.* keys are llama.cpp's%s" % (
        name, arch, "" if got_keys == sorted(e["keys"]) else ": extra %s, missing %s" % (
            sorted(set(got_keys) - set(e["keys"])), sorted(set(e["keys"]) - set(got_keys)))))
    want_t = ["token_embd.weight", "output_norm.weight"] + list(e.get("globals", []))
    if not f["tied"]:
        want_t.append("output.weight")
    for i in range(f["layers"]):
        want_t += ["blk.%d.%s" % (i, t if t.endswith(".bias") else t + ".weight") for t in e["layer"]]
    check(sorted(r.tensors) == sorted(want_t), "%s: tensor names are llama.cpp's%s" % (
        name, "" if sorted(r.tensors) == sorted(want_t) else ": extra %s, missing %s" % (
            sorted(set(r.tensors) - set(want_t))[:4], sorted(set(want_t) - set(r.tensors))[:4])))
    if tables is not None:
        tpat, kpat = tables
        allowed = tpat.get(arch, set())
        bad = []
        for t in r.tensors:
            base, _, suffix = t.rpartition(".")
            mm = re.match(r"blk\.(\d+)\.(.*)", base)
            pat = "blk.{bid}." + mm.group(2) if mm else base
            if pat not in allowed or suffix not in ("weight", "bias"):
                bad.append(t)
        badk = [k for k in md if not k.startswith("tokenizer.") and not k.startswith("general.")
                and k.replace(arch + ".", "{arch}.", 1) not in kpat]
        check(not bad and not badk, "%s: every tensor is in gguf-py's MODEL_TENSORS[%s] and every key in "
              "gguf-py's Keys%s" % (name, arch, "" if not (bad or badk) else ": %s %s" % (bad[:4], badk[:4])))
    # values of the keys
    c = m.conf
    hd = m.head_dim
    want = {"context_length": c["max_position_embeddings"], "embedding_length": f["dim"],
            "feed_forward_length": f["hidden"], "block_count": f["layers"], "attention.head_count": f["heads"],
            "attention.head_count_kv": f["kv"], "attention.layer_norm_rms_epsilon": c["rms_norm_eps"],
            "rope.freq_base": c["rope_theta"], "attention.key_length": hd, "attention.value_length": hd,
            "vocab_size": N_VOCAB, "rope.dimension_count": hd, "attn_logit_softcapping": c.get("attn_logit_softcapping"),
            "final_logit_softcapping": c.get("final_logit_softcapping"),
            "attention.sliding_window": c.get("sliding_window"), "rope.freq_base_swa": c.get("rope_local_base_freq"),
            "attention.scale": c.get("attention_multiplier"), "embedding_scale": c.get("embedding_multiplier"),
            "residual_scale": c.get("residual_multiplier"), "logit_scale": c.get("logits_scaling")}
    if name == "gemma3":
        want.update({"rope.scaling.type": "linear", "rope.scaling.factor": 4.0})
    if name == "phi3":
        orig = c["original_max_position_embeddings"]
        scale = c["max_position_embeddings"] / orig
        want.update({"rope.dimension_count": int(0.75 * f["dim"]) // f["heads"],
                     "rope.scaling.original_context_length": orig,
                     "rope.scaling.attn_factor": math.sqrt(1 + math.log(scale) / math.log(orig))})
    bad = []
    for k in e["keys"]:
        v, x = md.get(arch + "." + k), want.get(k)
        if x is None or v is None or (v != x if isinstance(x, str) else abs(float(v) - float(x)) > 1e-6 * abs(x)):
            bad.append("%s=%r (want %r)" % (k, v, x))
    check(not bad, "%s: key values%s" % (name, "" if not bad else ": " + "; ".join(bad[:4])))
    # tensors: the HF weights after llama.cpp's transform, exactly (F32 file)
    bad = []
    for hn, a in m.w.items():
        g = rf.gguf_name_of(hn, m.family)
        if g not in r.tensors:
            continue
        exp = a
        if name in PERMUTED and (".attn_q." in g or ".attn_k." in g):
            n = f["heads"] if ".attn_q." in g else f["kv"]
            exp = exp.reshape(n, 2, exp.shape[0] // n // 2, *exp.shape[1:]).swapaxes(1, 2).reshape(exp.shape)
        if name.startswith("gemma") and g.endswith("norm.weight"):
            exp = exp + np.float32(1)
        if g == "token_embd.weight":
            exp = exp[:N_VOCAB]
        got = r.tensor(g)
        if got.shape != exp.shape or not np.array_equal(got, exp):
            bad.append(g)
    if name == "phi3":
        rs = c["rope_scaling"]
        for key, t in (("long_factor", "rope_factors_long.weight"), ("short_factor", "rope_factors_short.weight")):
            if not np.array_equal(r.tensor(t), np.asarray(rs[key], np.float32)):
                bad.append(t)
    check(not bad, "%s: every tensor = the HF weight after llama.cpp's transform (%s)%s" % (
        name, "Q/K rows permuted to adjacent pairs" if name in PERMUTED else
        "1 + w on every norm, Q/K rows as in HF" if name.startswith("gemma") else "Q/K rows as in HF (NEOX)",
        "" if not bad else ": " + ", ".join(bad[:4])))
    return r


# ---------------------------------------------------------------------------
# The reference checks itself
# ---------------------------------------------------------------------------
def test_reference_self(tmp):
    # 1. on a Llama checkpoint the family forward is ref_forward's llama path
    d = os.path.join(tmp, "llama-hf")
    rf.write_random_checkpoint(dict(dim=64, hidden=128, layers=2, heads=4, kv_heads=2, head_dim=32, vocab=200,
                                    ctx=64, seed=3, tied=0, theta=500000.0, llama3=1), "hf", d)
    toks = list(np.random.default_rng(1).integers(0, 200, 30))
    a = rf.forward(rf.load(d), toks)
    b = rf.family_forward(rf.read_family(d), toks)
    e = float(np.abs(a - b).max() / np.abs(a).max())
    check(e < 1e-12, "reference: family forward == llama reference on a Llama HF checkpoint (llama3 rope) (%.1e)" % e)
    # 2. rotate-half on HF rows == adjacent pairs on the permuted rows (what NORM-mode GGUFs hold)
    e = rf.rope_convention_check()
    check(e < 1e-12, "reference: rotate-half RoPE on HF rows == pair RoPE on permuted rows (%.1e)" % e)


# Each family trait must move these logits far beyond the tolerances, or the test
# could not see ember get it wrong: (label, config overrides, HF weights dropped).
TRAITS = {
    "qwen2": [("q/k/v biases", {}, (".bias",))],
    "llama": [("attention biases", {}, ("self_attn.q_proj.bias", "self_attn.k_proj.bias", "o_proj.bias")),
              ("MLP biases", {}, ("mlp.gate_proj.bias", "mlp.up_proj.bias", "mlp.down_proj.bias"))],
    "qwen3": [("per-head q/k RMSNorm", {}, ("q_norm.", "k_norm."))],
    "gemma2": [("sliding windows", {"sliding_window": 0}, ()),
               ("attention soft-capping", {"attn_logit_softcapping": None}, ()),
               ("final soft-capping", {"final_logit_softcapping": None}, ())],
    "gemma3": [("sliding windows", {"sliding_window": 0}, ()),
               ("local RoPE base", {"rope_local_base_freq": 1000000.0}, ()),
               ("global linear RoPE scaling", {"rope_scaling": None}, ()),
               ("per-head q/k RMSNorm", {}, ("q_norm.", "k_norm."))],
    "phi3": [("long vs short factors", {"original_max_position_embeddings": 100000}, ())],
    "smollm3": [("no RoPE on layer 3", {"no_rope_layer_interval": 1000}, ())],
    "granite": [("embedding multiplier", {"embedding_multiplier": 1.0}, ()),
                ("residual multiplier", {"residual_multiplier": 1.0}, ()),
                ("attention multiplier", {"attention_multiplier": (16 ** -0.5)}, ()),
                ("logits scaling", {"logits_scaling": 1.0}, ())],
}


def check_traits(name, m, toks, ref):
    for label, over, drop in TRAITS.get(name, []):
        mm = rf.FamilyModel(m.family, dict(m.conf, **over),
                            {n: a for n, a in m.w.items() if not any(x in n for x in drop)})
        mr, _ = errs(rf.family_forward(mm, toks)[:, :N_VOCAB], ref)
        check(mr > 1e-2, "%s: the test sees %s (logits move by maxrel %.1e without it)" % (name, label, mr))


# ---------------------------------------------------------------------------
def test_family(f, idx, tables, summary):
    name = f["name"]
    d = os.path.join(WORK, name)
    os.makedirs(d, exist_ok=True)
    ck = write_checkpoint(f, os.path.join(d, "hf"), 100 + idx)
    m = rf.read_family(ck)
    g32 = convert(ck, os.path.join(d, "f32.gguf"), "f32")
    check_gguf(f, ck, g32, m, tables)
    rng = np.random.default_rng(7 + idx)
    if name == "phi3":
        runs = [("long (264 > 256 tokens)", 264), ("short (40 <= 256 tokens)", 40)]
    else:
        runs = [("", 48)]
    for label, n in runs:
        toks = [1] + [int(t) for t in rng.integers(3, N_VOCAB, n - 1)]
        ref = rf.family_forward(m, toks)[:, :N_VOCAB]
        if label != "short (40 <= 256 tokens)":
            check_traits(name, m, toks, ref)
        for batch in (None, 1, 7):
            desc = "%s f32%s%s" % (name, " " + label if label else "", " --batch %d" % batch if batch else " one batch")
            try:
                e = ember_logits(g32, toks, batch=batch, ctx=n)
            except Exception as ex:  # noqa: BLE001
                check(False, "%s: ember: %s" % (desc, ex))
                continue
            mr, nm = errs(e, ref)
            summary.append((desc, mr, nm))
            check(mr <= 1e-4, "%s: maxrel %.2e (nmse %.1e) <= 1e-4 [%d tokens, max|logit| %.3g]"
                  % (desc, mr, nm, n, np.abs(ref).max()))
        if label.startswith("short"):
            continue
        for q in ("q8_0", "q4_0"):
            gq = convert(ck, os.path.join(d, q + ".gguf"), q)
            table, _ = rf.gguf_tensor_table(gq)
            types = {k: t for k, (t, _, _) in table.items()}
            mq = rf.quantized_family(m, types)
            refq = rf.family_forward(mq, toks)[:, :N_VOCAB]
            sim = rf.family_forward(mq, toks, act_quant=rf.family_act_quant(mq, types))[:, :N_VOCAB]
            _, sim_nm = errs(sim, refq)
            tol = 5 * sim_nm + 1e-8
            try:
                e = ember_logits(gq, toks, ctx=n)
            except Exception as ex:  # noqa: BLE001
                check(False, "%s %s: ember: %s" % (name, q, ex))
                continue
            mr, nm = errs(e, refq)
            mru, nmu = errs(e, ref)
            summary.append(("%s %s" % (name, q), mr, nm))
            check(nm <= tol, "%s %s: vs ref on quantized weights maxrel %.2e nmse %.1e <= %.1e | vs unquantized "
                  "maxrel %.1e nmse %.1e" % (name, q, mr, nm, tol, mru, nmu))


KQ_FAMILIES = [("qwen2", dict(dim=256, hidden=480)), ("phi3", dict(dim=256, hidden=256)),
               ("gemma3", dict(dim=256, hidden=512, head_dim=64, query_pre_attn_scalar=64)),
               ("granite", dict(dim=256, hidden=512))]


def test_kquants(summary):
    """Q4_K / Q6_K files (rows of 256; shorter rows fall back to Q8_0 or F16, a mix
    as real downloads have) against the reference on the file's own decoded weights."""
    for idx, (name, over) in enumerate(KQ_FAMILIES):
        f = dict([x for x in FAMILIES if x["name"] == name][0])
        f["extra"] = dict(f["extra"], **{k: over.pop(k) for k in list(over) if k in f["extra"]})
        f.update(over)
        d = os.path.join(WORK, name + "-256")
        os.makedirs(d, exist_ok=True)
        ck = write_checkpoint(f, os.path.join(d, "hf"), 300 + idx)
        m = rf.read_family(ck)
        rng = np.random.default_rng(50 + idx)
        toks = [1] + [int(t) for t in rng.integers(3, N_VOCAB, 47)]
        ref = rf.family_forward(m, toks)[:, :N_VOCAB]
        for q, bound in (("q4_k", 0.1), ("q6_k", 0.03)):
            gq = convert(ck, os.path.join(d, q + ".gguf"), q)
            table, _ = rf.gguf_tensor_table(gq)
            types = {k: t for k, (t, _, _) in table.items()}
            mq = rf.quantized_family(m, types, table)
            kq = [n for n, a in m.w.items() if a.ndim == 2 and types[rf.gguf_name_of(n, m.family)] == q]
            rel = max(float(np.sqrt(((mq.w[n] - m.w[n]) ** 2).mean() / (m.w[n] ** 2).mean())) for n in kq)
            mix = sorted(set(types[rf.gguf_name_of(n, m.family)] for n, a in m.w.items() if a.ndim == 2))
            check(len(kq) >= 2 and rel < bound, "%s %s: %d tensors in %s (mix %s), decoded by the reference's own "
                  "decoder within rms %.3f of the HF weights (< %.2f)" % (name, q, len(kq), q, "/".join(mix), rel, bound))
            refq = rf.family_forward(mq, toks)[:, :N_VOCAB]
            sim = rf.family_forward(mq, toks, act_quant=rf.family_act_quant(mq, types))[:, :N_VOCAB]
            _, sim_nm = errs(sim, refq)
            tol = 5 * sim_nm + 1e-8
            try:
                e = ember_logits(gq, toks)
                e1 = ember_logits(gq, toks, batch=1)
            except Exception as ex:  # noqa: BLE001
                check(False, "%s %s: ember: %s" % (name, q, ex))
                continue
            mr, nm = errs(e, refq)
            mr1, nm1 = errs(e1, refq)
            mru, nmu = errs(e, ref)
            summary.append(("%s-256 %s" % (name, q), mr, nm))
            check(max(nm, nm1) <= tol, "%s-256 %s: vs ref on the file's weights maxrel %.2e nmse %.1e (--batch 1: "
                  "nmse %.1e) <= %.1e | vs unquantized nmse %.1e" % (name, q, mr, nm, nm1, tol, nmu))


def test_gemma3_multimodal(tables):
    """Gemma3ForConditionalGeneration: text_config + language_model.* (or, as transformers
    >= 4.52 saves it, model.language_model.*) -> the same GGUF as the text model."""
    f = [x for x in FAMILIES if x["name"] == "gemma3"][0]
    b = os.path.join(WORK, "gemma3", "f32.gguf")
    rb = gr.GGUFReader(b)
    for layout in ("language_model.*", "v4.52"):
        d = os.path.join(WORK, "gemma3-mm")
        os.makedirs(d, exist_ok=True)
        a = convert(write_checkpoint(f, os.path.join(d, "hf"), 103, multimodal=layout), os.path.join(d, "f32.gguf"),
                    "f32")
        ra = gr.GGUFReader(a)
        same_t = sorted(ra.tensors) == sorted(rb.tensors) and all(
            np.array_equal(ra.tensor(t), rb.tensor(t)) for t in rb.tensors)
        ka = {k: v for k, v in ra.metadata.items() if k != "general.name"}
        kb = {k: v for k, v in rb.metadata.items() if k != "general.name"}
        same_k = sorted(ka) == sorted(kb) and all(str(ka[k]) == str(kb[k]) for k in kb)
        check(same_t and same_k, "gemma3 multimodal checkpoint (text_config, %s, vision tensors) -> the text "
              "model's GGUF (tensors %s, keys %s)" % ("model.language_model.*" if layout == "v4.52" else layout,
                                                     "equal" if same_t else "DIFFER", "equal" if same_k else "DIFFER"))


def main():
    os.chdir(ROOT)
    os.makedirs(WORK, exist_ok=True)
    test_reference_self(WORK)
    tables = gguf_py_tables()
    if tables is None:
        print("note: %s/gguf-py not found; the recorded llama.cpp tables are used alone" % LLAMA_CPP)
    have_tool = os.access(TOOL, os.X_OK)
    if not have_tool:
        testlib.record(False, "*** MISSING %s: build tests/tool_logits.c first (make tests) ***" % TOOL)
    summary = []
    for i, f in enumerate(FAMILIES):
        try:
            test_family(f, i, tables, summary)
        except Exception as ex:  # noqa: BLE001
            import traceback
            traceback.print_exc(limit=4, file=sys.stdout)
            check(False, "%s: %s: %s" % (f["name"], type(ex).__name__, ex))
    try:
        test_kquants(summary)
    except Exception as ex:  # noqa: BLE001
        import traceback
        traceback.print_exc(limit=4, file=sys.stdout)
        check(False, "k-quants: %s: %s" % (type(ex).__name__, ex))
    try:
        test_gemma3_multimodal(tables)
    except Exception as ex:  # noqa: BLE001
        check(False, "gemma3 multimodal: %s: %s" % (type(ex).__name__, ex))
    print("\nsummary (ember vs the reference: maxrel / nmse):")
    for desc, mr, nm in summary:
        print("  %-44s %.2e / %.1e" % (desc, mr, nm))
    print("time %.1fs" % (time.time() - T0))
    return testlib.summary()


if __name__ == "__main__":
    sys.exit(main())
