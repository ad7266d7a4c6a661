"""ember.py - Python bindings for ember (ctypes over libember.so; no compiled extension).

    import ember
    model = ember.Model("models/ember-demo.gguf")
    ctx = model.context(n_ctx=512)
    for piece in ctx.generate("Once upon a time", n_predict=32, temperature=0.8, seed=42):
        print(piece, end="", flush=True)

The shared library is found through $EMBER_LIB (a path), then beside this file
and in the repository's build/ directory, then on the system's library path.
Every failure raises ember.Error with the status code and ember's message.

Thread-safety follows the C library: a Model may be shared by threads; a
Context, Sampler or Chat is used by one thread at a time.  Objects free their
C memory when garbage-collected, or at once with close() / a with-block; a
Context keeps its Model alive, a Sampler its Grammar.
"""
import ctypes
import ctypes.util
import os

__all__ = ["Error", "Model", "Context", "Sampler", "Grammar", "Chat", "version", "cpu_features"]

# ---- loading the library -------------------------------------------------------


def _find_library():
    env = os.environ.get("EMBER_LIB")
    if env:
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    names = ("libember.so", "libember.dylib", "ember.dll", "libember.dll")
    for d in (here, os.path.join(here, "..", "..", "build"), os.path.join(here, "..", "..", "build", "win")):
        for n in names:
            p = os.path.join(d, n)
            if os.path.exists(p):
                return p
    found = ctypes.util.find_library("ember")
    if found:
        return found
    raise OSError("ember: cannot find libember (set EMBER_LIB to its path, or run `make lib`)")


_lib = ctypes.CDLL(_find_library())

# ---- the C types (must match include/ember.h) -----------------------------------

c_token = ctypes.c_int32
c_status = ctypes.c_int


class _Error(ctypes.Structure):
    _fields_ = [("code", ctypes.c_int), ("message", ctypes.c_char * 256)]


class _Allocator(ctypes.Structure):
    _fields_ = [("malloc_fn", ctypes.c_void_p), ("realloc_fn", ctypes.c_void_p),
                ("free_fn", ctypes.c_void_p), ("user_data", ctypes.c_void_p)]


class _ModelParams(ctypes.Structure):
    _fields_ = [("load_mode", ctypes.c_int), ("allocator", ctypes.POINTER(_Allocator)),
                ("vocab_only", ctypes.c_int), ("kernels", ctypes.c_char_p)]


class _ModelInfo(ctypes.Structure):
    _fields_ = [("architecture", ctypes.c_char_p), ("name", ctypes.c_char_p),
                ("tokenizer", ctypes.c_char_p)] + \
               [(n, ctypes.c_int) for n in ("n_vocab", "n_ctx_train", "n_embd", "n_layer", "n_head",
                                            "n_head_kv", "head_dim", "n_ff", "rope_dim")] + \
               [("rope_freq_base", ctypes.c_float), ("rms_eps", ctypes.c_float),
                ("tied_output", ctypes.c_int), ("file_type", ctypes.c_int),
                ("n_params", ctypes.c_uint64), ("weight_bytes", ctypes.c_uint64),
                ("bytes_per_token", ctypes.c_uint64), ("load_mode", ctypes.c_int),
                ("n_packed", ctypes.c_int), ("n_swa", ctypes.c_int), ("n_swa_layers", ctypes.c_int),
                ("kernels", ctypes.c_char_p)]


_ABORT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)


class _ContextParams(ctypes.Structure):
    _fields_ = [("n_ctx", ctypes.c_int), ("n_batch", ctypes.c_int), ("n_threads", ctypes.c_int),
                ("kv_type", ctypes.c_int), ("allocator", ctypes.POINTER(_Allocator)),
                ("abort_callback", _ABORT_FN), ("abort_user_data", ctypes.c_void_p)]


class _LogitBias(ctypes.Structure):
    _fields_ = [("token", c_token), ("bias", ctypes.c_float)]


class _SamplerParams(ctypes.Structure):
    _fields_ = [("temperature", ctypes.c_float), ("top_k", ctypes.c_int), ("top_p", ctypes.c_float),
                ("min_p", ctypes.c_float), ("repeat_penalty", ctypes.c_float),
                ("repeat_last_n", ctypes.c_int), ("seed", ctypes.c_uint64),
                ("allocator", ctypes.POINTER(_Allocator)),
                ("logit_bias", ctypes.POINTER(_LogitBias)), ("n_logit_bias", ctypes.c_int)]


class _StepResult(ctypes.Structure):
    _fields_ = [("token", c_token), ("stop", ctypes.c_int), ("len", ctypes.c_size_t)]


class _PerplexityResult(ctypes.Structure):
    _fields_ = [("ppl", ctypes.c_double), ("ppl_err", ctypes.c_double), ("mean_nll", ctypes.c_double),
                ("n_chunks", ctypes.c_int), ("n_scored", ctypes.c_int)]


class _GenerateResult(ctypes.Structure):
    _fields_ = [("n_prompt", ctypes.c_int), ("n_generated", ctypes.c_int), ("stop", ctypes.c_int),
                ("prompt_seconds", ctypes.c_double), ("generate_seconds", ctypes.c_double)]


class _ChatMessage(ctypes.Structure):
    _fields_ = [("role", ctypes.c_char_p), ("content", ctypes.c_char_p)]


class _ChatParams(ctypes.Structure):
    _fields_ = [("template_name", ctypes.c_char_p), ("add_generation_prompt", ctypes.c_int),
                ("enable_thinking", ctypes.c_int), ("date", ctypes.c_char_p),
                ("bos_token", ctypes.c_char_p), ("eos_token", ctypes.c_char_p),
                ("allocator", ctypes.POINTER(_Allocator))]


_TOKEN_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, c_token, ctypes.POINTER(ctypes.c_char),
                             ctypes.c_size_t)
_P = ctypes.c_void_p
_SZ = ctypes.c_size_t
_PSZ = ctypes.POINTER(ctypes.c_size_t)
_PERR = ctypes.POINTER(_Error)


def _fn(name, restype, *argtypes):
    f = getattr(_lib, name)
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


_status_string = _fn("ember_status_string", ctypes.c_char_p, c_status)
_version = _fn("ember_version", ctypes.c_char_p)
_cpu_features = _fn("ember_cpu_features", ctypes.c_char_p)
_type_name = _fn("ember_type_name", ctypes.c_char_p, ctypes.c_int)

_model_default_params = _fn("ember_model_default_params", _ModelParams)
_model_open_file = _fn("ember_model_open_file", c_status, ctypes.c_char_p, ctypes.POINTER(_ModelParams),
                       ctypes.POINTER(_P), _PERR)
_model_free = _fn("ember_model_free", None, _P)
_model_get_info = _fn("ember_model_get_info", c_status, _P, ctypes.POINTER(_ModelInfo), _PERR)
_model_meta = _fn("ember_model_meta", c_status, _P, ctypes.c_char_p, ctypes.c_char_p, _SZ, _PSZ, _PERR)
_n_vocab = _fn("ember_n_vocab", ctypes.c_int, _P)
_token_bos = _fn("ember_token_bos", c_token, _P)
_token_eos = _fn("ember_token_eos", c_token, _P)
_token_is_eog = _fn("ember_token_is_eog", ctypes.c_int, _P, c_token)
_tokenize = _fn("ember_tokenize", c_status, _P, ctypes.c_char_p, _SZ, ctypes.c_int,
                ctypes.POINTER(c_token), _SZ, _PSZ, _PERR)
_token_to_piece = _fn("ember_token_to_piece", c_status, _P, c_token, c_token, ctypes.c_int,
                      ctypes.c_char_p, _SZ, _PSZ, _PERR)
_detokenize = _fn("ember_detokenize", c_status, _P, ctypes.POINTER(c_token), ctypes.c_int, ctypes.c_int,
                  ctypes.c_char_p, _SZ, _PSZ, _PERR)

_context_default_params = _fn("ember_context_default_params", _ContextParams)
_context_create = _fn("ember_context_create", c_status, _P, ctypes.POINTER(_ContextParams),
                      ctypes.POINTER(_P), _PERR)
_context_free = _fn("ember_context_free", None, _P)
_context_errmsg = _fn("ember_context_errmsg", ctypes.c_char_p, _P)
_context_n_ctx = _fn("ember_context_n_ctx", ctypes.c_int, _P)
_context_pos = _fn("ember_context_pos", ctypes.c_int, _P)
_context_set_pos = _fn("ember_context_set_pos", c_status, _P, ctypes.c_int)
_context_tokens = _fn("ember_context_tokens", ctypes.POINTER(c_token), _P)
_eval = _fn("ember_eval", c_status, _P, ctypes.POINTER(c_token), ctypes.c_int, ctypes.POINTER(ctypes.c_float))
_get_logits = _fn("ember_get_logits", ctypes.POINTER(ctypes.c_float), _P)
_set_stop_strings = _fn("ember_context_set_stop_strings", c_status, _P, ctypes.POINTER(ctypes.c_char_p),
                        ctypes.c_int)
_step_text_size = _fn("ember_step_text_size", _SZ, _P)
_step = _fn("ember_step", c_status, _P, _P, ctypes.c_char_p, _SZ, ctypes.POINTER(_StepResult))
_perplexity = _fn("ember_perplexity", c_status, _P, ctypes.c_char_p, _SZ, _P, _P,
                  ctypes.POINTER(_PerplexityResult))
_state_size = _fn("ember_state_size", _SZ, _P, _P)
_state_save = _fn("ember_state_save", c_status, _P, _P, ctypes.c_void_p, _SZ, _PSZ)
_state_load = _fn("ember_state_load", c_status, _P, _P, ctypes.c_void_p, _SZ)

_sampler_default_params = _fn("ember_sampler_default_params", _SamplerParams)
_sampler_create = _fn("ember_sampler_create", c_status, _P, ctypes.POINTER(_SamplerParams),
                      ctypes.POINTER(_P), _PERR)
_sampler_free = _fn("ember_sampler_free", None, _P)
_sampler_errmsg = _fn("ember_sampler_errmsg", ctypes.c_char_p, _P)
_sampler_reset = _fn("ember_sampler_reset", None, _P, ctypes.c_uint64)
_sampler_sample = _fn("ember_sampler_sample", c_status, _P, ctypes.POINTER(ctypes.c_float),
                      ctypes.POINTER(c_token))
_sampler_accept = _fn("ember_sampler_accept", c_status, _P, c_token)
_sampler_set_grammar = _fn("ember_sampler_set_grammar", c_status, _P, _P)

_grammar_parse = _fn("ember_grammar_parse", c_status, ctypes.c_char_p, _SZ, ctypes.c_char_p,
                     ctypes.POINTER(_Allocator), ctypes.POINTER(_P), _PERR)
_grammar_from_strings = _fn("ember_grammar_from_strings", c_status, ctypes.POINTER(ctypes.c_char_p),
                            ctypes.c_int, ctypes.POINTER(_Allocator), ctypes.POINTER(_P), _PERR)
_grammar_from_json_schema = _fn("ember_grammar_from_json_schema", c_status, ctypes.c_char_p, _SZ,
                                ctypes.POINTER(_Allocator), ctypes.POINTER(_P), _PERR)
_grammar_accepts = _fn("ember_grammar_accepts", c_status, _P, ctypes.c_char_p, _SZ,
                       ctypes.POINTER(ctypes.c_int))
_grammar_free = _fn("ember_grammar_free", None, _P)

_chat_default_params = _fn("ember_chat_default_params", _ChatParams)
_chat_apply = _fn("ember_chat_apply", c_status, _P, ctypes.POINTER(_ChatParams), ctypes.POINTER(_ChatMessage),
                  ctypes.c_int, ctypes.c_char_p, _SZ, _PSZ, _PERR)
_chat_create = _fn("ember_chat_create", c_status, _P, _P, ctypes.POINTER(_ChatParams), ctypes.POINTER(_P), _PERR)
_chat_free = _fn("ember_chat_free", None, _P)
_chat_add = _fn("ember_chat_add", c_status, _P, ctypes.c_char_p, ctypes.c_char_p)
_chat_n_messages = _fn("ember_chat_n_messages", ctypes.c_int, _P)
_chat_message_at = _fn("ember_chat_message_at", ctypes.POINTER(_ChatMessage), _P, ctypes.c_int)
_chat_respond = _fn("ember_chat_respond", c_status, _P, _P, ctypes.c_int, _TOKEN_CB, ctypes.c_void_p,
                    ctypes.POINTER(_GenerateResult))
_chat_errmsg = _fn("ember_chat_errmsg", ctypes.c_char_p, _P)

OK = 0
ERR_MISSING = -10
ERR_BUFFER_TOO_SMALL = -14
TOKENIZE_ADD_BOS = 1
TOKENIZE_SPECIAL = 2
STOP_REASONS = {0: "none", 1: "eog", 2: "length", 3: "context_full", 4: "callback", 5: "string"}

# ---- errors ----------------------------------------------------------------------


class Error(Exception):
    """A failed ember call: .status is the ember_status code, .message ember's text."""

    def __init__(self, status, message):
        self.status = status
        self.message = message
        name = _status_string(status).decode()
        super().__init__("%s (%s)" % (message, name) if message else name)


def _check(status, message=b""):
    if status != OK:
        raise Error(status, (message or b"").decode("utf-8", "replace"))


def _check_err(status, err):
    if status != OK:
        raise Error(status, err.message.decode("utf-8", "replace"))


def _text_out(call):
    """Runs call(buf, size, out_len) by ember's snprintf-like convention: ask, then fill."""
    need = ctypes.c_size_t(0)
    size = 256
    while True:
        buf = ctypes.create_string_buffer(size)
        status, err = call(buf, size, ctypes.byref(need))
        if status == ERR_BUFFER_TOO_SMALL and need.value + 1 > size:
            size = need.value + 1
            continue
        _check_err(status, err)
        return buf.raw[:need.value]


def version():
    """The library's version string ("0.1.0")."""
    return _version().decode()


def cpu_features():
    """The SIMD kernel set in use ("avx2", "avx512", "neon", "scalar", ...)."""
    return _cpu_features().decode()


def _utf8(s):
    return s.encode("utf-8") if isinstance(s, str) else bytes(s)


# ---- objects that own a C handle ----------------------------------------------------------


class _Owned:
    """Frees its C handle with the class's _free at close(), at the end of a with-block, or when
    garbage-collected."""
    _free = None
    _h = None

    def close(self):
        """Free the C object now."""
        if self._h:
            type(self)._free(self._h)
            self._h = None

    def __del__(self):
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---- model -------------------------------------------------------------------------


class Model(_Owned):
    """An open GGUF model.  Immutable; may be shared between threads."""
    _free = staticmethod(_model_free)

    def __init__(self, path, vocab_only=False, load_mode=0, kernels=None):
        """kernels: None or "auto" (the best set this CPU runs), "scalar", "avx2", "avx512", ..."""
        p = _model_default_params()
        p.vocab_only = 1 if vocab_only else 0
        p.load_mode = load_mode
        p.kernels = _utf8(kernels) if kernels else None
        err = _Error()
        h = ctypes.c_void_p()
        _check_err(_model_open_file(os.fsencode(path), ctypes.byref(p), ctypes.byref(h), ctypes.byref(err)), err)
        self._h = h

    @property
    def info(self):
        """Hyperparameters and facts about the model, as a dict."""
        i = _ModelInfo()
        err = _Error()
        _check_err(_model_get_info(self._h, ctypes.byref(i), ctypes.byref(err)), err)
        out = {}
        for name, _t in _ModelInfo._fields_:
            v = getattr(i, name)
            out[name] = v.decode() if isinstance(v, bytes) else v
        return out

    def meta(self, key):
        """A metadata value as text (None if the key is absent); arrays are summarised."""
        def call(buf, size, need):
            err = _Error()
            return _model_meta(self._h, _utf8(key), buf, size, need, ctypes.byref(err)), err
        try:
            return _text_out(call).decode("utf-8", "replace")
        except Error as e:
            if e.status == ERR_MISSING:
                return None
            raise

    @property
    def n_vocab(self):
        return _n_vocab(self._h)

    @property
    def bos(self):
        """The BOS token id, or None."""
        t = _token_bos(self._h)
        return None if t < 0 else t

    @property
    def eos(self):
        """The EOS token id, or None."""
        t = _token_eos(self._h)
        return None if t < 0 else t

    def is_eog(self, token):
        """True if generation stops at this token (EOS, end of turn, ...)."""
        return bool(_token_is_eog(self._h, token))

    def tokenize(self, text, add_special=True, parse_special=False):
        """Token ids of text (str or bytes).  add_special: BOS/EOS where the model asks for them;
        parse_special: special-token text such as "<|im_start|>" becomes its id."""
        data = _utf8(text)
        flags = (TOKENIZE_ADD_BOS if add_special else 0) | (TOKENIZE_SPECIAL if parse_special else 0)
        need = ctypes.c_size_t(0)
        cap = len(data) + 8
        while True:
            out = (c_token * cap)()
            err = _Error()
            st = _tokenize(self._h, data, len(data), flags, out, cap, ctypes.byref(need), ctypes.byref(err))
            if st == ERR_BUFFER_TOO_SMALL and need.value > cap:
                cap = need.value
                continue
            _check_err(st, err)
            return list(out[:need.value])

    def token_to_piece(self, token, prev=-1, special=False):
        """The bytes one token contributes to text (may be part of a UTF-8 character)."""
        def call(buf, size, need):
            err = _Error()
            return _token_to_piece(self._h, token, prev, TOKENIZE_SPECIAL if special else 0,
                                   buf, size, need, ctypes.byref(err)), err
        return _text_out(call)

    def detokenize(self, tokens, special=False):
        """The text of a token sequence (invalid UTF-8 replaced)."""
        arr = (c_token * max(1, len(tokens)))(*tokens)

        def call(buf, size, need):
            err = _Error()
            return _detokenize(self._h, arr, len(tokens), TOKENIZE_SPECIAL if special else 0,
                               buf, size, need, ctypes.byref(err)), err
        return _text_out(call).decode("utf-8", "replace")

    def apply_chat_template(self, messages, template=None, add_generation_prompt=True, enable_thinking=True,
                            date=None):
        """Render [{"role": ..., "content": ...}, ...] in the model's chat format (or the named one)."""
        p = _chat_default_params()
        p.template_name = _utf8(template) if template else None
        p.add_generation_prompt = 1 if add_generation_prompt else 0
        p.enable_thinking = 1 if enable_thinking else 0
        p.date = _utf8(date) if date else None
        keep = [(_utf8(m["role"]), _utf8(m["content"])) for m in messages]
        arr = (_ChatMessage * max(1, len(keep)))(*[_ChatMessage(r, c) for r, c in keep])

        def call(buf, size, need):
            err = _Error()
            return _chat_apply(self._h, ctypes.byref(p), arr, len(keep), buf, size, need, ctypes.byref(err)), err
        return _text_out(call).decode("utf-8", "replace")

    def context(self, **kw):
        """A new Context on this model (see Context)."""
        return Context(self, **kw)


# ---- grammar and sampler ------------------------------------------------------------


class Grammar(_Owned):
    """A compiled GBNF grammar (llama.cpp's format).  Immutable; shareable."""
    _free = staticmethod(_grammar_free)

    def __init__(self, gbnf, root=None, _handle=None):
        if _handle is not None:
            self._h = _handle
            return
        data = _utf8(gbnf)
        err = _Error()
        h = ctypes.c_void_p()
        _check_err(_grammar_parse(data, len(data), _utf8(root) if root else None, None, ctypes.byref(h),
                                  ctypes.byref(err)), err)
        self._h = h

    @classmethod
    def one_of(cls, strings):
        """A grammar accepting exactly one of the strings."""
        enc = [_utf8(s) for s in strings]
        arr = (ctypes.c_char_p * max(1, len(enc)))(*enc)
        err = _Error()
        h = ctypes.c_void_p()
        _check_err(_grammar_from_strings(arr, len(enc), None, ctypes.byref(h), ctypes.byref(err)), err)
        return cls(None, _handle=h)

    @classmethod
    def from_json_schema(cls, schema):
        """A grammar for JSON matching a schema (a str, bytes, or a dict turned into JSON)."""
        if isinstance(schema, dict):
            import json
            schema = json.dumps(schema)
        data = _utf8(schema)
        err = _Error()
        h = ctypes.c_void_p()
        _check_err(_grammar_from_json_schema(data, len(data), None, ctypes.byref(h), ctypes.byref(err)), err)
        return cls(None, _handle=h)

    def accepts(self, text):
        """True if the grammar accepts the whole text."""
        data = _utf8(text)
        ok = ctypes.c_int(0)
        _check(_grammar_accepts(self._h, data, len(data), ctypes.byref(ok)), b"grammar_accepts failed")
        return bool(ok.value)


class Sampler(_Owned):
    """Chooses tokens from logits: greedy at temperature 0, else top-k / top-p / min-p sampling."""
    _free = staticmethod(_sampler_free)

    def __init__(self, model, temperature=None, top_k=None, top_p=None, min_p=None, repeat_penalty=None,
                 repeat_last_n=None, seed=None, logit_bias=None, grammar=None):
        """Arguments left as None keep the library's defaults (ember_sampler_default_params: temperature
        0.8, top_k 40, top_p 0.95, min_p 0.05, no repetition penalty).  logit_bias: {token: bias}."""
        p = _sampler_default_params()
        for name, v in (("temperature", temperature), ("top_k", top_k), ("top_p", top_p), ("min_p", min_p),
                        ("repeat_penalty", repeat_penalty), ("repeat_last_n", repeat_last_n), ("seed", seed)):
            if v is not None:
                setattr(p, name, v)
        if logit_bias:
            items = list(logit_bias.items())
            self._bias = (_LogitBias * len(items))(*[_LogitBias(t, b) for t, b in items])
            p.logit_bias = ctypes.cast(self._bias, ctypes.POINTER(_LogitBias))
            p.n_logit_bias = len(items)
        err = _Error()
        h = ctypes.c_void_p()
        _check_err(_sampler_create(model._h, ctypes.byref(p), ctypes.byref(h), ctypes.byref(err)), err)
        self._h = h
        self._model = model
        self._grammar = None
        if grammar is not None:
            self.set_grammar(grammar)

    def set_grammar(self, grammar):
        """Constrain sampling to a Grammar (None removes it)."""
        st = _sampler_set_grammar(self._h, grammar._h if grammar is not None else None)
        _check(st, _sampler_errmsg(self._h))
        self._grammar = grammar

    def reset(self, seed):
        """Forget the history, restart the grammar, reseed."""
        _sampler_reset(self._h, seed)

    def sample(self, logits_ptr):
        """A token from a C float pointer of n_vocab logits (Context.logits_ptr())."""
        tok = c_token(0)
        _check(_sampler_sample(self._h, logits_ptr, ctypes.byref(tok)), _sampler_errmsg(self._h))
        return tok.value

    def accept(self, token):
        _check(_sampler_accept(self._h, token), _sampler_errmsg(self._h))


# ---- context ---------------------------------------------------------------------------


class Context(_Owned):
    """One KV cache on a model: evaluate tokens, read logits, generate.  One thread at a time."""
    _free = staticmethod(_context_free)

    def __init__(self, model, n_ctx=0, n_batch=0, n_threads=0, kv_f32=False):
        p = _context_default_params()
        p.n_ctx, p.n_batch, p.n_threads, p.kv_type = n_ctx, n_batch, n_threads, 1 if kv_f32 else 0
        err = _Error()
        h = ctypes.c_void_p()
        _check_err(_context_create(model._h, ctypes.byref(p), ctypes.byref(h), ctypes.byref(err)), err)
        self._h = h
        self.model = model

    def _check(self, status):
        _check(status, _context_errmsg(self._h))

    @property
    def n_ctx(self):
        return _context_n_ctx(self._h)

    @property
    def pos(self):
        """Positions filled in the KV cache."""
        return _context_pos(self._h)

    def set_pos(self, pos):
        """Forget positions >= pos (0 clears); logits then predict the token at pos."""
        self._check(_context_set_pos(self._h, pos))

    @property
    def tokens(self):
        """The tokens the context holds."""
        p = _context_tokens(self._h)
        return list(p[:self.pos]) if p else []

    def eval(self, tokens):
        """Append tokens and run the model over them."""
        arr = (c_token * max(1, len(tokens)))(*tokens)
        self._check(_eval(self._h, arr, len(tokens), None))

    def logits_ptr(self):
        p = _get_logits(self._h)
        if not p:
            raise Error(-1, "no logits: evaluate a token first")
        return p

    def logits(self, numpy=None):
        """The logits predicting the next token: a numpy array (a copy) if numpy is importable
        (or numpy=True), else a list of floats."""
        p = self.logits_ptr()
        n = self.model.n_vocab
        if numpy is not False:
            try:
                import numpy as np
                return np.ctypeslib.as_array(p, shape=(n,)).copy()
            except ImportError:
                if numpy:
                    raise
        return list(p[:n])

    def set_stop_strings(self, stops):
        enc = [_utf8(s) for s in stops]
        arr = (ctypes.c_char_p * max(1, len(enc)))(*enc)
        self._check(_set_stop_strings(self._h, arr, len(enc)))

    def generate(self, prompt=None, n_predict=128, sampler=None, stop=None, **sampler_args):
        """Stream the continuation of prompt (str, bytes or token ids; None: go on from what the
        context holds) as str pieces, up to n_predict tokens (-1: until the context is full).
        sampler: a Sampler, else one is made from sampler_args (temperature=0 is greedy).
        After the iterator ends, .stop_reason says why ("eog", "length", "context_full",
        "string")."""
        if sampler is None:
            sampler = Sampler(self.model, **sampler_args)
        if prompt is not None:
            ids = prompt if isinstance(prompt, (list, tuple)) else self.model.tokenize(prompt)
            self.eval(ids)
        if stop:
            self.set_stop_strings(stop)
        size = _step_text_size(self._h)
        buf = ctypes.create_string_buffer(max(1, size))
        res = _StepResult()
        pending = b""
        self.stop_reason = "length"
        n = 0
        try:
            while n_predict < 0 or n < n_predict:
                self._check(_step(self._h, sampler._h, buf, size, ctypes.byref(res)))
                n += 1
                pending += buf.raw[:res.len]
                text, pending = _split_utf8(pending)
                if text:
                    yield text
                if res.stop != 0:
                    self.stop_reason = STOP_REASONS.get(res.stop, str(res.stop))
                    break
        finally:
            if stop:
                self.set_stop_strings([])
        if pending:
            yield pending.decode("utf-8", "replace")

    def generate_text(self, prompt=None, n_predict=128, **kw):
        """generate(), joined into one string."""
        return "".join(self.generate(prompt, n_predict, **kw))

    def perplexity(self, text):
        """Perplexity of text as llama.cpp's perplexity tool computes it (chunks of n_ctx tokens).
        Returns a dict: ppl, ppl_err, mean_nll, n_chunks, n_scored.  Clears the cache."""
        data = _utf8(text)
        r = _PerplexityResult()
        self._check(_perplexity(self._h, data, len(data), None, None, ctypes.byref(r)))
        return {k: getattr(r, k) for k, _t in _PerplexityResult._fields_}

    def save_state(self, sampler=None):
        """The context's state (tokens, KV rows, logits; the sampler's too if given) as bytes."""
        sh = sampler._h if sampler is not None else None
        n = _state_size(self._h, sh)
        buf = ctypes.create_string_buffer(max(1, n))
        written = ctypes.c_size_t(0)
        self._check(_state_save(self._h, sh, buf, n, ctypes.byref(written)))
        return buf.raw[:written.value]

    def load_state(self, data, sampler=None):
        """Restore bytes from save_state (checked whole before anything changes)."""
        self._check(_state_load(self._h, sampler._h if sampler is not None else None, data, len(data)))


def _split_utf8(b):
    """(text of the complete UTF-8 characters of b, the incomplete tail)."""
    cut = len(b)
    for back in range(1, min(4, len(b)) + 1):
        c = b[-back]
        if c & 0xC0 == 0x80:
            continue
        need = 2 if c & 0xE0 == 0xC0 else 3 if c & 0xF0 == 0xE0 else 4 if c & 0xF8 == 0xF0 else 1
        if need > back:
            cut = len(b) - back
        break
    return b[:cut].decode("utf-8", "replace"), b[cut:]


# ---- chat -------------------------------------------------------------------------------


class Chat(_Owned):
    """A conversation that keeps its context's KV cache between turns."""
    _free = staticmethod(_chat_free)

    def __init__(self, context, system=None, template=None, enable_thinking=True):
        p = _chat_default_params()
        p.template_name = _utf8(template) if template else None
        p.enable_thinking = 1 if enable_thinking else 0
        err = _Error()
        h = ctypes.c_void_p()
        _check_err(_chat_create(context.model._h, context._h, ctypes.byref(p), ctypes.byref(h),
                                ctypes.byref(err)), err)
        self._h = h
        self.context = context
        if system:
            self.add("system", system)

    def add(self, role, content):
        _check(_chat_add(self._h, _utf8(role), _utf8(content)), _chat_errmsg(self._h))

    @property
    def messages(self):
        out = []
        for i in range(_chat_n_messages(self._h)):
            m = _chat_message_at(self._h, i).contents
            out.append({"role": m.role.decode("utf-8", "replace"), "content": m.content.decode("utf-8", "replace")})
        return out

    def respond(self, user=None, n_predict=256, sampler=None, on_text=None, **sampler_args):
        """Add the user's message (if given), generate the assistant's reply, append it and return
        it.  on_text(str) is called with each piece as it streams."""
        if user is not None:
            self.add("user", user)
        if sampler is None:
            sampler = Sampler(self.context.model, **sampler_args)
        pieces = []
        pending = [b""]

        def cb(_ud, _tok, text, n):
            pending[0] += ctypes.string_at(text, n)
            s, pending[0] = _split_utf8(pending[0])
            if s:
                pieces.append(s)
                if on_text:
                    on_text(s)
            return 0
        c_cb = _TOKEN_CB(cb)
        r = _GenerateResult()
        _check(_chat_respond(self._h, sampler._h, n_predict, c_cb, None, ctypes.byref(r)), _chat_errmsg(self._h))
        if pending[0]:
            pieces.append(pending[0].decode("utf-8", "replace"))
        return "".join(pieces)
