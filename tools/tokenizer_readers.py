"""Read tokenizers in every common form and return GGUF tokenizer metadata.

Forms are detected by CONTENT, not by file name:
  * SentencePiece ModelProto (protobuf, e.g. Llama 2 tokenizer.model)      -> model "llama"
  * llama2.c tokenizer .bin (int32 max_len, then score/len/bytes records)   -> model "llama"
  * Hugging Face tokenizer.json, BPE (byte_fallback SPM-style -> "llama", ByteLevel -> "gpt2")
  * GPT-2 encoder.json + vocab.bpe (a directory or either file)             -> model "gpt2"
  * tiktoken rank files (base64 + rank per line, e.g. Llama 3 tokenizer.model) -> model "gpt2"

Entry point: read_tokenizer(path, vocab_size=None) -> Tokenizer, whose .meta is an ordered
dict {gguf key: gguf_writer.typed(...)} ready for GGUFWriter.add(), written the way
llama.cpp's convert_hf_to_gguf.py writes them.  tokenizer.ggml.pre is "default" for SPM,
"gpt-2" for the GPT-2 regex (llama.cpp's spelling; it rejects "gpt2"), "llama-bpe" for Llama 3.
"""

import base64
import json
import os
import re
import struct
import sys
from collections import OrderedDict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf_writer as gw  # noqa: E402

TT_NORMAL, TT_UNKNOWN, TT_CONTROL, TT_USER_DEFINED, TT_UNUSED, TT_BYTE = 1, 2, 3, 4, 5, 6
SPIECE_UNDERLINE = "\u2581"

PRE_GPT2 = "gpt-2"
PRE_LLAMA3 = "llama-bpe"

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
QWEN2_PATTERN = LLAMA3_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}")
_UP = r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]"
_LO = r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]"
TEKKEN_PATTERN = (r"[^\r\n\p{L}\p{N}]?" + _UP + "*" + _LO + r"+|[^\r\n\p{L}\p{N}]?" + _UP + "+" + _LO +
                  r"*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
GPT4O_PATTERN = (r"[^\r\n\p{L}\p{N}]?" + _UP + "*" + _LO + r"+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?" +
                 _UP + "+" + _LO + r"*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
DEEPSEEK_CJK = "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"
DEEPSEEK_LLM_LETTERS = (
    "\\s?[A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af"
    "\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5"
    "\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba"
    "\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45"
    "\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe"
    "\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc"
    "\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139"
    "\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3"
    "\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06"
    "\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3\U000104d8-\U000104fb"
    "\U00010c80-\U00010cb2\U00010cc0-\U00010cf2\U000118a0-\U000118df\U0001e900-\U0001e943]+")
DEEPSEEK_LLM_PUNCT = "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+"

# The split steps of each tokenizer.ggml.pre name, as src/tokenizer.c's table has them
# (the same facts, in the converter's terms): each Hugging Face pre-tokenizer written as
# the pattern whose matches it isolates; "\x01" marks steps after ByteLevel (on the
# byte-level text); the flag says whether the normalizer is NFC.
PRE_STEPS = OrderedDict([
    ("gpt-2", ([GPT2_PATTERN], False)),
    ("llama-bpe", ([LLAMA3_PATTERN], False)),
    ("qwen2", ([QWEN2_PATTERN], True)),
    ("smollm", ([r"\p{N}", GPT2_PATTERN], False)),
    ("falcon", ([r"[\p{P}$+<=>^`|~]+", GPT2_PATTERN, "\x01" + r"\p{N}+", "\x01[0-9][0-9][0-9]"], False)),
    ("deepseek-llm", (["[\r\n]", DEEPSEEK_LLM_LETTERS, DEEPSEEK_LLM_PUNCT, r"\s+$", DEEPSEEK_CJK, r"\p{N}"], False)),
    ("deepseek-coder", (["[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", DEEPSEEK_CJK, r"\p{N}"], False)),
    ("tekken", ([TEKKEN_PATTERN], False)),
    ("gpt-4o", ([GPT4O_PATTERN], False)),
])

LLAMA3_SPECIAL_NAMES = {
    128000: "<|begin_of_text|>",
    128001: "<|end_of_text|>",
    128002: "<|reserved_special_token_0|>",
    128003: "<|reserved_special_token_1|>",
    128004: "<|finetune_right_pad_id|>",
    128005: "<|step_id|>",
    128006: "<|start_header_id|>",
    128007: "<|end_header_id|>",
    128008: "<|eom_id|>",
    128009: "<|eot_id|>",
    128010: "<|python_tag|>",
    128011: "<|image|>",
}


class TokenizerError(Exception):
    pass


def bytes_to_unicode():
    """GPT-2's byte -> printable unicode character table (list of 256 str)."""
    direct = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table = [None] * 256
    for b in direct:
        table[b] = chr(b)
    n = 0
    for b in range(256):
        if table[b] is None:
            table[b] = chr(0x100 + n)
            n += 1
    return table


_B2U = bytes_to_unicode()


def token_bytes_to_string(b):
    return "".join(_B2U[x] for x in b)


class Tokenizer:
    """Result of reading a tokenizer. .meta: OrderedDict key -> gw.typed value."""

    def __init__(self, model, pre, tokens, token_types, scores=None, merges=None, form=""):
        self.model = model
        self.pre = pre
        self.tokens = list(tokens)
        self.token_types = list(token_types)
        self.scores = scores
        self.merges = merges
        self.form = form
        self.special = OrderedDict()        # "bos" -> id ...
        self.add_bos = None
        self.add_eos = None
        self.add_space_prefix = None
        self.chat_template = None

    def __len__(self):
        return len(self.tokens)

    def pad_to(self, vocab_size):
        """Pad to the model's vocab size like llama.cpp ([PAD{i}] UNUSED tokens)."""
        n = len(self.tokens)
        if vocab_size is None or vocab_size == n:
            return
        if vocab_size < n:
            raise TokenizerError("tokenizer has %d tokens but the model's vocab_size is %d" % (n, vocab_size))
        for i in range(n, vocab_size):
            self.tokens.append("[PAD%d]" % i)
            self.token_types.append(TT_UNUSED)
            if self.scores is not None:
                self.scores.append(-1000.0)

    @property
    def meta(self):
        m = OrderedDict()
        m["tokenizer.ggml.model"] = gw.typed(gw.GGUF_TYPE_STRING, self.model)
        m["tokenizer.ggml.pre"] = gw.typed(gw.GGUF_TYPE_STRING, self.pre)
        m["tokenizer.ggml.tokens"] = gw.typed(gw.GGUF_TYPE_ARRAY, self.tokens, gw.GGUF_TYPE_STRING)
        if self.scores is not None:
            m["tokenizer.ggml.scores"] = gw.typed(gw.GGUF_TYPE_ARRAY, np.asarray(self.scores, dtype=np.float32),
                                                  gw.GGUF_TYPE_FLOAT32)
        m["tokenizer.ggml.token_type"] = gw.typed(gw.GGUF_TYPE_ARRAY, np.asarray(self.token_types, dtype=np.int32),
                                                  gw.GGUF_TYPE_INT32)
        if self.merges is not None:
            m["tokenizer.ggml.merges"] = gw.typed(gw.GGUF_TYPE_ARRAY, self.merges, gw.GGUF_TYPE_STRING)
        names = {"bos": "bos_token_id", "eos": "eos_token_id", "unk": "unknown_token_id",
                 "sep": "seperator_token_id", "pad": "padding_token_id", "eot": "eot_token_id",
                 "eom": "eom_token_id"}
        for k, v in self.special.items():
            if v is not None and 0 <= v < len(self.tokens):
                m["tokenizer.ggml." + names[k]] = gw.typed(gw.GGUF_TYPE_UINT32, int(v))
        if self.add_bos is not None:
            m["tokenizer.ggml.add_bos_token"] = gw.typed(gw.GGUF_TYPE_BOOL, bool(self.add_bos))
        if self.add_eos is not None:
            m["tokenizer.ggml.add_eos_token"] = gw.typed(gw.GGUF_TYPE_BOOL, bool(self.add_eos))
        if self.add_space_prefix is not None:
            m["tokenizer.ggml.add_space_prefix"] = gw.typed(gw.GGUF_TYPE_BOOL, bool(self.add_space_prefix))
        if self.chat_template:
            m["tokenizer.chat_template"] = gw.typed(gw.GGUF_TYPE_STRING, self.chat_template)
        return m


# ---------------------------------------------------------------------------
# protobuf wire format (SentencePiece ModelProto)
# ---------------------------------------------------------------------------
def _varint(buf, pos):
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise TokenizerError("truncated protobuf varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise TokenizerError("bad protobuf varint")


def _proto_fields(buf):
    """Yield (field_number, wire_type, value) for a protobuf message."""
    pos = 0
    n = len(buf)
    while pos < n:
        key, pos = _varint(buf, pos)
        field, wt = key >> 3, key & 7
        if field == 0:
            raise TokenizerError("bad protobuf field number 0")
        if wt == 0:
            v, pos = _varint(buf, pos)
        elif wt == 1:
            if pos + 8 > n:
                raise TokenizerError("truncated protobuf fixed64")
            v = buf[pos:pos + 8]
            pos += 8
        elif wt == 2:
            ln, pos = _varint(buf, pos)
            if pos + ln > n:
                raise TokenizerError("truncated protobuf length-delimited field")
            v = buf[pos:pos + ln]
            pos += ln
        elif wt == 5:
            if pos + 4 > n:
                raise TokenizerError("truncated protobuf fixed32")
            v = buf[pos:pos + 4]
            pos += 4
        else:
            raise TokenizerError("unsupported protobuf wire type %d" % wt)
        yield field, wt, v


def _int32(v):
    v &= 0xFFFFFFFFFFFFFFFF
    return v - (1 << 64) if v >= 1 << 63 else v


def read_sentencepiece(data, vocab_size=None):
    pieces, scores, types = [], [], []
    trainer = {"unk_id": 0, "bos_id": 1, "eos_id": 2, "pad_id": -1, "byte_fallback": False,
               "model_type": 1, "treat_whitespace_as_suffix": False}
    normalizer = {"add_dummy_prefix": True, "remove_extra_whitespaces": True, "escape_whitespaces": True,
                  "name": None}
    for field, wt, v in _proto_fields(data):
        if field == 1 and wt == 2:
            piece, score, typ = None, 0.0, TT_NORMAL
            for f2, w2, v2 in _proto_fields(v):
                if f2 == 1 and w2 == 2:
                    piece = bytes(v2).decode("utf-8")
                elif f2 == 2 and w2 == 5:
                    score = struct.unpack("<f", bytes(v2))[0]
                elif f2 == 3 and w2 == 0:
                    typ = v2
            if piece is None:
                raise TokenizerError("SentencePiece piece %d has no text" % len(pieces))
            if typ not in (1, 2, 3, 4, 5, 6):
                raise TokenizerError("SentencePiece piece %d has bad type %d" % (len(pieces), typ))
            pieces.append(piece)
            scores.append(score)
            types.append(typ)
        elif field == 2 and wt == 2:
            names = {3: "model_type", 4: "vocab_size", 24: "treat_whitespace_as_suffix", 25: "split_digits",
                     35: "byte_fallback", 40: "unk_id", 41: "bos_id", 42: "eos_id", 43: "pad_id"}
            for f2, w2, v2 in _proto_fields(v):
                if f2 in names and w2 == 0:
                    trainer[names[f2]] = _int32(v2)
        elif field == 3 and wt == 2:
            for f2, w2, v2 in _proto_fields(v):
                if f2 == 1 and w2 == 2:
                    normalizer["name"] = bytes(v2).decode("utf-8", "replace")
                elif f2 == 3 and w2 == 0:
                    normalizer["add_dummy_prefix"] = bool(v2)
                elif f2 == 4 and w2 == 0:
                    normalizer["remove_extra_whitespaces"] = bool(v2)
                elif f2 == 5 and w2 == 0:
                    normalizer["escape_whitespaces"] = bool(v2)
    if not pieces:
        raise TokenizerError("SentencePiece model has no pieces")
    tok = Tokenizer("llama", "default", pieces, types, scores=scores, form="sentencepiece")
    tok.trainer, tok.normalizer = trainer, normalizer
    n = len(pieces)
    for name, key in (("bos", "bos_id"), ("eos", "eos_id"), ("unk", "unk_id"), ("pad", "pad_id")):
        i = trainer[key]
        if 0 <= i < n:
            tok.special[name] = i
    tok.add_bos, tok.add_eos = True, False
    tok.add_space_prefix = normalizer["add_dummy_prefix"]
    tok.pad_to(vocab_size)
    return tok


# ---------------------------------------------------------------------------
# llama2.c tokenizer.bin
# ---------------------------------------------------------------------------
def _llama2c_records(data, count=None):
    if len(data) < 4:
        raise TokenizerError("llama2.c tokenizer: file too short")
    max_len = struct.unpack_from("<i", data, 0)[0]
    pos = 4
    out = []
    while pos < len(data) and (count is None or len(out) < count):
        if pos + 8 > len(data):
            raise TokenizerError("llama2.c tokenizer: truncated record %d" % len(out))
        score, ln = struct.unpack_from("<fi", data, pos)
        pos += 8
        if ln < 0 or ln > max(max_len, 0) + 16 or pos + ln > len(data):
            raise TokenizerError("llama2.c tokenizer: bad length %d in record %d" % (ln, len(out)))
        out.append((score, bytes(data[pos:pos + ln])))
        pos += ln
    if count is not None and len(out) < count:
        raise TokenizerError("llama2.c tokenizer: has %d tokens but the model needs %d" % (len(out), count))
    return max_len, out


def read_llama2c_tokenizer(data, vocab_size=None):
    _, recs = _llama2c_records(data, vocab_size)
    tokens, scores, types = [], [], []
    byte_re = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")
    for i, (score, b) in enumerate(recs):
        try:
            s = b.decode("utf-8")
        except UnicodeDecodeError:
            raise TokenizerError("llama2.c tokenizer: token %d is not valid UTF-8" % i)
        if i == 0:
            s, t = "<unk>", TT_UNKNOWN
        elif i == 1:
            s, t = "<s>", TT_CONTROL
        elif i == 2:
            s, t = "</s>", TT_CONTROL
        else:
            s = s.replace(" ", SPIECE_UNDERLINE)
            t = TT_BYTE if byte_re.match(s) else TT_NORMAL
        tokens.append(s)
        scores.append(score)
        types.append(t)
    tok = Tokenizer("llama", "default", tokens, types, scores=scores, form="llama2c")
    tok.special["bos"], tok.special["eos"], tok.special["unk"] = 1, 2, 0
    tok.add_bos, tok.add_eos, tok.add_space_prefix = True, False, True
    return tok


# ---------------------------------------------------------------------------
# tiktoken ranks
# ---------------------------------------------------------------------------
_TIKTOKEN_LINE = re.compile(rb"^[A-Za-z0-9+/]+={0,2} \d+$")


def read_tiktoken(data, vocab_size=None):
    ranks = {}
    for ln, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            b64, r = line.split()
            ranks[base64.b64decode(b64, validate=True)] = int(r)
        except Exception:
            raise TokenizerError("tiktoken file: malformed line %d" % ln)
    n = len(ranks)
    if sorted(ranks.values()) != list(range(n)):
        raise TokenizerError("tiktoken file: ranks are not 0..%d" % (n - 1))
    by_rank = [None] * n
    for b, r in ranks.items():
        by_rank[r] = b
    tokens = [token_bytes_to_string(b) for b in by_rank]
    # All splits (a, b) of each token with a, b and a+b in the vocabulary, ordered by the rank
    # of a+b, then by (rank a, rank b): the merge list Hugging Face's TikTokenConverter writes
    # into Llama 3's tokenizer.json and so what llama.cpp's GGUFs hold.  With it llama.cpp's
    # lowest-merge-rank BPE equals tiktoken's lowest-rank-of-concatenation BPE.
    merges = []
    get = ranks.get
    for r, b in enumerate(by_rank):
        L = len(b)
        if L < 2:
            continue
        local = []
        for i in range(1, L):
            ra = get(b[:i])
            if ra is None:
                continue
            rb_ = get(b[i:])
            if rb_ is None:
                continue
            local.append((ra, rb_))
        if len(local) > 1:
            local.sort()
        for ra, rb_ in local:
            merges.append(tokens[ra] + " " + tokens[rb_])
    types = [TT_NORMAL] * n
    tok = Tokenizer("gpt2", PRE_LLAMA3, tokens, types, merges=merges, form="tiktoken")
    if n == 128000:   # Llama 3 / 3.1 / 3.2 / 3.3 special tokens
        for i in range(128000, 128256):
            name = LLAMA3_SPECIAL_NAMES.get(i, "<|reserved_special_token_%d|>" % (i - 128012 + 2))
            tok.tokens.append(name)
            tok.token_types.append(TT_CONTROL)
        tok.special["bos"], tok.special["eos"], tok.special["eot"] = 128000, 128001, 128009
        tok.add_bos, tok.add_eos = True, False
    tok.pad_to(vocab_size)
    return tok


# ---------------------------------------------------------------------------
# GPT-2 encoder.json + vocab.bpe
# ---------------------------------------------------------------------------
def _parse_bpe_merges(text, what="vocab.bpe"):
    merges = []
    for ln, line in enumerate(text.split("\n"), 1):
        if line.startswith("#version") or not line.strip():
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise TokenizerError("%s: line %d is not 'A B'" % (what, ln))
        merges.append(line)
    return merges


def read_gpt2_files(encoder, merges, vocab_size=None):
    if not isinstance(encoder, dict) or not all(isinstance(v, int) for v in encoder.values()):
        raise TokenizerError("encoder.json must map token strings to integer ids")
    n = max(encoder.values()) + 1
    tokens = [None] * n
    for s, i in encoder.items():
        tokens[i] = s
    types = [TT_NORMAL] * n
    for i in range(n):
        if tokens[i] is None:
            tokens[i], types[i] = "[PAD%d]" % i, TT_UNUSED
    tok = Tokenizer("gpt2", PRE_GPT2, tokens, types, merges=merges, form="gpt2")
    eot = encoder.get("<|endoftext|>")
    if eot is not None:
        tok.token_types[eot] = TT_CONTROL
        tok.special["bos"], tok.special["eos"] = eot, eot
    tok.pad_to(vocab_size)
    return tok


# ---------------------------------------------------------------------------
# Hugging Face tokenizer.json
# ---------------------------------------------------------------------------
def _token_id(content, vocab, added):
    if isinstance(content, dict):
        content = content.get("content")
    if not isinstance(content, str):
        return None
    for a in added:
        if a.get("content") == content:
            return a.get("id")
    return vocab.get(content)


def _json_has(obj, pred):
    if pred(obj):
        return True
    if isinstance(obj, dict):
        return any(_json_has(v, pred) for v in obj.values())
    if isinstance(obj, list):
        return any(_json_has(v, pred) for v in obj)
    return False


def pre_steps_of(pre):
    """A tokenizer.json pre_tokenizer as split steps (see PRE_STEPS), or raise."""
    subs = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    steps, after_bytelevel, seen_bytelevel = [], "", False
    for p in subs:
        t = p.get("type")
        if t == "ByteLevel":
            if p.get("add_prefix_space", False):
                raise TokenizerError("tokenizer.json: ByteLevel with add_prefix_space is not supported")
            if p.get("use_regex", True):
                steps.append(after_bytelevel + GPT2_PATTERN)
            after_bytelevel, seen_bytelevel = "\x01", True
        elif t == "Split":
            pat = p.get("pattern", {})
            if not isinstance(pat, dict) or "Regex" not in pat or p.get("invert") or p.get("behavior") != "Isolated":
                raise TokenizerError("tokenizer.json: Split %s is not supported (a Regex, Isolated, not inverted)"
                                     % json.dumps(p)[:200])
            steps.append(after_bytelevel + pat["Regex"])
        elif t == "Digits":
            steps.append(after_bytelevel + (r"\p{N}" if p.get("individual_digits") else r"\p{N}+"))
        elif t == "Punctuation" and p.get("behavior", "Isolated") == "Contiguous":
            steps.append(after_bytelevel + r"[\p{P}$+<=>^`|~]+")
        else:
            raise TokenizerError("tokenizer.json: pre-tokenizer %s is not supported" % json.dumps(p)[:200])
    if not seen_bytelevel:
        raise TokenizerError("tokenizer.json: byte-level BPE without a ByteLevel pre-tokenizer is not supported")
    return steps


def _detect_bytelevel_pre(pre, normalizer=None):
    """The tokenizer.ggml.pre name whose split steps equal this pre_tokenizer's."""
    if pre is None:
        raise TokenizerError("tokenizer.json: byte-level BPE without a pre_tokenizer is not supported")
    steps = pre_steps_of(pre)
    nfc = _json_has(normalizer, lambda o: isinstance(o, dict) and o.get("type") == "NFC")
    for name, (want, want_nfc) in PRE_STEPS.items():
        if steps == want:
            # A Qwen2 pattern without NFC (some re-packaged Qwen tokenizers) still maps to
            # qwen2, which normalizes: the two differ only on text that is not NFC.
            if nfc != want_nfc and not (name == "qwen2" and not nfc):
                raise TokenizerError("tokenizer.json: the %s split steps with%s an NFC normalizer are not supported"
                                     % (name, "" if nfc else "out"))
            return name
    raise TokenizerError("tokenizer.json: unsupported pre-tokenizer regex or steps %s (supported: the split steps of %s)"
                         % (json.dumps(pre)[:300], ", ".join(PRE_STEPS)))


def read_hf_tokenizer_json(tj, config=None, model_config=None, vocab_size=None):
    model = tj.get("model") or {}
    mtype = model.get("type")
    if mtype != "BPE":
        raise TokenizerError("tokenizer.json: model type %r is not supported (only BPE)" % (mtype,))
    vocab = model.get("vocab")
    if not isinstance(vocab, dict):
        raise TokenizerError("tokenizer.json: model.vocab missing")
    raw_merges = model.get("merges") or []
    merges = []
    for m in raw_merges:
        if isinstance(m, str):
            merges.append(m)
        elif isinstance(m, list) and len(m) == 2:
            merges.append(" ".join("".join(chr(ord(c) + 256) if c == " " else c for c in p) for p in m))
        else:
            raise TokenizerError("tokenizer.json: unknown merges format")
    added = tj.get("added_tokens") or []
    n = max(list(vocab.values()) + [a["id"] for a in added]) + 1
    tokens = [None] * n
    for s, i in vocab.items():
        tokens[i] = s
    types = [TT_NORMAL] * n
    is_spm = bool(model.get("byte_fallback")) or _json_has(
        {"n": tj.get("normalizer"), "p": tj.get("pre_tokenizer"), "d": tj.get("decoder")},
        lambda o: isinstance(o, dict) and (o.get("type") == "Metaspace" or
                                           (o.get("type") == "Replace" and o.get("content") == SPIECE_UNDERLINE)))
    byte_re = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")
    if is_spm:
        for i, s in enumerate(tokens):
            if s is not None and byte_re.match(s):
                types[i] = TT_BYTE
        unk = model.get("unk_token")
        if unk is not None and unk in vocab:
            types[vocab[unk]] = TT_UNKNOWN
    for a in added:
        i, s = a["id"], a["content"]
        tokens[i] = s
        if a.get("special"):
            types[i] = TT_CONTROL if types[i] != TT_UNKNOWN else TT_UNKNOWN
        else:
            if is_spm:
                s = s.replace(SPIECE_UNDERLINE, " ")
                tokens[i] = s
            types[i] = TT_USER_DEFINED
    for i in range(n):
        if tokens[i] is None:
            tokens[i], types[i] = "[PAD%d]" % i, TT_UNUSED
    if is_spm:
        # scores from merge rank: the token made by merge k scores -k (first merge wins)
        scores = [0.0] * n
        seen = set()
        for k, m in enumerate(merges):
            a, b = m.split(" ")
            t = vocab.get(a + b)
            if t is not None and t not in seen:
                seen.add(t)
                scores[t] = -float(k)
        for i, s in enumerate(tokens):
            if i not in seen and types[i] == TT_NORMAL and len(s) > 1:
                scores[i] = -1e9
        tok = Tokenizer("llama", "default", tokens, types, scores=scores, form="hf-spm")
        aprefix = _json_has({"n": tj.get("normalizer"), "p": tj.get("pre_tokenizer")},
                            lambda o: isinstance(o, dict) and (
                                (o.get("type") == "Prepend" and o.get("prepend") == SPIECE_UNDERLINE) or
                                (o.get("type") == "Metaspace" and o.get("prepend_scheme", "always") != "never"
                                 and o.get("add_prefix_space", True))))
        tok.add_space_prefix = aprefix
        if unk is not None and unk in vocab:
            tok.special["unk"] = vocab[unk]
    else:
        pre = _detect_bytelevel_pre(tj.get("pre_tokenizer"), tj.get("normalizer"))
        tok = Tokenizer("gpt2", pre, tokens, types, merges=merges, form="hf-bpe")

    # special tokens: tokenizer_config.json, then post_processor, then config.json
    cfg = config or {}
    for typ in ("bos", "eos", "unk", "pad"):
        i = _token_id(cfg.get(typ + "_token"), vocab, added)
        if i is not None:
            tok.special[typ] = i
    for typ in ("bos", "eos"):
        v = cfg.get("add_%s_token" % typ)
        if isinstance(v, bool):
            setattr(tok, "add_" + typ, v)
    pp = tj.get("post_processor") or {}
    for proc in pp.get("processors", [pp]):
        if proc.get("type") == "TemplateProcessing":
            single = proc.get("single") or []
            if len(single) > 1:
                first = single[0].get("SpecialToken", {}).get("id")
                last = single[-1].get("SpecialToken", {}).get("id")
                if first is not None:
                    i = _token_id(first, vocab, added)
                    if i is not None:
                        tok.special.setdefault("bos", i)
                        if tok.add_bos is None:
                            tok.add_bos = tok.special["bos"] == i
                if last is not None:
                    i = _token_id(last, vocab, added)
                    if i is not None:
                        tok.special.setdefault("eos", i)
                        if tok.add_eos is None:
                            tok.add_eos = tok.special["eos"] == i
    # chat template as convert_hf_to_gguf.py copies it (a string, or the "default" of a list)
    ct = cfg.get("chat_template")
    if isinstance(ct, list):
        ct = next((c.get("template") for c in ct if isinstance(c, dict) and c.get("name") == "default"), None)
    if isinstance(ct, str):
        tok.chat_template = ct
    mc = model_config or {}
    for typ in ("bos", "eos", "pad"):
        v = mc.get(typ + "_token_id")
        if isinstance(v, list) and v:
            v = v[0]
        if isinstance(v, int) and typ not in tok.special:
            tok.special[typ] = v
    if is_spm:
        for typ, s in (("bos", "<s>"), ("eos", "</s>")):
            if typ not in tok.special and s in vocab:
                tok.special[typ] = vocab[s]
        if tok.add_bos is None:
            tok.add_bos = True
        if tok.add_eos is None:
            tok.add_eos = False
    elif tok.pre == PRE_LLAMA3:
        eot = _token_id("<|eot_id|>", vocab, added)
        if eot is not None and tok.special.get("eos") != eot:
            tok.special["eot"] = eot
    tok.pad_to(vocab_size)
    return tok


# ---------------------------------------------------------------------------
# detection
# ---------------------------------------------------------------------------
def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _load_json_beside(path, name):
    p = os.path.join(os.path.dirname(os.path.abspath(path)), name)
    if os.path.isfile(p):
        try:
            with open(p, encoding="utf-8") as f:
                return json.load(f)
        except ValueError:
            return None
    return None


def _sniff(data):
    """Return the form of a tokenizer file from its bytes."""
    head = data[:4096]
    stripped = head.lstrip()
    if stripped[:1] in (b"{",):
        return "json"
    first_line = data.split(b"\n", 1)[0]
    if _TIKTOKEN_LINE.match(first_line.rstrip(b"\r")):
        return "tiktoken"
    if first_line.startswith(b"#version"):
        return "bpe-merges"
    if data[:1] == b"\x0a":
        try:
            n = 0
            for field, wt, v in _proto_fields(memoryview(data)):
                if field not in (1, 2, 3, 4, 5) or wt != 2:
                    raise TokenizerError("not sentencepiece")
                n += 1
            if n:
                return "sentencepiece"
        except (TokenizerError, IndexError):
            pass
    if len(data) >= 16:
        try:
            max_len, recs = _llama2c_records(data)
            if 0 < max_len < 4096 and len(recs) >= 3:
                return "llama2c"
        except TokenizerError:
            pass
    try:
        text = data.decode("utf-8")
        lines = [ln for ln in text.split("\n") if ln]
        if lines and all(len(ln.split(" ")) == 2 for ln in lines[:100]):
            return "bpe-merges"
    except UnicodeDecodeError:
        pass
    return None


def read_tokenizer(path, vocab_size=None, llama2c_count=None, prefer_spm=True):
    """Read a tokenizer file or directory; detect its form from its content.

    vocab_size: the model's vocabulary size (pad with [PAD{i}] if larger, error if smaller).
    llama2c_count: number of records in a llama2.c tokenizer .bin (default: read to EOF).
    """
    if os.path.isdir(path):
        cands = []
        for name in ("tokenizer.model", "tokenizer.json", "encoder.json", "vocab.json", "tokenizer.bin"):
            p = os.path.join(path, name)
            if os.path.isfile(p):
                cands.append(p)
        if not prefer_spm:
            cands.sort(key=lambda p: os.path.basename(p) != "tokenizer.json")
        if not cands:
            raise TokenizerError("%s: no tokenizer file found (looked for tokenizer.model, tokenizer.json, "
                                 "encoder.json + vocab.bpe, tokenizer.bin)" % path)
        # tokenizer.model first (SentencePiece, as llama.cpp prefers), but only if it really is one
        # or a tiktoken file; otherwise fall back to the next candidate
        errors = []
        for p in cands:
            try:
                return read_tokenizer(p, vocab_size, llama2c_count)
            except TokenizerError as e:
                errors.append(str(e))
        raise TokenizerError("; ".join(errors))
    if not os.path.isfile(path):
        raise TokenizerError("%s: no such tokenizer file" % path)
    data = _read(path)
    form = _sniff(data)
    if form == "json":
        try:
            obj = json.loads(data.decode("utf-8"))
        except ValueError as e:
            raise TokenizerError("%s: invalid JSON: %s" % (path, e))
        if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
            return read_hf_tokenizer_json(obj, _load_json_beside(path, "tokenizer_config.json"),
                                          _load_json_beside(path, "config.json"), vocab_size)
        if isinstance(obj, dict) and obj and all(isinstance(v, int) for v in obj.values()):
            mp = os.path.join(os.path.dirname(os.path.abspath(path)), "vocab.bpe")
            if not os.path.isfile(mp):
                mp2 = os.path.join(os.path.dirname(os.path.abspath(path)), "merges.txt")
                if not os.path.isfile(mp2):
                    raise TokenizerError("%s: GPT-2 encoder.json needs vocab.bpe (or merges.txt) beside it" % path)
                mp = mp2
            merges = _parse_bpe_merges(_read(mp).decode("utf-8"), os.path.basename(mp))
            return read_gpt2_files(obj, merges, vocab_size)
        raise TokenizerError("%s: JSON file is neither a tokenizer.json nor a GPT-2 encoder.json" % path)
    if form == "tiktoken":
        return read_tiktoken(data, vocab_size)
    if form == "bpe-merges":
        ep = os.path.join(os.path.dirname(os.path.abspath(path)), "encoder.json")
        if not os.path.isfile(ep):
            ep = os.path.join(os.path.dirname(os.path.abspath(path)), "vocab.json")
        if not os.path.isfile(ep):
            raise TokenizerError("%s: BPE merges file needs encoder.json beside it" % path)
        with open(ep, encoding="utf-8") as f:
            enc = json.load(f)
        return read_gpt2_files(enc, _parse_bpe_merges(data.decode("utf-8"), os.path.basename(path)), vocab_size)
    if form == "sentencepiece":
        return read_sentencepiece(memoryview(data), vocab_size)
    if form == "llama2c":
        tok = read_llama2c_tokenizer(data, llama2c_count if llama2c_count is not None else vocab_size)
        tok.pad_to(vocab_size)
        return tok
    raise TokenizerError("%s: unrecognised tokenizer format (expected SentencePiece model, llama2.c tokenizer.bin, "
                         "tokenizer.json, encoder.json/vocab.bpe or tiktoken ranks)" % path)


if __name__ == "__main__":
    t = read_tokenizer(sys.argv[1])
    print(t.form, t.model, t.pre, len(t), "merges=%s" % (len(t.merges) if t.merges is not None else None),
          dict(t.special), "add_bos", t.add_bos, "add_eos", t.add_eos, "add_space_prefix", t.add_space_prefix)
