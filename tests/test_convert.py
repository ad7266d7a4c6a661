#!/usr/bin/python3
"""Tests for tools/convert_weights.py, gguf_writer.py, gguf_reader.py, tokenizer_readers.py.

Run from the repository root:  /usr/bin/python3 tests/test_convert.py
Plain script: prints one line per check and finally "N passed, M failed".
Tests that need ../shared are skipped, by name, when it is missing.
"""

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np

import testlib
from testlib import ROOT, SHARED

sys.path.insert(0, os.path.join(ROOT, "tools"))
import gguf_writer as gw  # noqa: E402
import gguf_reader as gr  # noqa: E402
import tokenizer_readers as tr  # noqa: E402
import convert_weights as cw  # noqa: E402

HAVE_SHARED = os.path.isdir(SHARED)
CONVERT = os.path.join(ROOT, "tools", "convert_weights.py")
PY = sys.executable or "/usr/bin/python3"
TMP = tempfile.mkdtemp(prefix="ember_test_convert_")



def test(name, needs_shared=False):
    def deco(fn):
        if needs_shared and not HAVE_SHARED:
            testlib.missing_shared("%s (for: %s)" % (SHARED, name))
            return fn
        t0 = time.time()
        try:
            fn()
            testlib.record(True, "ok   %-55s %.2fs" % (name, time.time() - t0))
        except Exception as e:  # noqa: BLE001
            testlib.record(False, "FAIL %-55s %s: %s" % (name, type(e).__name__, e))
            traceback.print_exc(limit=3, file=sys.stdout)
            sys.stdout.flush()
        return fn
    return deco


def check(cond, msg="check failed"):
    if not cond:
        raise AssertionError(msg)


def sh(p):
    return os.path.join(SHARED, p)


def run_cli(*args):
    r = subprocess.run([PY, CONVERT] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, timeout=120)
    return r.returncode, r.stdout + r.stderr


def f32(v):
    return np.array(v, dtype=np.float32)


# ---------------------------------------------------------------------------
# independent scalar references of ggml's C code (float32 throughout)
# ---------------------------------------------------------------------------
def ref_q8_0_block(x):
    x = [np.float32(v) for v in x]
    amax = np.float32(0)
    for v in x:
        amax = max(amax, np.float32(abs(v)))
    d = np.float32(amax / np.float32(127))
    idv = np.float32(np.float32(1) / d) if d != 0 else np.float32(0)
    qs = []
    for v in x:
        y = np.float32(v * idv)
        # C roundf: half away from zero
        a = abs(float(y))
        r = int(a)
        if a - r >= 0.5:
            r += 1
        qs.append(-r if y < 0 else r)
    return np.float16(d).tobytes() + bytes(np.array(qs, dtype=np.int8).view(np.uint8))


def ref_q4_0_block(x):
    x = [np.float32(v) for v in x]
    amax = np.float32(0)
    mx = np.float32(0)
    for v in x:
        if amax < abs(v):
            amax = np.float32(abs(v))
            mx = v
    d = np.float32(mx / np.float32(-8))
    idv = np.float32(np.float32(1) / d) if d != 0 else np.float32(0)
    q = []
    for v in x:
        y = np.float32(np.float32(v * idv) + np.float32(8.5))
        q.append(min(15, int(y)))          # (int8_t) truncates toward zero
    qs = bytes((q[j] | (q[j + 16] << 4)) for j in range(16))
    return np.float16(d).tobytes() + qs


# ---------------------------------------------------------------------------
# quantizers
# ---------------------------------------------------------------------------
@test("q8_0: hand-checked block (d=1, half-away rounding)")
def _():
    x = np.zeros(32, np.float32)
    x[:8] = [127, 0.5, 1.5, 2.5, -0.5, -2.5, 0.49999997, -126.5]
    got = gw.quantize_q8_0(x).tobytes()
    want = bytes([0x00, 0x3C]) + bytes(np.array([127, 1, 2, 3, -1, -3, 0, -127] + [0] * 24, np.int8).view(np.uint8))
    check(got == want, "got %s" % got.hex())


@test("q8_0: all-zero block, negative max, fp16 scale")
def _():
    check(gw.quantize_q8_0(np.zeros(32, np.float32)).tobytes() == bytes(34), "zero block")
    x = np.zeros(32, np.float32)
    x[3] = -254.0
    x[4] = 1.0      # 1*127/254 = 0.5 -> 1
    x[5] = -1.0
    got = gw.quantize_q8_0(x).tobytes()
    # d = 254/127 = 2.0 (fp16 0x4000)
    want = bytes([0x00, 0x40]) + bytes(np.array([0, 0, 0, -127, 1, -1] + [0] * 26, np.int8).view(np.uint8))
    check(got == want, "got %s" % got.hex())


@test("q4_0: hand-checked blocks (tie: first max wins, nibble order)")
def _():
    x = np.zeros(32, np.float32)
    x[0], x[1], x[2], x[3], x[4], x[16], x[17] = -8, 8, 7.4, 0.5, -0.5, 7, -7.6
    got = gw.quantize_q4_0(x).tobytes()
    # max = -8 (first of the |8| tie) -> d = 1.0 (0x3C00), id = 1; q = min(15, trunc(x + 8.5))
    q = [8] * 32
    q[0], q[1], q[2], q[3], q[4], q[16], q[17] = 0, 15, 15, 9, 8, 15, 0
    want = bytes([0x00, 0x3C]) + bytes(q[j] | (q[j + 16] << 4) for j in range(16))
    check(got == want, "got %s want %s" % (got.hex(), want.hex()))
    x = np.zeros(32, np.float32)
    x[0], x[1], x[2], x[20] = 4, -4, 1, 3.75
    got = gw.quantize_q4_0(x).tobytes()
    # max = +4 -> d = -0.5 (fp16 0xB800), id = -2: 4 -> 0, -4 -> 16 -> 15, 1 -> 6, 3.75 -> 1, 0 -> 8
    q = [8] * 32
    q[0], q[1], q[2], q[20] = 0, 15, 6, 1
    want = bytes([0x00, 0xB8]) + bytes(q[j] | (q[j + 16] << 4) for j in range(16))
    check(got == want, "got %s want %s" % (got.hex(), want.hex()))
    # all zero: max = 0, d = 0/-8 = -0.0 (fp16 0x8000, as in C), id = 0, q = (int8)8.5 = 8
    check(gw.quantize_q4_0(np.zeros(32, np.float32)).tobytes() == bytes([0x00, 0x80]) + bytes([0x88]) * 16,
          "zero block %s" % gw.quantize_q4_0(np.zeros(32, np.float32)).tobytes().hex())


@test("q8_0/q4_0: vectorized == scalar C reference on random + edge data")
def _():
    rng = np.random.default_rng(7)
    blocks = [rng.standard_normal(32).astype(np.float32) * s for s in (1e-3, 0.02, 1, 300)]
    blocks.append(np.round(rng.standard_normal(32) * 20).astype(np.float32) / 2)     # many .5 ties
    b = np.zeros(32, np.float32); b[5] = 1e-8; blocks.append(b)                       # tiny: fp16 subnormal d
    b = np.full(32, -3.0, np.float32); blocks.append(b)
    b = np.linspace(-1, 1, 32).astype(np.float32); blocks.append(b)
    b = (np.arange(32) - 16).astype(np.float32) * np.float32(127 / 16); blocks.append(b)
    x = np.concatenate(blocks)
    qa = gw.quantize_q8_0(x).tobytes()
    qb = gw.quantize_q4_0(x).tobytes()
    for i, blk in enumerate(blocks):
        check(qa[i * 34:(i + 1) * 34] == ref_q8_0_block(blk), "q8_0 block %d differs" % i)
        check(qb[i * 18:(i + 1) * 18] == ref_q4_0_block(blk), "q4_0 block %d differs" % i)
    # 2-D input: rows quantized independently, same bytes as flat
    m = rng.standard_normal((3, 64)).astype(np.float32)
    check(gw.quantize_q8_0(m).shape == (3, 68) and gw.quantize_q8_0(m).tobytes() == gw.quantize_q8_0(m.reshape(-1)).tobytes())
    # dequantize error bounds
    y = rng.standard_normal(4096).astype(np.float32)
    e8 = np.abs(gw.dequantize_q8_0(gw.quantize_q8_0(y), y.size) - y).max()
    e4 = np.abs(gw.dequantize_q4_0(gw.quantize_q4_0(y), y.size) - y).max()
    check(e8 < 0.03 and e4 < 0.6, "dequant errors %g %g" % (e8, e4))


@test("f16 / bf16: round-to-nearest-even, NaN quiet")
def _():
    v = f32([1 + 2 ** -11, 1 + 3 * 2 ** -11, 65520.0, -0.0, 6e-8])
    check(list(gw.fp32_to_fp16(v).view(np.uint16)) == [0x3C00, 0x3C02, 0x7C00, 0x8000, 0x0001],
          str([hex(h) for h in gw.fp32_to_fp16(v).view(np.uint16)]))
    u = np.array([0x3F808000, 0x3F818000, 0x3F80FFFF, 0x7FC00001, 0x7F800001, 0xFF800000, 0x80000000, 0x7F7FFFFF],
                 dtype=np.uint32)
    got = list(gw.fp32_to_bf16_bits(u.view(np.float32)))
    want = [0x3F80, 0x3F82, 0x3F81, 0x7FC0, 0x7FC0, 0xFF80, 0x8000, 0x7F80]
    check(got == want, str([hex(g) for g in got]))
    check(np.array_equal(gw.bf16_bits_to_fp32(np.array([0x3F80], np.uint16)), f32([1.0])))


@test("type table: ids and block sizes")
def _():
    check(gw.GGML_TYPE_F32 == 0 and gw.GGML_TYPE_F16 == 1 and gw.GGML_TYPE_Q4_0 == 2 and gw.GGML_TYPE_Q8_0 == 8
          and gw.GGML_TYPE_BF16 == 30 and gw.GGML_TYPE_Q4_K == 12 and gw.GGML_TYPE_Q6_K == 14)
    check(gw.GGML_TYPES[gw.GGML_TYPE_Q4_0][1:] == (32, 18) and gw.GGML_TYPES[gw.GGML_TYPE_Q8_0][1:] == (32, 34))
    check(gw.GGML_TYPES[gw.GGML_TYPE_Q4_K][1:] == (256, 144) and gw.GGML_TYPES[gw.GGML_TYPE_Q6_K][1:] == (256, 210))


# ---------------------------------------------------------------------------
# writer <-> reader
# ---------------------------------------------------------------------------
@test("writer->reader round trip: every metadata type + tensors")
def _():
    for align in (32, 64):
        p = os.path.join(TMP, "rt%d.gguf" % align)
        w = gw.GGUFWriter(p, alignment=align)
        vals = [("u8", gw.GGUF_TYPE_UINT8, 255), ("i8", gw.GGUF_TYPE_INT8, -128), ("u16", gw.GGUF_TYPE_UINT16, 65535),
                ("i16", gw.GGUF_TYPE_INT16, -32768), ("u32", gw.GGUF_TYPE_UINT32, 4294967295),
                ("i32", gw.GGUF_TYPE_INT32, -2147483648), ("f32", gw.GGUF_TYPE_FLOAT32, 1.5),
                ("b", gw.GGUF_TYPE_BOOL, True), ("b0", gw.GGUF_TYPE_BOOL, False),
                ("s", gw.GGUF_TYPE_STRING, "h\u00e9llo \u2581 \U0001F999"), ("u64", gw.GGUF_TYPE_UINT64, 2 ** 64 - 1),
                ("i64", gw.GGUF_TYPE_INT64, -2 ** 63), ("f64", gw.GGUF_TYPE_FLOAT64, 1e-300),
                ("empty", gw.GGUF_TYPE_STRING, "")]
        for k, t, v in vals:
            w.add(k, v, t)
        for et in gw.SCALAR_DTYPES:
            w.add_array("arr.%d" % et, [0, 1, 1] if et == gw.GGUF_TYPE_BOOL else [0, 1, 2], et)
        w.add_array("arr.str", ["a", "", "\u2581b c", "<0x0A>"], gw.GGUF_TYPE_STRING)
        w.add_array("arr.nested", [gw.typed(gw.GGUF_TYPE_ARRAY, [1, 2], gw.GGUF_TYPE_INT32),
                                   gw.typed(gw.GGUF_TYPE_ARRAY, ["x"], gw.GGUF_TYPE_STRING)], gw.GGUF_TYPE_ARRAY)
        w.add_array("arr.f32", np.array([0.25, -1], np.float32))
        rng = np.random.default_rng(1)
        data = {t: rng.standard_normal((3, 64)).astype(np.float32) for t in
                (gw.GGML_TYPE_F32, gw.GGML_TYPE_F16, gw.GGML_TYPE_BF16, gw.GGML_TYPE_Q8_0, gw.GGML_TYPE_Q4_0)}
        for t, a in data.items():
            w.add_tensor("t.%s" % gw.type_name(t), a.shape, t, gw.quantize(a, t))
        w.add_tensor("odd", (5,), gw.GGML_TYPE_F32, np.arange(5, dtype=np.float32))
        w.write()
        r = gr.GGUFReader(p)
        check(r.version == 3)
        for k, t, v in vals:
            got = r.metadata[k]
            check(r.metadata_types[k] == t, "type of %s" % k)
            check(got == (np.float32(v) if t == gw.GGUF_TYPE_FLOAT32 else v), "%s: %r != %r" % (k, got, v))
        for et in gw.SCALAR_DTYPES:
            check(list(r.metadata["arr.%d" % et]) == ([0, 1, 1] if et == gw.GGUF_TYPE_BOOL else [0, 1, 2]), "arr %d" % et)
            check(r.metadata_types["arr.%d" % et] == (gw.GGUF_TYPE_ARRAY, et))
        check(r.metadata["arr.str"] == ["a", "", "\u2581b c", "<0x0A>"])
        check(list(r.metadata["arr.nested"][0]) == [1, 2] and r.metadata["arr.nested"][1] == ["x"])
        check(r.metadata["general.alignment"] == 64 if align == 64 else "general.alignment" not in r.metadata)
        for t, a in data.items():
            name = "t.%s" % gw.type_name(t)
            ti = r.tensors[name]
            check(ti.ne == [64, 3] and ti.type == t, "%s info" % name)
            check((r.data_offset + ti.offset) % align == 0, "alignment")
            check(r.raw(name).tobytes() == np.asarray(gw.quantize(a, t)).tobytes(), "%s bytes" % name)
            err = np.abs(r.tensor(name) - a).max()
            check(err < {0: 1e-9, 1: 2e-3, 30: 2e-2, 8: 3e-2, 2: 0.5}[t], "%s deq err %g" % (name, err))
        check(np.array_equal(r.tensor("odd"), np.arange(5, dtype=np.float32)))
        with open(p, "rb") as f:
            check(f.read(8) == b"GGUF\x03\x00\x00\x00")


# ---------------------------------------------------------------------------
# llama2.c checkpoint
# ---------------------------------------------------------------------------
def read_llama2c_blocks(path):
    raw = np.fromfile(path, dtype="<f4", offset=28)
    dim, hid, L, nh, nkv, V, seq = struct.unpack("<7i", open(path, "rb").read(28))
    V = abs(V)
    kv = dim * nkv // nh
    sizes = [("emb", V * dim), ("ra", L * dim), ("wq", L * dim * dim), ("wk", L * kv * dim), ("wv", L * kv * dim),
             ("wo", L * dim * dim), ("rf", L * dim), ("w1", L * hid * dim), ("w2", L * dim * hid), ("w3", L * hid * dim),
             ("fin", dim)]
    out, off = {}, 0
    for n, c in sizes:
        out[n] = raw[off:off + c]
        off += c
    return (dim, hid, L, nh, nkv, V, seq, kv), out


@test("llama2.c stories260K -> f32 GGUF: metadata and exact tensors", needs_shared=True)
def _():
    src = sh("models/stories260K/stories260K.bin")
    out = os.path.join(TMP, "s260k-f32.gguf")
    cw.convert(src, out, "f32", sh("models/stories260K/tok512.bin"), quiet=True)
    (dim, hid, L, nh, nkv, V, seq, kv), b = read_llama2c_blocks(src)
    r = gr.GGUFReader(out)
    m = r.metadata
    want = {"general.architecture": "llama", "llama.block_count": 5, "llama.embedding_length": 64,
            "llama.feed_forward_length": 172, "llama.attention.head_count": 8, "llama.attention.head_count_kv": 4,
            "llama.context_length": 512, "llama.vocab_size": 512, "llama.rope.dimension_count": 8,
            "general.file_type": 0, "tokenizer.ggml.model": "llama", "tokenizer.ggml.pre": "default",
            "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2, "tokenizer.ggml.unknown_token_id": 0,
            "tokenizer.ggml.add_bos_token": True, "general.name": "stories260K"}
    for k, v in want.items():
        check(m.get(k) == v, "%s = %r, want %r" % (k, m.get(k), v))
    check(abs(m["llama.attention.layer_norm_rms_epsilon"] - 1e-5) < 1e-12 and m["llama.rope.freq_base"] == 10000.0)
    check(r.metadata_types["llama.block_count"] == gw.GGUF_TYPE_UINT32)
    check(r.metadata_types["tokenizer.ggml.token_type"] == (gw.GGUF_TYPE_ARRAY, gw.GGUF_TYPE_INT32))
    check(r.metadata_types["tokenizer.ggml.scores"] == (gw.GGUF_TYPE_ARRAY, gw.GGUF_TYPE_FLOAT32))
    check("general.quantization_version" not in m)
    toks = m["tokenizer.ggml.tokens"]
    check(len(toks) == 512 and toks[:3] == ["<unk>", "<s>", "</s>"] and toks[3] == "<0x00>" and toks[258] == "<0xFF>")
    check(all(" " not in t for t in toks), "spaces must be U+2581")
    tt = m["tokenizer.ggml.token_type"]
    check(list(tt[:4]) == [2, 3, 3, 6] and all(tt[3:259] == 6) and all(tt[259:] == 1))
    sc = m["tokenizer.ggml.scores"]
    check(sc[259] == 0 and sc[511] == -252, "scores")
    check("output.weight" not in r.tensors, "tied classifier must not be written")
    check(len(r.tensors) == 2 + 9 * L)
    check(np.array_equal(r.tensor("token_embd.weight"), b["emb"].reshape(V, dim)))
    check(np.array_equal(r.tensor("output_norm.weight"), b["fin"]))
    names = [("attn_norm", "ra", (dim,)), ("attn_q", "wq", (dim, dim)), ("attn_k", "wk", (kv, dim)),
             ("attn_v", "wv", (kv, dim)), ("attn_output", "wo", (dim, dim)), ("ffn_norm", "rf", (dim,)),
             ("ffn_gate", "w1", (hid, dim)), ("ffn_down", "w2", (dim, hid)), ("ffn_up", "w3", (hid, dim))]
    for i in range(L):
        for g, k, shp in names:
            n = int(np.prod(shp))
            t = r.tensor("blk.%d.%s.weight" % (i, g))
            check(t.shape == shp and r.tensors["blk.%d.%s.weight" % (i, g)].type == 0)
            check(np.array_equal(t, b[k][i * n:(i + 1) * n].reshape(shp)), "blk.%d.%s differs" % (i, g))


@test("llama2.c stories260K -> q8_0 / q4_0 / bf16: types and exact bytes", needs_shared=True)
def _():
    src = sh("models/stories260K/stories260K.bin")
    (dim, hid, L, nh, nkv, V, seq, kv), b = read_llama2c_blocks(src)
    for tname, t, ft in (("q8_0", 8, 7), ("q4_0", 2, 2), ("bf16", 30, 32), ("f16", 1, 1)):
        out = os.path.join(TMP, "s260k-%s.gguf" % tname)
        cw.convert(src, out, tname, None, quiet=True)     # tokenizer found beside the checkpoint
        r = gr.GGUFReader(out)
        check(r.metadata["general.file_type"] == ft, "file_type %s" % tname)
        check(("general.quantization_version" in r.metadata) == (tname in ("q8_0", "q4_0")))
        check(r.tensors["blk.0.attn_norm.weight"].type == 0, "norms stay F32")
        check(r.tensors["blk.0.attn_q.weight"].type == t)
        # ffn_down rows have 172 elements: not a multiple of 32 -> F16 fallback
        check(r.tensors["blk.0.ffn_down.weight"].type == (1 if t in (8, 2) else t), "ffn_down fallback")
        emb = b["emb"].reshape(V, dim)
        check(r.raw("token_embd.weight").tobytes() == np.asarray(gw.quantize(emb, t)).tobytes(), "embd bytes")
        w2 = b["w2"][:dim * hid].reshape(dim, hid)
        check(r.raw("blk.0.ffn_down.weight").tobytes() == np.asarray(
            gw.quantize(w2, 1 if t in (8, 2) else t)).tobytes(), "ffn_down bytes")


@test("llama2.c: random untied checkpoint round trip (negative vocab)")
def _():
    ck = os.path.join(TMP, "r.bin")
    spec = "random:dim=64,hidden=96,layers=2,heads=4,kv_heads=2,vocab=300,ctx=64,seed=5,tied=0"
    check(cw.main(["--write-checkpoint", spec, "--format", "llama2c", "-o", ck, "-q"]) == 0)
    check(struct.unpack("<7i", open(ck, "rb").read(28))[5] == -300, "negative vocab for untied")
    g1, g2 = os.path.join(TMP, "r-ck.gguf"), os.path.join(TMP, "r-direct.gguf")
    tokp = os.path.join(TMP, "r-tok.bin")
    src = cw.RandomSource(spec)
    src.tokenizer = cw.synthetic_spm_vocab(300)
    # write the synthetic vocab as a llama2.c tokenizer to go with the checkpoint
    with open(tokp, "wb") as f:
        f.write(struct.pack("<i", 8))
        for i, (s, sc) in enumerate(zip(src.tokenizer.tokens, src.tokenizer.scores)):
            s = {1: "\n<s>\n", 2: "\n</s>\n"}.get(i, s.replace("\u2581", " "))
            bb = s.encode()
            f.write(struct.pack("<fi", sc, len(bb)) + bb)
    cw.convert(ck, g1, "f32", tokp, quiet=True)
    cw.convert(spec, g2, "f32", None, quiet=True)
    a, bq = gr.GGUFReader(g1), gr.GGUFReader(g2)
    check(list(a.tensors) == list(bq.tensors) and "output.weight" in a.tensors)
    for n in a.tensors:
        check(np.array_equal(a.tensor(n), bq.tensor(n)), n)
    check(a.metadata["tokenizer.ggml.tokens"] == bq.metadata["tokenizer.ggml.tokens"])
    check(np.array_equal(a.metadata["tokenizer.ggml.token_type"], bq.metadata["tokenizer.ggml.token_type"]))


# ---------------------------------------------------------------------------
# Hugging Face directory
# ---------------------------------------------------------------------------
def read_st(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        h = json.loads(f.read(n))
        base = 8 + n
    out = {}
    for k, v in h.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        dt = {"F32": "<f4", "F16": "<f2", "BF16": "<u2"}[v["dtype"]]
        a = np.fromfile(path, dtype=dt, count=(e - s) // np.dtype(dt).itemsize, offset=base + s)
        if v["dtype"] == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        out[k] = a.astype(np.float32).reshape(v["shape"])
    return out


@test("permute: llama.cpp's Q/K row order (hand-checked)")
def _():
    w = np.arange(8, dtype=np.float32).reshape(8, 1)   # 2 heads, head_dim 4
    check(list(cw.permute_qk(w, 2).ravel()) == [0, 2, 1, 3, 4, 6, 5, 7])
    check(np.array_equal(cw.unpermute_qk(cw.permute_qk(w, 2), 2), w))


@test("HF directory -> GGUF: permutation, GQA, tied/untied, bf16")
def _():
    for tied, dt in ((0, "f32"), (1, "bf16")):
        d = os.path.join(TMP, "hf%d" % tied)
        spec = "random:dim=64,hidden=128,layers=2,heads=8,kv_heads=2,vocab=320,ctx=128,seed=9,tied=%d" % tied
        check(cw.main(["--write-checkpoint", spec, "--format", "hf", "-o", d, "--ckpt-dtype", dt, "-q"]) == 0)
        out = os.path.join(TMP, "hf%d.gguf" % tied)
        cw.convert(d, out, "f32", None, quiet=True)
        st = read_st(os.path.join(d, "model.safetensors"))
        r = gr.GGUFReader(out)
        for i in range(2):
            q = r.tensor("blk.%d.attn_q.weight" % i)
            k = r.tensor("blk.%d.attn_k.weight" % i)
            check(q.shape == (64, 64) and k.shape == (16, 64))
            check(np.array_equal(cw.unpermute_qk(q, 8), st["model.layers.%d.self_attn.q_proj.weight" % i]), "q perm")
            check(np.array_equal(cw.unpermute_qk(k, 2), st["model.layers.%d.self_attn.k_proj.weight" % i]), "k perm")
            check(not np.array_equal(q, st["model.layers.%d.self_attn.q_proj.weight" % i]), "q must be permuted")
            check(np.array_equal(r.tensor("blk.%d.ffn_gate.weight" % i), st["model.layers.%d.mlp.gate_proj.weight" % i]))
            check(np.array_equal(r.tensor("blk.%d.ffn_down.weight" % i), st["model.layers.%d.mlp.down_proj.weight" % i]))
        check(("output.weight" in r.tensors) == (not tied))
        if not tied:
            check(np.array_equal(r.tensor("output.weight"), st["lm_head.weight"]))
        # the HF dir gives the same GGUF as converting the random spec directly
        direct = os.path.join(TMP, "hfd%d.gguf" % tied)
        cw.convert(spec, direct, "f32", None, quiet=True)
        rd = gr.GGUFReader(direct)
        for n in rd.tensors:
            a, b = r.tensor(n), rd.tensor(n)
            if dt == "bf16":
                b = gw.bf16_bits_to_fp32(gw.fp32_to_bf16_bits(b)) if b.ndim > 0 else b
            check(np.array_equal(a, b), "%s differs from direct conversion" % n)
        check(r.metadata["tokenizer.ggml.tokens"] == rd.metadata["tokenizer.ggml.tokens"])
        check(np.array_equal(r.metadata["tokenizer.ggml.scores"], rd.metadata["tokenizer.ggml.scores"]))


@test("HF sharded safetensors + llama3 rope_freqs + head_dim keys")
def _():
    d = os.path.join(TMP, "hfshard")
    spec = "random:dim=64,hidden=128,layers=2,heads=4,kv_heads=2,vocab=300,ctx=128,seed=2,head_dim=32"
    check(cw.main(["--write-checkpoint", spec, "--format", "hf", "-o", d, "-q"]) == 0)
    # split into two shards
    st = read_st(os.path.join(d, "model.safetensors"))
    names = sorted(st)
    wm = {}
    for si, part in enumerate((names[: len(names) // 2], names[len(names) // 2:])):
        fn = "model-%05d-of-00002.safetensors" % (si + 1)
        hdr, off, blobs = {}, 0, []
        for n in part:
            b = st[n].astype("<f4").tobytes()
            hdr[n] = {"dtype": "F32", "shape": list(st[n].shape), "data_offsets": [off, off + len(b)]}
            off += len(b)
            blobs.append(b)
            wm[n] = fn
        hb = json.dumps(hdr).encode()
        with open(os.path.join(d, fn), "wb") as f:
            f.write(struct.pack("<Q", len(hb)) + hb + b"".join(blobs))
    os.remove(os.path.join(d, "model.safetensors"))
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": wm}, f)
    cfg = json.load(open(os.path.join(d, "config.json")))
    cfg["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                           "original_max_position_embeddings": 64}
    cfg["rope_theta"] = 500000.0
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    out = os.path.join(TMP, "hfshard.gguf")
    cw.convert(d, out, "q8_0", None, quiet=True)
    r = gr.GGUFReader(out)
    m = r.metadata
    check(m["llama.attention.key_length"] == 32 and m["llama.attention.value_length"] == 32)
    check(m["llama.rope.dimension_count"] == 32 and m["llama.rope.freq_base"] == 500000.0)
    check(r.tensors["blk.0.attn_q.weight"].ne == [64, 128] and r.tensors["blk.0.attn_output.weight"].ne == [128, 64])
    rf = r.tensor("rope_freqs.weight")
    check(rf.shape == (16,) and r.tensors["rope_freqs.weight"].type == 0)
    # independent float64 computation of llama3 factors
    freqs = 1.0 / (500000.0 ** (np.arange(0, 32, 2) / 32))
    wl = 2 * np.pi / freqs
    want = np.where(wl < 16, 1.0, np.where(wl > 64, 8.0, 0))
    mid = (wl >= 16) & (wl <= 64)
    sm = (64 / wl[mid] - 1) / 3
    want[mid] = 1 / ((1 - sm) / 8 + sm)
    check(np.allclose(rf, want, rtol=1e-5), "rope factors %s vs %s" % (rf, want))
    check(np.array_equal(r.raw("blk.1.attn_k.weight").tobytes(),
                         gw.quantize_q8_0(cw.permute_qk(st["model.layers.1.self_attn.k_proj.weight"], 2)).tobytes()))


# ---------------------------------------------------------------------------
# tokenizers (vocab-only)
# ---------------------------------------------------------------------------
def vocab_only(src, name, *extra):
    out = os.path.join(TMP, name + ".gguf")
    rc, msg = run_cli(src, "-o", out, "--vocab-only", "-q", *extra)
    check(rc == 0, "convert failed: %s" % msg[-500:])
    r = gr.GGUFReader(out)
    check(len(r.tensors) == 0)
    return r.metadata


def check_llama2_vocab(m, scores=True):
    toks = m["tokenizer.ggml.tokens"]
    check(len(toks) == 32000 and m["llama.vocab_size"] == 32000)
    check(m["tokenizer.ggml.model"] == "llama" and m["tokenizer.ggml.pre"] == "default")
    check(toks[0] == "<unk>" and toks[1] == "<s>" and toks[2] == "</s>" and toks[3] == "<0x00>")
    check(toks[29871] == "\u2581" and toks[15043] == "\u2581Hello" and toks[259] == "\u2581\u2581")
    tt = m["tokenizer.ggml.token_type"]
    check(list(tt[:3]) == [2, 3, 3] and all(tt[3:259] == 6) and (tt == 1).sum() == 31741)
    check(m["tokenizer.ggml.bos_token_id"] == 1 and m["tokenizer.ggml.eos_token_id"] == 2
          and m["tokenizer.ggml.unknown_token_id"] == 0)
    check("tokenizer.ggml.padding_token_id" not in m)
    check(m["tokenizer.ggml.add_bos_token"] is True and m["tokenizer.ggml.add_eos_token"] is False)
    check(m["tokenizer.ggml.add_space_prefix"] is True)
    if scores:
        sc = m["tokenizer.ggml.scores"]
        check(sc[259] == -1e9 and sc[300] == -41 and sc[31999] == -31740 and sc[5] == 0, "scores")


@test("tokenizer: Llama 2 SentencePiece tokenizer.model", needs_shared=True)
def _():
    check_llama2_vocab(vocab_only(sh("tokenizers/llama2/tokenizer.model"), "v-llama2-model"))


@test("tokenizer: Llama 2 llama2.c tokenizer.bin (count from EOF)", needs_shared=True)
def _():
    m = vocab_only(sh("tokenizers/llama2/tokenizer.bin"), "v-llama2-bin")
    check_llama2_vocab(m)
    ref = gr.GGUFReader(os.path.join(TMP, "v-llama2-model.gguf")).metadata
    check(m["tokenizer.ggml.tokens"] == ref["tokenizer.ggml.tokens"], "same tokens as tokenizer.model")
    check(np.array_equal(m["tokenizer.ggml.scores"], ref["tokenizer.ggml.scores"]))


@test("tokenizer: tok512.bin (llama2.c, 512 tokens)", needs_shared=True)
def _():
    m = vocab_only(sh("models/stories260K/tok512.bin"), "v-tok512")
    toks = m["tokenizer.ggml.tokens"]
    check(len(toks) == 512 and toks[1] == "<s>" and toks[3] == "<0x00>" and toks[258] == "<0xFF>")
    check(m["tokenizer.ggml.scores"][511] == -252)
    # vocab-only of the checkpoint itself: count from the model header
    m2 = vocab_only(sh("models/stories260K/stories260K.bin"), "v-s260k")
    check(m2["tokenizer.ggml.tokens"] == toks and m2["llama.embedding_length"] == 64)


def check_gpt2(m):
    toks = m["tokenizer.ggml.tokens"]
    check(len(toks) == 50257 and m["tokenizer.ggml.model"] == "gpt2" and m["tokenizer.ggml.pre"] == "gpt-2")
    check(toks[0] == "!" and toks[220] == "\u0120" and toks[198] == "\u010a" and toks[50256] == "<|endoftext|>")
    check(toks[255] == "\u0143")
    mg = m["tokenizer.ggml.merges"]
    check(len(mg) == 50000 and mg[0] == "\u0120 t", "merges %d %r" % (len(mg), mg[:1]))
    check(m["tokenizer.ggml.token_type"][50256] == 3 and (m["tokenizer.ggml.token_type"] == 1).sum() == 50256)
    check(m["tokenizer.ggml.bos_token_id"] == 50256 and m["tokenizer.ggml.eos_token_id"] == 50256)
    check("tokenizer.ggml.scores" not in m)


@test("tokenizer: GPT-2 encoder.json + vocab.bpe (dir, either file)", needs_shared=True)
def _():
    check_gpt2(vocab_only(sh("tokenizers/gpt2"), "v-gpt2-dir"))
    check_gpt2(vocab_only(sh("tokenizers/gpt2/encoder.json"), "v-gpt2-enc"))
    t = tr.read_tokenizer(sh("tokenizers/gpt2/vocab.bpe"))
    check(len(t) == 50257 and len(t.merges) == 50000)


@test("tokenizer: Llama 3 tiktoken tokenizer.model", needs_shared=True)
def _():
    m = vocab_only(sh("tokenizers/llama3/tokenizer.model"), "v-llama3")
    toks = m["tokenizer.ggml.tokens"]
    check(len(toks) == 128256 and m["tokenizer.ggml.model"] == "gpt2" and m["tokenizer.ggml.pre"] == "llama-bpe")
    check(toks[0] == "!" and toks[128000] == "<|begin_of_text|>" and toks[128001] == "<|end_of_text|>")
    check(toks[128009] == "<|eot_id|>" and toks[128004] == "<|finetune_right_pad_id|>")
    check(toks[128012] == "<|reserved_special_token_2|>" and toks[128255] == "<|reserved_special_token_245|>")
    tt = m["tokenizer.ggml.token_type"]
    check(all(tt[128000:] == 3) and all(tt[:128000] == 1))
    mg = m["tokenizer.ggml.merges"]
    # all (a, b) splits of each token (as in Meta-Llama-3's HF tokenizer.json, which llama.cpp converts)
    check(len(mg) == 280147, "merges %d" % len(mg))
    check(mg[0] == "\u0120 \u0120", "first merge %r" % mg[0])
    check(m["tokenizer.ggml.bos_token_id"] == 128000 and m["tokenizer.ggml.eos_token_id"] == 128001)
    check(m["tokenizer.ggml.eot_token_id"] == 128009 and m["tokenizer.ggml.add_bos_token"] is True)
    # every merge's parts are tokens and a+b is a token
    s = set(toks)
    for x in mg[:2000] + mg[-2000:]:
        a, b = x.split(" ")
        check(a in s and b in s and a + b in s, x)


@test("tokenizer: HF tokenizer.json (SPM byte_fallback, ByteLevel, Llama 3 Split)", needs_shared=True)
def _():
    # SPM-style tokenizer.json (Llama 2) written from the SentencePiece model
    d = os.path.join(TMP, "tj-llama2")
    os.makedirs(d, exist_ok=True)
    t = tr.read_tokenizer(sh("tokenizers/llama2/tokenizer.model"))
    cw.write_tokenizer_json(t, os.path.join(d, "tokenizer.json"))
    m = vocab_only(os.path.join(d, "tokenizer.json"), "v-tj-llama2")
    check_llama2_vocab(m, scores=False)
    sc = m["tokenizer.ggml.scores"]
    check(sc[15043] < 0 and sc[1] == 0 and sc[3] == 0 and sc[260] > sc[15043], "scores from merge rank")
    # GPT-2 style tokenizer.json with merges as [a, b] pairs
    d = os.path.join(TMP, "tj-gpt2")
    os.makedirs(d, exist_ok=True)
    g = tr.read_tokenizer(sh("tokenizers/gpt2"))
    cw.write_tokenizer_json(g, os.path.join(d, "tokenizer.json"))
    tj = json.load(open(os.path.join(d, "tokenizer.json"), encoding="utf-8"))
    tj["model"]["merges"] = [m_.split(" ") for m_ in tj["model"]["merges"]]
    json.dump(tj, open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8"))
    check_gpt2(vocab_only(d, "v-tj-gpt2"))
    # Llama 3 style (Split with the Llama 3 regex + ByteLevel)
    d = os.path.join(TMP, "tj-llama3")
    os.makedirs(d, exist_ok=True)
    l3 = tr.read_tokenizer(sh("tokenizers/llama3/tokenizer.model"))
    cw.write_tokenizer_json(l3, os.path.join(d, "tokenizer.json"))
    m = vocab_only(d, "v-tj-llama3")
    check(m["tokenizer.ggml.pre"] == "llama-bpe" and len(m["tokenizer.ggml.tokens"]) == 128256)
    check(len(m["tokenizer.ggml.merges"]) == 280147 and m["tokenizer.ggml.bos_token_id"] == 128000)
    check(m["tokenizer.ggml.eot_token_id"] == 128009)
    # unknown pre-tokenizer regex fails clearly
    tj = json.load(open(os.path.join(d, "tokenizer.json"), encoding="utf-8"))
    tj["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\w+"
    bad = os.path.join(TMP, "tj-bad")
    os.makedirs(bad, exist_ok=True)
    json.dump(tj, open(os.path.join(bad, "tokenizer.json"), "w", encoding="utf-8"))
    rc, msg = run_cli(bad, "-o", os.path.join(TMP, "bad.gguf"), "--vocab-only")
    check(rc != 0 and "pre-tokenizer regex" in msg and "Traceback" not in msg, msg[-300:])


@test("random model with a real tokenizer (vocab from tokenizer)", needs_shared=True)
def _():
    out = os.path.join(TMP, "rnd-gpt2.gguf")
    cw.convert("random:dim=32,hidden=64,layers=1,heads=4,kv_heads=4,seed=1", out, "q8_0",
               sh("tokenizers/gpt2"), quiet=True)
    r = gr.GGUFReader(out)
    check(r.metadata["llama.vocab_size"] == 50257 and r.tensors["token_embd.weight"].ne == [32, 50257])
    check(r.tensors["output.weight"].type == 8)


@test("random model: synthetic vocab, deterministic, sane scale")
def _():
    a, b = os.path.join(TMP, "ra.gguf"), os.path.join(TMP, "rb.gguf")
    spec = "random:dim=64,hidden=172,layers=2,heads=8,kv_heads=4,vocab=512,ctx=256,seed=1"
    cw.convert(spec, a, "q4_0", None, quiet=True)
    cw.convert(spec, b, "q4_0", None, quiet=True)
    check(open(a, "rb").read() == open(b, "rb").read(), "deterministic")
    r = gr.GGUFReader(a)
    toks = r.metadata["tokenizer.ggml.tokens"]
    check(len(toks) == 512 and len(set(toks)) == 512 and toks[:3] == ["<unk>", "<s>", "</s>"])
    n = r.tensor("blk.0.attn_norm.weight")
    check(abs(float(n.mean()) - 1) < 0.1)
    q = r.tensor("blk.0.attn_q.weight")
    check(0.05 < float(q.std()) < 0.25, "q std %g" % q.std())


# ---------------------------------------------------------------------------
# bad inputs
# ---------------------------------------------------------------------------
@test("bad inputs fail with a clear message and non-zero exit")
def _():
    out = os.path.join(TMP, "bad.gguf")
    # missing config key
    d = os.path.join(TMP, "hfbad")
    check(cw.main(["--write-checkpoint", "random:dim=32,hidden=64,layers=1,heads=4,vocab=300", "--format", "hf",
                   "-o", d, "-q"]) == 0)
    cfg = json.load(open(os.path.join(d, "config.json")))
    del cfg["intermediate_size"]
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    rc, msg = run_cli(d, "-o", out)
    check(rc != 0 and "intermediate_size" in msg and "Traceback" not in msg, msg[-300:])
    cfg["intermediate_size"] = 64
    cfg["num_hidden_layers"] = 2
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    rc, msg = run_cli(d, "-o", out)
    check(rc != 0 and "missing tensors" in msg, msg[-300:])
    cfg["num_hidden_layers"] = 1
    cfg["intermediate_size"] = 65
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    rc, msg = run_cli(d, "-o", out)
    check(rc != 0 and "shape" in msg, msg[-300:])
    cfg["intermediate_size"] = 64
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    # unsupported dtype: rewrite one tensor header as I32
    stp = os.path.join(d, "model.safetensors")
    raw = open(stp, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    h = json.loads(raw[8:8 + n])
    h["model.norm.weight"]["dtype"] = "I32"
    hb = json.dumps(h).encode()
    hb += b" " * ((-len(hb)) % 8)
    open(stp, "wb").write(struct.pack("<Q", len(hb)) + hb + raw[8 + n:])
    rc, msg = run_cli(d, "-o", out)
    check(rc != 0 and "I32" in msg and "Traceback" not in msg, msg[-300:])
    # truncated llama2.c checkpoint
    ck = os.path.join(TMP, "trunc.bin")
    check(cw.main(["--write-checkpoint", "random:dim=32,hidden=64,layers=1,heads=4,vocab=300", "--format", "llama2c",
                   "-o", ck, "-q"]) == 0)
    open(ck, "r+b").truncate(os.path.getsize(ck) - 4)
    rc, msg = run_cli(ck, "-o", out, "--tokenizer", ck)
    check(rc != 0 and "does not match the header" in msg, msg[-300:])
    # garbage file
    g = os.path.join(TMP, "garbage.bin")
    open(g, "wb").write(b"\xff" * 100)
    rc, msg = run_cli(g, "-o", out)
    check(rc != 0 and "error" in msg and "Traceback" not in msg, msg[-300:])
    rc, msg = run_cli(g, "-o", out, "--vocab-only")
    check(rc != 0 and "unrecognised tokenizer format" in msg, msg[-300:])
    # random spec errors
    rc, msg = run_cli("random:dim=64,bogus=1", "-o", out)
    check(rc != 0 and "bogus" in msg, msg[-300:])
    rc, msg = run_cli("random:dim=64,heads=6,kv_heads=4", "-o", out)
    check(rc != 0 and "multiple of kv_heads" in msg, msg[-300:])
    rc, msg = run_cli(os.path.join(TMP, "nonexistent"), "-o", out)
    check(rc != 0 and "no such file" in msg, msg[-300:])
    check(not os.path.exists(out) and not os.path.exists(out + ".tmp"), "no partial output left")


@test("bad inputs needing shared data (vocab too small for model)", needs_shared=True)
def _():
    out = os.path.join(TMP, "bad2.gguf")
    rc, msg = run_cli("random:dim=32,hidden=64,layers=1,heads=4,vocab=100", "-o", out,
                      "--tokenizer", sh("models/stories260K/tok512.bin"))
    check(rc != 0 and "smaller than the tokenizer" in msg, msg[-300:])
    rc, msg = run_cli(sh("models/stories260K/stories260K.bin"), "-o", out, "--tokenizer", sh("tokenizers/gpt2"))
    check(rc != 0 and "50257" in msg and "512" in msg, msg[-300:])


# ---------------------------------------------------------------------------
# k-quants (Q4_K / Q6_K encoders; decoded by the reference's own ggml-style decoder)
# ---------------------------------------------------------------------------
sys.path.insert(0, os.path.join(ROOT, "tests"))
import ref_forward as rf  # noqa: E402


@test("q4_k / q6_k: exactly representable blocks round trip exactly (ggml layout)")
def _():
    rng = np.random.default_rng(3)
    # Q4_K: x = d*sc*q - dmin*m with d, dmin powers of two, q spanning 0..15 per sub-block,
    # sub-block 0 with sc = m = 63 (so the encoder finds d and dmin again)
    d, dmin = np.float32(2.0 ** -6), np.float32(2.0 ** -7)
    sc = rng.integers(1, 64, 8)
    m = rng.integers(0, 64, 8)
    sc[0], m[0] = 63, 63
    q = rng.integers(0, 16, (8, 32))
    q[:, 0], q[:, 1] = 0, 15
    x = (d * sc[:, None] * q - dmin * m[:, None]).astype(np.float32).reshape(1, 256)
    raw = gw.quantize_q4_k(x)
    check(raw.shape == (1, 144), "q4_k block size")
    y = rf.decode_q4_k(raw.reshape(-1, 144)).reshape(1, 256)
    check(np.array_equal(y, x), "q4_k: reference decoder gives back the input (max err %g)" % np.abs(y - x).max())
    check(np.array_equal(gw.dequantize_q4_k(raw.reshape(-1), 256), x.reshape(-1)), "q4_k: writer's decoder")
    # Q6_K: x = d*sc*(q-32), sc > 0, each sub-block reaching +31, one sub-block with sc = 127
    d = np.float32(2.0 ** -8)
    sc = rng.integers(1, 128, 16)
    sc[5] = 127
    q = rng.integers(-31, 32, (16, 16))
    q[:, 3] = 31
    x = (d * sc[:, None] * q).astype(np.float32).reshape(1, 256)
    raw = gw.quantize_q6_k(x)
    check(raw.shape == (1, 210), "q6_k block size")
    y = rf.decode_q6_k(raw.reshape(-1, 210)).reshape(1, 256)
    check(np.array_equal(y, x), "q6_k: reference decoder gives back the input (max err %g)" % np.abs(y - x).max())
    check(np.array_equal(gw.dequantize_q6_k(raw.reshape(-1), 256), x.reshape(-1)), "q6_k: writer's decoder")


@test("q4_k / q6_k: random rows, error of a 4- and 6-bit code; converter fallback to Q8_0")
def _():
    x = np.random.default_rng(4).standard_normal((6, 512)).astype(np.float32)
    for t, dec, bs, bound in ((gw.GGML_TYPE_Q4_K, rf.decode_q4_k, 144, 0.09), (gw.GGML_TYPE_Q6_K, rf.decode_q6_k, 210, 0.025)):
        raw = gw.quantize(x, t)
        y = dec(np.asarray(raw).reshape(-1, bs)).reshape(x.shape)
        rel = float(np.sqrt(((y - x) ** 2).mean() / (x ** 2).mean()))
        check(rel < bound, "%s rms rel error %.3f" % (gw.type_name(t), rel))
        check(np.array_equal(gw.dequantize(np.asarray(raw).tobytes(), t, x.shape), y), "%s dequantize" % gw.type_name(t))
        check(cw.choose_type((64, 512), t) == t and cw.choose_type((64, 96), t) == gw.GGML_TYPE_Q8_0
              and cw.choose_type((64, 100), t) == gw.GGML_TYPE_F16 and cw.choose_type((512,), t) == gw.GGML_TYPE_F32,
              "fallbacks")


# ---------------------------------------------------------------------------
# Hugging Face families: what must fail, fails with a message naming the problem
# ---------------------------------------------------------------------------
import test_families as tfam  # noqa: E402


def family_ckpt(name, path, edit_cfg=None, edit_w=None, **over):
    f = dict([x for x in tfam.FAMILIES if x["name"] == name][0], **over)
    tfam.write_checkpoint(f, path, 1)
    if edit_cfg:
        with open(os.path.join(path, "config.json")) as fh:
            cfg = json.load(fh)
        edit_cfg(cfg)
        with open(os.path.join(path, "config.json"), "w") as fh:
            json.dump(cfg, fh)
    if edit_w:
        w = rf.read_safetensors(os.path.join(path, "model.safetensors"))
        edit_w(w)
        rf.write_safetensors(os.path.join(path, "model.safetensors"), sorted(w.items()))
    return path


@test("HF families: missing / misshapen tensors and keys fail with the name")
def _():
    cases = [
        ("qwen3", None, lambda w: w.pop("model.layers.1.self_attn.k_norm.weight"), "blk.1.attn_k_norm.weight"),
        ("qwen2", None, lambda w: w.pop("model.layers.0.self_attn.q_proj.bias"), "blk.0.attn_q.bias"),
        ("gemma2", None, lambda w: w.pop("model.layers.2.post_feedforward_layernorm.weight"), "blk.2.post_ffw_norm"),
        ("phi3", None, lambda w: w.__setitem__("model.layers.0.self_attn.qkv_proj.weight",
                                               np.zeros((10, 96), np.float32)), "qkv_proj"),
        ("phi3", lambda c: c["rope_scaling"]["long_factor"].pop(), None, "long_factor"),
        ("granite", lambda c: c.__setitem__("architectures", ["GraniteMoeForCausalLM"]), None,
         "GraniteMoeForCausalLM is not supported"),
        ("gemma3", lambda c: c.__setitem__("rope_scaling", {"rope_type": "yarn", "factor": 2.0}), None, "yarn"),
        ("smollm3", None, lambda w: w.__setitem__("model.layers.0.mlp.experts.0.weight", np.zeros((4, 4), np.float32)),
         "experts"),
    ]
    for i, (name, ec, ew, want) in enumerate(cases):
        p = family_ckpt(name, os.path.join(TMP, "bad-%d" % i), ec, ew)
        rc, out = run_cli(p, "-o", os.path.join(TMP, "bad.gguf"), "--type", "f32", "-q")
        check(rc == 1 and want in out and "Traceback" not in out, "%s: rc %d, %r" % (name, rc, out.strip()[-300:]))


@test("HF families: Gemma 3 vocabulary rows beyond the tokenizer are dropped, as llama.cpp does")
def _():
    p = family_ckpt("gemma3", os.path.join(TMP, "g3"))
    out = os.path.join(TMP, "g3.gguf")
    cw.convert(p, out, "f32", quiet=True)
    r = gr.GGUFReader(out)
    check(r.tensor("token_embd.weight").shape == (512, 64), "token_embd rows = tokenizer size (config says 520)")
    check(len(r.metadata["tokenizer.ggml.tokens"]) == 512 and r.metadata["tokenizer.ggml.add_space_prefix"] is False,
          "512 tokens, add_space_prefix false (llama.cpp's Gemma converters)")


@test("HF families: transformers-5 rope_parameters configs convert like the older keys")
def _():
    def v5_gemma3(c):
        c["rope_parameters"] = {"full_attention": dict(c.pop("rope_scaling"), rope_theta=c.pop("rope_theta")),
                                "sliding_attention": {"rope_type": "default", "rope_theta": c.pop("rope_local_base_freq")}}

    def v5_phi3(c):
        rs = c.pop("rope_scaling")
        c["rope_parameters"] = dict(rs, rope_type=rs.pop("type"), rope_theta=c.pop("rope_theta"),
                                    partial_rotary_factor=c.pop("partial_rotary_factor"))
    for name, edit in (("gemma3", v5_gemma3), ("phi3", v5_phi3)):
        outs, refs = [], []
        for tag, ec in (("old", None), ("v5", edit)):
            p = family_ckpt(name, os.path.join(TMP, "%s-%s" % (name, tag)), ec)
            o = os.path.join(TMP, "%s-%s.gguf" % (name, tag))
            cw.convert(p, o, "f32", quiet=True)
            outs.append(gr.GGUFReader(o))
            refs.append(rf.family_forward(rf.read_family(p), list(range(1, 30))))
        a, b = outs
        ka = {k: str(v) for k, v in a.metadata.items() if k != "general.name"}
        kb = {k: str(v) for k, v in b.metadata.items() if k != "general.name"}
        check(ka == kb, "%s: same keys (%s)" % (name, sorted(set(ka.items()) ^ set(kb.items()))[:4]))
        check(sorted(a.tensors) == sorted(b.tensors) and all(np.array_equal(a.tensor(t), b.tensor(t)) for t in a.tensors),
              "%s: same tensors" % name)
        check(np.array_equal(refs[0], refs[1]), "%s: the reference reads both alike" % name)


@test("HF families: keys llama.cpp writes only sometimes (Gemma 3 without windows, Gemma 2's rope_theta)")
def _():
    def keys(name, ec):
        p = family_ckpt(name, os.path.join(TMP, "k-" + name), ec)
        o = os.path.join(TMP, "k-%s.gguf" % name)
        cw.convert(p, o, "f32", quiet=True)
        return gr.GGUFReader(o).metadata
    m = keys("gemma3", lambda c: c.__setitem__("sliding_window_pattern", 1))
    check("gemma3.attention.sliding_window" not in m, "gemma3 pattern 1: no sliding_window key (all layers global)")
    m = keys("gemma2", None)
    check("gemma2.rope.freq_base" not in m, "gemma2 rope_theta 10000: no freq_base, as llama.cpp")
    m = keys("gemma2", lambda c: c.__setitem__("rope_theta", 20000.0))
    check(m.get("gemma2.rope.freq_base") == 20000.0, "gemma2 rope_theta 20000 is kept (llama.cpp would drop it)")
    m = keys("phi3", lambda c: (c.pop("rope_scaling"), c.pop("sliding_window")))
    check(m.get("phi3.attention.sliding_window") == 0 and "phi3.rope.scaling.attn_factor" not in m,
          "phi3 without LongRoPE or window: sliding_window 0, no attn_factor (as llama.cpp)")


def main():
    shutil.rmtree(TMP, ignore_errors=True)
    sys.stderr.flush()
    return testlib.summary()


if __name__ == "__main__":
    sys.exit(main())
