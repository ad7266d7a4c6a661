"""GGUF v3 writer, ggml type tables and ggml-compatible quantizers (numpy only).

Layout written (little-endian):
    magic "GGUF", uint32 version (3), uint64 n_tensors, uint64 n_kv,
    n_kv x (string key, uint32 value type, value),
    n_tensors x (string name, uint32 n_dims, uint64 ne[n_dims], uint32 ggml type, uint64 offset),
    zero padding to `general.alignment`, tensor data (each tensor starts aligned).
ne[0] is the innermost dimension (the row length); a numpy array of shape (rows, cols)
therefore has ne = [cols, rows].

The quantizers reproduce ggml's reference quantizers (quantize_row_q8_0_ref,
quantize_row_q4_0_ref, fp32->fp16 and fp32->bf16) byte for byte: every intermediate
is computed in float32 exactly as the C code does.
"""

import struct

import numpy as np

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
DEFAULT_ALIGNMENT = 32

# ---------------------------------------------------------------------------
# GGUF metadata value types
# ---------------------------------------------------------------------------
GGUF_TYPE_UINT8 = 0
GGUF_TYPE_INT8 = 1
GGUF_TYPE_UINT16 = 2
GGUF_TYPE_INT16 = 3
GGUF_TYPE_UINT32 = 4
GGUF_TYPE_INT32 = 5
GGUF_TYPE_FLOAT32 = 6
GGUF_TYPE_BOOL = 7
GGUF_TYPE_STRING = 8
GGUF_TYPE_ARRAY = 9
GGUF_TYPE_UINT64 = 10
GGUF_TYPE_INT64 = 11
GGUF_TYPE_FLOAT64 = 12

# value type -> struct format of one scalar
SCALAR_FORMATS = {
    GGUF_TYPE_UINT8: "<B",
    GGUF_TYPE_INT8: "<b",
    GGUF_TYPE_UINT16: "<H",
    GGUF_TYPE_INT16: "<h",
    GGUF_TYPE_UINT32: "<I",
    GGUF_TYPE_INT32: "<i",
    GGUF_TYPE_FLOAT32: "<f",
    GGUF_TYPE_BOOL: "<?",
    GGUF_TYPE_UINT64: "<Q",
    GGUF_TYPE_INT64: "<q",
    GGUF_TYPE_FLOAT64: "<d",
}
# value type -> numpy dtype (for fast arrays)
SCALAR_DTYPES = {
    GGUF_TYPE_UINT8: np.dtype("<u1"),
    GGUF_TYPE_INT8: np.dtype("<i1"),
    GGUF_TYPE_UINT16: np.dtype("<u2"),
    GGUF_TYPE_INT16: np.dtype("<i2"),
    GGUF_TYPE_UINT32: np.dtype("<u4"),
    GGUF_TYPE_INT32: np.dtype("<i4"),
    GGUF_TYPE_FLOAT32: np.dtype("<f4"),
    GGUF_TYPE_BOOL: np.dtype("u1"),
    GGUF_TYPE_UINT64: np.dtype("<u8"),
    GGUF_TYPE_INT64: np.dtype("<i8"),
    GGUF_TYPE_FLOAT64: np.dtype("<f8"),
}
GGUF_TYPE_NAMES = {
    0: "uint8", 1: "int8", 2: "uint16", 3: "int16", 4: "uint32", 5: "int32",
    6: "float32", 7: "bool", 8: "string", 9: "array", 10: "uint64", 11: "int64", 12: "float64",
}

# ---------------------------------------------------------------------------
# ggml tensor types: the ONE table of ids and block geometry
# ---------------------------------------------------------------------------
GGML_TYPE_F32 = 0
GGML_TYPE_F16 = 1
GGML_TYPE_Q4_0 = 2
GGML_TYPE_Q4_1 = 3
GGML_TYPE_Q5_0 = 6
GGML_TYPE_Q5_1 = 7
GGML_TYPE_Q8_0 = 8
GGML_TYPE_Q8_1 = 9
GGML_TYPE_Q2_K = 10
GGML_TYPE_Q3_K = 11
GGML_TYPE_Q4_K = 12
GGML_TYPE_Q5_K = 13
GGML_TYPE_Q6_K = 14
GGML_TYPE_Q8_K = 15
GGML_TYPE_I8 = 24
GGML_TYPE_I16 = 25
GGML_TYPE_I32 = 26
GGML_TYPE_I64 = 27
GGML_TYPE_F64 = 28
GGML_TYPE_BF16 = 30

QK_K = 256
# type id -> (name, elements per block, bytes per block)
GGML_TYPES = {
    GGML_TYPE_F32: ("F32", 1, 4),
    GGML_TYPE_F16: ("F16", 1, 2),
    GGML_TYPE_Q4_0: ("Q4_0", 32, 2 + 16),
    GGML_TYPE_Q4_1: ("Q4_1", 32, 2 + 2 + 16),
    GGML_TYPE_Q5_0: ("Q5_0", 32, 2 + 4 + 16),
    GGML_TYPE_Q5_1: ("Q5_1", 32, 2 + 2 + 4 + 16),
    GGML_TYPE_Q8_0: ("Q8_0", 32, 2 + 32),
    GGML_TYPE_Q8_1: ("Q8_1", 32, 4 + 4 + 32),
    GGML_TYPE_Q2_K: ("Q2_K", QK_K, 2 + 2 + QK_K // 16 + QK_K // 4),
    GGML_TYPE_Q3_K: ("Q3_K", QK_K, 2 + QK_K // 4 + QK_K // 8 + 12),
    GGML_TYPE_Q4_K: ("Q4_K", QK_K, 2 + 2 + QK_K // 2 + 12),
    GGML_TYPE_Q5_K: ("Q5_K", QK_K, 2 + 2 + QK_K // 2 + QK_K // 8 + 12),
    GGML_TYPE_Q6_K: ("Q6_K", QK_K, 2 + QK_K // 2 + QK_K // 4 + QK_K // 16),
    GGML_TYPE_Q8_K: ("Q8_K", QK_K, 4 + QK_K + QK_K // 8),
    GGML_TYPE_I8: ("I8", 1, 1),
    GGML_TYPE_I16: ("I16", 1, 2),
    GGML_TYPE_I32: ("I32", 1, 4),
    GGML_TYPE_I64: ("I64", 1, 8),
    GGML_TYPE_F64: ("F64", 1, 8),
    GGML_TYPE_BF16: ("BF16", 1, 2),
}
GGML_TYPE_BY_NAME = {v[0].lower(): k for k, v in GGML_TYPES.items()}

# llama_ftype values (general.file_type)
LLAMA_FTYPE_ALL_F32 = 0
LLAMA_FTYPE_MOSTLY_F16 = 1
LLAMA_FTYPE_MOSTLY_Q4_0 = 2
LLAMA_FTYPE_MOSTLY_Q8_0 = 7
LLAMA_FTYPE_MOSTLY_Q4_K_S = 14
LLAMA_FTYPE_MOSTLY_Q6_K = 18
LLAMA_FTYPE_MOSTLY_BF16 = 32
FTYPE_OF_TYPE = {
    GGML_TYPE_Q4_K: LLAMA_FTYPE_MOSTLY_Q4_K_S,
    GGML_TYPE_Q6_K: LLAMA_FTYPE_MOSTLY_Q6_K,
    GGML_TYPE_F32: LLAMA_FTYPE_ALL_F32,
    GGML_TYPE_F16: LLAMA_FTYPE_MOSTLY_F16,
    GGML_TYPE_Q4_0: LLAMA_FTYPE_MOSTLY_Q4_0,
    GGML_TYPE_Q8_0: LLAMA_FTYPE_MOSTLY_Q8_0,
    GGML_TYPE_BF16: LLAMA_FTYPE_MOSTLY_BF16,
}


def block_size(ggml_type):
    return GGML_TYPES[ggml_type][1]


def type_size(ggml_type):
    return GGML_TYPES[ggml_type][2]


def type_name(ggml_type):
    return GGML_TYPES[ggml_type][0] if ggml_type in GGML_TYPES else "type%d" % ggml_type


def tensor_nbytes(ne, ggml_type):
    """Bytes of a tensor with dims ne (ne[0] innermost)."""
    bs, ts = GGML_TYPES[ggml_type][1:]
    if ne[0] % bs:
        raise ValueError("row length %d is not a multiple of %s block size %d"
                         % (ne[0], type_name(ggml_type), bs))
    n = 1
    for d in ne:
        n *= int(d)
    return n // bs * ts


# ---------------------------------------------------------------------------
# Quantizers (bit-exact with ggml's reference C code)
# ---------------------------------------------------------------------------
def fp32_to_fp16(x):
    """IEEE round-to-nearest-even, like GGML_FP32_TO_FP16 / F16C."""
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        h = x.astype(np.float16)
    nan = np.isnan(x)
    if nan.any():   # like F16C: quiet NaN, sign and top payload bits kept
        u = np.ascontiguousarray(x).view(np.uint32)
        q = (((u >> 16) & 0x8000) | 0x7E00 | ((u >> 13) & 0x3FF)).astype(np.uint16)
        h = np.where(nan, q.view(np.float16), h)
    return h


def fp32_to_bf16_bits(x):
    """ggml_compute_fp32_to_bf16: round to nearest even, NaN forced quiet. Returns uint16."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    isnan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    r = ((u.astype(np.uint64) + (0x7FFF + ((u >> np.uint32(16)) & np.uint32(1)))) >> 16)
    r = r.astype(np.uint16)
    if isnan.any():
        r = np.where(isnan, ((u >> np.uint32(16)) | np.uint32(64)).astype(np.uint16), r)
    return r


def bf16_bits_to_fp32(b):
    return (np.asarray(b, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def _roundf(x):
    """C roundf (half away from zero) on float32, exactly (no x+0.5 rounding trap)."""
    a = np.abs(x)
    f = np.floor(a)
    r = f + ((a - f) >= np.float32(0.5)).astype(np.float32)   # a - f is exact in float32
    return np.copysign(r, x)


def _blocks(x, qk):
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.shape[-1] % qk:
        raise ValueError("row length %d is not a multiple of the block size %d" % (x.shape[-1], qk))
    return x.reshape(-1, qk)


def quantize_q8_0(x):
    """quantize_row_q8_0_ref over the last axis. Returns uint8 array [..., nblocks*34]."""
    shape = np.shape(x)
    b = _blocks(x, 32)
    amax = np.max(np.abs(b), axis=1)
    d = (amax / np.float32(127.0)).astype(np.float32)
    with np.errstate(divide="ignore"):
        idv = np.where(d != 0, np.float32(1.0) / np.where(d != 0, d, np.float32(1)), np.float32(0)).astype(np.float32)
    q = _roundf(b * idv[:, None]).astype(np.int8)
    out = np.empty((b.shape[0], 34), dtype=np.uint8)
    out[:, 0:2] = fp32_to_fp16(d).view(np.uint8).reshape(-1, 2)
    out[:, 2:] = q.view(np.uint8)
    return out.reshape(shape[:-1] + (shape[-1] // 32 * 34,))


def dequantize_q8_0(raw, n):
    raw = np.frombuffer(raw, dtype=np.uint8) if not isinstance(raw, np.ndarray) else raw.reshape(-1)
    blk = raw.reshape(-1, 34)
    d = blk[:, 0:2].copy().view(np.float16).astype(np.float32)
    q = blk[:, 2:].copy().view(np.int8).astype(np.float32)
    return (q * d).reshape(-1)[:n]


def quantize_q4_0(x):
    """quantize_row_q4_0_ref over the last axis. Returns uint8 array [..., nblocks*18]."""
    shape = np.shape(x)
    b = _blocks(x, 32)
    a = np.abs(b)
    idx = np.argmax(a, axis=1)          # first index of the max |v|, like `if (amax < fabsf(v))`
    mx = b[np.arange(b.shape[0]), idx]
    d = (mx / np.float32(-8.0)).astype(np.float32)
    with np.errstate(divide="ignore"):
        idv = np.where(d != 0, np.float32(1.0) / np.where(d != 0, d, np.float32(1)), np.float32(0)).astype(np.float32)
    y = (b * idv[:, None]).astype(np.float32) + np.float32(8.5)
    q = np.minimum(np.trunc(y), np.float32(15)).astype(np.uint8)   # (int8_t) truncation, then MIN(15, .)
    out = np.empty((b.shape[0], 18), dtype=np.uint8)
    out[:, 0:2] = fp32_to_fp16(d).view(np.uint8).reshape(-1, 2)
    out[:, 2:] = q[:, :16] | (q[:, 16:] << np.uint8(4))
    return out.reshape(shape[:-1] + (shape[-1] // 32 * 18,))


def dequantize_q4_0(raw, n):
    raw = np.frombuffer(raw, dtype=np.uint8) if not isinstance(raw, np.ndarray) else raw.reshape(-1)
    blk = raw.reshape(-1, 18)
    d = blk[:, 0:2].copy().view(np.float16).astype(np.float32)
    qs = blk[:, 2:]
    lo = (qs & 0x0F).astype(np.int16) - 8
    hi = (qs >> 4).astype(np.int16) - 8
    q = np.concatenate([lo, hi], axis=1).astype(np.float32)
    return (q * d).reshape(-1)[:n]


# k-quants.  The encoders are simple (min/max per sub-block, then the 6- or 8-bit
# sub-block scales), not ggml's iterative search: the bytes are valid Q4_K / Q6_K
# that ggml and ember decode alike, with somewhat larger rounding error than
# llama-quantize gives.  They exist to put k-quant tensors in test files.
def _kblocks(x):
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.shape[-1] % QK_K:
        raise ValueError("row length %d is not a multiple of the k-quant block size %d" % (x.shape[-1], QK_K))
    return x.reshape(-1, QK_K)


def _safe_div(a, b):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b != 0, a / np.where(b != 0, b, np.float32(1)), np.float32(0)).astype(np.float32)


def quantize_q4_k(x):
    """Q4_K: value = d*sc*q - dmin*m per 32-value sub-block, q in 0..15, sc/m 6 bits."""
    shape = np.shape(x)
    b = _kblocks(x)
    nb = b.shape[0]
    sub = b.reshape(nb, 8, 32)
    mn = np.minimum(sub.min(axis=2), np.float32(0))
    scale = ((sub.max(axis=2) - mn) / np.float32(15)).astype(np.float32)
    mins = (-mn).astype(np.float32)
    d = fp32_to_fp16(scale.max(axis=1) / np.float32(63)).astype(np.float32)
    dmin = fp32_to_fp16(mins.max(axis=1) / np.float32(63)).astype(np.float32)
    sc = np.clip(np.rint(_safe_div(scale, d[:, None])), 0, 63).astype(np.uint8)
    m = np.clip(np.rint(_safe_div(mins, dmin[:, None])), 0, 63).astype(np.uint8)
    eff = d[:, None] * sc.astype(np.float32)
    effm = dmin[:, None] * m.astype(np.float32)
    q = np.clip(np.rint(_safe_div(sub + effm[:, :, None], eff[:, :, None])), 0, 15).astype(np.uint8)
    out = np.empty((nb, 144), dtype=np.uint8)
    out[:, 0:2] = fp32_to_fp16(d).view(np.uint8).reshape(-1, 2)
    out[:, 2:4] = fp32_to_fp16(dmin).view(np.uint8).reshape(-1, 2)
    out[:, 4:8] = sc[:, :4] | ((sc[:, 4:] >> 4) << 6)
    out[:, 8:12] = m[:, :4] | ((m[:, 4:] >> 4) << 6)
    out[:, 12:16] = (sc[:, 4:] & 15) | ((m[:, 4:] & 15) << 4)
    qs = q.reshape(nb, 4, 2, 32)
    out[:, 16:] = (qs[:, :, 0, :] | (qs[:, :, 1, :] << 4)).reshape(nb, 128)
    return out.reshape(shape[:-1] + (shape[-1] // QK_K * 144,))


def quantize_q6_k(x):
    """Q6_K: value = d*sc*(q - 32) per 16-value sub-block, q in 0..63, sc int8."""
    shape = np.shape(x)
    b = _kblocks(x)
    nb = b.shape[0]
    sub = b.reshape(nb, 16, 16)
    scale = (np.abs(sub).max(axis=2) / np.float32(31)).astype(np.float32)
    d = fp32_to_fp16(scale.max(axis=1) / np.float32(127)).astype(np.float32)
    sc = np.clip(np.rint(_safe_div(scale, d[:, None])), -128, 127).astype(np.int8)
    eff = d[:, None] * sc.astype(np.float32)
    u = (np.clip(np.rint(_safe_div(sub, eff[:, :, None])), -32, 31) + 32).astype(np.uint8).reshape(nb, 2, 4, 32)
    out = np.empty((nb, 210), dtype=np.uint8)
    lo = u & 15
    ql = np.concatenate([lo[:, :, 0] | (lo[:, :, 2] << 4), lo[:, :, 1] | (lo[:, :, 3] << 4)], axis=2)   # [nb, 2, 64]
    qh = (u[:, :, 0] >> 4) | ((u[:, :, 1] >> 4) << 2) | ((u[:, :, 2] >> 4) << 4) | ((u[:, :, 3] >> 4) << 6)
    out[:, 0:128] = ql.reshape(nb, 128)
    out[:, 128:192] = qh.reshape(nb, 64)
    out[:, 192:208] = sc.view(np.uint8)
    out[:, 208:210] = fp32_to_fp16(d).view(np.uint8).reshape(-1, 2)
    return out.reshape(shape[:-1] + (shape[-1] // QK_K * 210,))


def dequantize_q4_k(raw, n):
    blk = np.asarray(raw, dtype=np.uint8).reshape(-1, 144)
    d = blk[:, 0:2].copy().view(np.float16).astype(np.float32).reshape(-1)
    dmin = blk[:, 2:4].copy().view(np.float16).astype(np.float32).reshape(-1)
    s = blk[:, 4:16]
    sc = np.concatenate([s[:, 0:4] & 63, (s[:, 8:12] & 15) | ((s[:, 0:4] >> 6) << 4)], axis=1).astype(np.float32)
    m = np.concatenate([s[:, 4:8] & 63, (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)], axis=1).astype(np.float32)
    qs = blk[:, 16:].reshape(-1, 4, 32)
    q = np.stack([qs & 15, qs >> 4], axis=2).reshape(-1, 8, 32).astype(np.float32)
    return (d[:, None, None] * sc[:, :, None] * q - dmin[:, None, None] * m[:, :, None]).reshape(-1)[:n]


def dequantize_q6_k(raw, n):
    blk = np.asarray(raw, dtype=np.uint8).reshape(-1, 210)
    ql = blk[:, 0:128].reshape(-1, 2, 64)
    qh = blk[:, 128:192].reshape(-1, 2, 32)
    sc = blk[:, 192:208].copy().view(np.int8).astype(np.float32).reshape(-1, 2, 8)
    d = blk[:, 208:210].copy().view(np.float16).astype(np.float32).reshape(-1)
    u = np.stack([(ql[:, :, :32] & 15) | ((qh & 3) << 4), (ql[:, :, 32:] & 15) | (((qh >> 2) & 3) << 4),
                  (ql[:, :, :32] >> 4) | (((qh >> 4) & 3) << 4), (ql[:, :, 32:] >> 4) | (((qh >> 6) & 3) << 4)],
                 axis=2).astype(np.float32) - 32                      # [nb, 2, 4, 32]
    v = u.reshape(-1, 2, 8, 16) * sc[:, :, :, None] * d[:, None, None, None]
    return v.reshape(-1)[:n]


def quantize(x, ggml_type):
    """Convert a float array (last axis = row) to the raw bytes/array of ggml_type."""
    if ggml_type == GGML_TYPE_F32:
        return np.ascontiguousarray(x, dtype=np.float32)
    if ggml_type == GGML_TYPE_F16:
        return fp32_to_fp16(x)
    if ggml_type == GGML_TYPE_BF16:
        return fp32_to_bf16_bits(x)
    if ggml_type == GGML_TYPE_Q8_0:
        return quantize_q8_0(x)
    if ggml_type == GGML_TYPE_Q4_0:
        return quantize_q4_0(x)
    if ggml_type == GGML_TYPE_Q4_K:
        return quantize_q4_k(x)
    if ggml_type == GGML_TYPE_Q6_K:
        return quantize_q6_k(x)
    raise ValueError("quantization to %s is not supported" % type_name(ggml_type))


def dequantize(raw, ggml_type, shape):
    """raw bytes (or uint8 array) of a tensor -> float32 numpy array of `shape` (numpy order)."""
    n = 1
    for s in shape:
        n *= int(s)
    buf = raw if isinstance(raw, (bytes, bytearray, memoryview)) else np.ascontiguousarray(raw).view(np.uint8).reshape(-1)
    if ggml_type == GGML_TYPE_F32:
        v = np.frombuffer(buf, dtype="<f4", count=n).astype(np.float32)
    elif ggml_type == GGML_TYPE_F16:
        v = np.frombuffer(buf, dtype="<f2", count=n).astype(np.float32)
    elif ggml_type == GGML_TYPE_BF16:
        v = bf16_bits_to_fp32(np.frombuffer(buf, dtype="<u2", count=n))
    elif ggml_type == GGML_TYPE_F64:
        v = np.frombuffer(buf, dtype="<f8", count=n).astype(np.float32)
    elif ggml_type in (GGML_TYPE_I8, GGML_TYPE_I16, GGML_TYPE_I32, GGML_TYPE_I64):
        dt = {GGML_TYPE_I8: "i1", GGML_TYPE_I16: "<i2", GGML_TYPE_I32: "<i4", GGML_TYPE_I64: "<i8"}[ggml_type]
        v = np.frombuffer(buf, dtype=dt, count=n).astype(np.float32)
    elif ggml_type == GGML_TYPE_Q8_0:
        v = dequantize_q8_0(np.frombuffer(buf, dtype=np.uint8, count=n // 32 * 34), n)
    elif ggml_type == GGML_TYPE_Q4_0:
        v = dequantize_q4_0(np.frombuffer(buf, dtype=np.uint8, count=n // 32 * 18), n)
    elif ggml_type == GGML_TYPE_Q4_K:
        v = dequantize_q4_k(np.frombuffer(buf, dtype=np.uint8, count=n // QK_K * 144), n)
    elif ggml_type == GGML_TYPE_Q6_K:
        v = dequantize_q6_k(np.frombuffer(buf, dtype=np.uint8, count=n // QK_K * 210), n)
    else:
        raise ValueError("dequantization of %s is not supported" % type_name(ggml_type))
    return v.reshape(shape)


# ---------------------------------------------------------------------------
# Writer
# ---------------------------------------------------------------------------
class _U:
    """Explicitly typed metadata value: _U(GGUF_TYPE_x, value[, array_elem_type])."""

    def __init__(self, vtype, value, elem_type=None):
        self.vtype, self.value, self.elem_type = vtype, value, elem_type


def typed(vtype, value, elem_type=None):
    return _U(vtype, value, elem_type)


def _pack_string(s):
    b = s.encode("utf-8") if isinstance(s, str) else bytes(s)
    return struct.pack("<Q", len(b)) + b


def _infer_type(value):
    if isinstance(value, _U):
        return value.vtype
    if isinstance(value, (bool, np.bool_)):
        return GGUF_TYPE_BOOL
    if isinstance(value, (int, np.integer)):
        return GGUF_TYPE_INT64 if value < 0 else GGUF_TYPE_UINT32 if value < 2 ** 32 else GGUF_TYPE_UINT64
    if isinstance(value, (float, np.floating)):
        return GGUF_TYPE_FLOAT32
    if isinstance(value, (str, bytes)):
        return GGUF_TYPE_STRING
    if isinstance(value, (list, tuple, np.ndarray)):
        return GGUF_TYPE_ARRAY
    raise TypeError("cannot infer GGUF type of %r" % (value,))


def _pack_value(vtype, value, elem_type=None):
    if isinstance(value, _U):
        vtype, elem_type, value = value.vtype, value.elem_type, value.value
    if vtype == GGUF_TYPE_STRING:
        return _pack_string(value)
    if vtype in SCALAR_FORMATS:
        return struct.pack(SCALAR_FORMATS[vtype], value)
    if vtype == GGUF_TYPE_ARRAY:
        if elem_type is None:
            if isinstance(value, np.ndarray):
                elem_type = {np.dtype(v): k for k, v in SCALAR_DTYPES.items() if k != GGUF_TYPE_BOOL}.get(
                    value.dtype.newbyteorder("<"), None)
                if value.dtype == np.bool_:
                    elem_type = GGUF_TYPE_BOOL
                if elem_type is None:
                    raise TypeError("unsupported array dtype %s" % value.dtype)
            elif len(value) == 0:
                elem_type = GGUF_TYPE_UINT32
            else:
                elem_type = _infer_type(value[0])
                if elem_type == GGUF_TYPE_UINT32 and any(isinstance(v, (int, np.integer)) and v < 0 for v in value):
                    elem_type = GGUF_TYPE_INT32
        parts = [struct.pack("<IQ", elem_type, len(value))]
        if elem_type in SCALAR_DTYPES:
            parts.append(np.asarray(value).astype(SCALAR_DTYPES[elem_type]).tobytes())
        elif elem_type == GGUF_TYPE_STRING:
            parts.extend(_pack_string(s) for s in value)
        elif elem_type == GGUF_TYPE_ARRAY:
            for v in value:
                t = v.elem_type if isinstance(v, _U) else None
                vv = v.value if isinstance(v, _U) else v
                parts.append(_pack_value(GGUF_TYPE_ARRAY, vv, t))
        else:
            raise TypeError("bad array element type %r" % elem_type)
        return b"".join(parts)
    raise TypeError("bad GGUF value type %r" % vtype)


class GGUFWriter:
    """Collect metadata and tensor descriptions, then stream everything to a file.

    Tensors are added as (name, shape_numpy_order, ggml_type, producer) where producer()
    returns the raw data when it is written (a numpy array, bytes, or a list/iterator of
    such chunks in order), so a converter keeps at most one tensor (or chunk) in memory.
    """

    def __init__(self, path, alignment=DEFAULT_ALIGNMENT):
        self.path = path
        self.alignment = alignment
        self.kv = []            # list of (key, vtype, value, elem_type)
        self._keys = set()
        self.tensors = []       # list of dicts
        if alignment != DEFAULT_ALIGNMENT:
            self.add_uint32("general.alignment", alignment)

    # -- metadata -----------------------------------------------------------
    def add(self, key, value, vtype=None, elem_type=None):
        if key in self._keys:
            raise ValueError("duplicate metadata key %r" % key)
        if isinstance(value, _U):
            vtype, elem_type, value = value.vtype, value.elem_type, value.value
        if vtype is None:
            vtype = _infer_type(value)
        self._keys.add(key)
        self.kv.append((key, vtype, value, elem_type))

    def add_uint8(self, k, v): self.add(k, v, GGUF_TYPE_UINT8)
    def add_int8(self, k, v): self.add(k, v, GGUF_TYPE_INT8)
    def add_uint16(self, k, v): self.add(k, v, GGUF_TYPE_UINT16)
    def add_int16(self, k, v): self.add(k, v, GGUF_TYPE_INT16)
    def add_uint32(self, k, v): self.add(k, int(v), GGUF_TYPE_UINT32)
    def add_int32(self, k, v): self.add(k, int(v), GGUF_TYPE_INT32)
    def add_uint64(self, k, v): self.add(k, int(v), GGUF_TYPE_UINT64)
    def add_int64(self, k, v): self.add(k, int(v), GGUF_TYPE_INT64)
    def add_float32(self, k, v): self.add(k, float(v), GGUF_TYPE_FLOAT32)
    def add_float64(self, k, v): self.add(k, float(v), GGUF_TYPE_FLOAT64)
    def add_bool(self, k, v): self.add(k, bool(v), GGUF_TYPE_BOOL)
    def add_string(self, k, v): self.add(k, v, GGUF_TYPE_STRING)

    def add_array(self, k, values, elem_type=None):
        self.add(k, values, GGUF_TYPE_ARRAY, elem_type)

    def has(self, key):
        return key in self._keys

    # -- tensors --------------------------------------------------------------
    def add_tensor(self, name, shape, ggml_type, producer):
        """shape in numpy order (outermost first); producer() -> array/bytes of the exact size."""
        if any(t["name"] == name for t in self.tensors):
            raise ValueError("duplicate tensor %r" % name)
        if len(name.encode()) >= 64:
            raise ValueError("tensor name too long (ggml limit 63 bytes): %r" % name)
        ne = [int(s) for s in reversed(shape)]
        nbytes = tensor_nbytes(ne, ggml_type)
        if not callable(producer):
            data = producer
            producer = lambda: data  # noqa: E731
        self.tensors.append(dict(name=name, ne=ne, type=ggml_type, nbytes=nbytes, producer=producer))

    # -- output ---------------------------------------------------------------
    def _pad(self, n):
        return (-n) % self.alignment

    def write(self, progress=None):
        offset = 0
        for t in self.tensors:
            t["offset"] = offset
            offset += t["nbytes"] + self._pad(t["nbytes"])
        header = [GGUF_MAGIC, struct.pack("<IQQ", GGUF_VERSION, len(self.tensors), len(self.kv))]
        for key, vtype, value, elem_type in self.kv:
            header.append(_pack_string(key))
            header.append(struct.pack("<I", vtype))
            header.append(_pack_value(vtype, value, elem_type))
        for t in self.tensors:
            header.append(_pack_string(t["name"]))
            header.append(struct.pack("<I", len(t["ne"])))
            header.append(struct.pack("<%dQ" % len(t["ne"]), *t["ne"]))
            header.append(struct.pack("<IQ", t["type"], t["offset"]))
        head = b"".join(header)
        with open(self.path, "wb") as f:
            f.write(head)
            f.write(b"\0" * self._pad(len(head)))
            for i, t in enumerate(self.tensors):
                data = t["producer"]()
                chunks = data if isinstance(data, (list, tuple)) or hasattr(data, "__next__") else [data]
                nb = 0
                for c in chunks:
                    if isinstance(c, np.ndarray):
                        if c.dtype.byteorder == ">":
                            c = c.astype(c.dtype.newbyteorder("<"))
                        c = np.ascontiguousarray(c)
                        nb += c.nbytes
                        f.write(memoryview(c.reshape(-1)).cast("B"))
                    else:
                        nb += len(c)
                        f.write(c)
                    del c
                if nb != t["nbytes"]:
                    raise ValueError("tensor %s: producer gave %d bytes, expected %d" % (t["name"], nb, t["nbytes"]))
                f.write(b"\0" * self._pad(nb))
                del data
                if progress:
                    progress(i, t)
