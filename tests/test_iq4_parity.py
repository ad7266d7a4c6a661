"""IQ4_XS and IQ4_NL files: ember's perplexity against llama.cpp's on the same
files.  The files are models/ember-demo.gguf with its matrices quantized as
llama-quantize quantizes them (IQ4_XS: IQ4_XS where rows are multiples of
256, IQ4_NL for the 640-wide ffn_down, as its per-tensor fallback does; and
all IQ4_NL), by ember's quantizer through build/tests/tool_quantize, whose
bytes equal llama-quantize's (checked on every IQ4 tensor llama-quantize
made of this model; test_kernels pins them by hashes of ggml's own output).
token_embd stays F16 (llama-quantize would make it Q6_K, which ember does
not quantize).  The llama.cpp numbers were printed by llama.cpp (ggml
0.18.1, commit d32676d77) for files with the SHA-256 recorded here:
    llama-perplexity -m FILE -f models/heldout.txt -c 128 -b 128 -ctk f32 -ctv f32 -fa off
Last line: "N passed, M failed"."""
import hashlib
import os
import subprocess
import sys

import numpy as np

from testlib import BUILD, EMBER, ROOT, check, summary

sys.path.insert(0, os.path.join(ROOT, "tools"))
import gguf_reader  # noqa: E402
import gguf_writer as gw  # noqa: E402

IQ4_NL, IQ4_XS = 20, 23
# the writer's type table knows the types ember's converter makes; these two
# come from ggml (ggml-common.h): 32 elements in 18 bytes, 256 in 136
gw.GGML_TYPES.setdefault(IQ4_NL, ("IQ4_NL", 32, 18))
gw.GGML_TYPES.setdefault(IQ4_XS, ("IQ4_XS", 256, 136))
LLAMA_FTYPE = {IQ4_NL: 25, IQ4_XS: 30}   # llama_ftype MOSTLY_IQ4_NL / MOSTLY_IQ4_XS

QUANTIZE = os.path.join(ROOT, BUILD, "tests", "tool_quantize")


def quantize(x, ggml_type):
    """rows of x (float32, numpy order) quantized by ember's quantizer"""
    name = gw.GGML_TYPES[ggml_type][0].lower()
    r = subprocess.run([QUANTIZE, name, str(x.shape[-1])], input=np.ascontiguousarray(x, dtype="<f4").tobytes(),
                       capture_output=True, check=True)
    return np.frombuffer(r.stdout, dtype=np.uint8)


def write_iq4(src, dst, ftype):
    """src with its matrices (but token_embd) in ftype's types, as llama-quantize chooses them"""
    r = gguf_reader.GGUFReader(src)
    w = gw.GGUFWriter(dst, alignment=r.alignment)
    for key, value in r.metadata.items():
        if key == "general.alignment":
            continue
        vt = r.metadata_types[key]
        if key == "general.file_type":
            value = LLAMA_FTYPE[ftype]
        if isinstance(vt, tuple):
            w.add(key, list(value) if not isinstance(value, list) else value, vt[0], vt[1])
        else:
            w.add(key, value, vt)
    counts = {}
    for name, t in r.tensors.items():
        typ = t.type
        if len(t.ne) == 2 and name != "token_embd.weight":
            typ = IQ4_XS if ftype == IQ4_XS and t.ne[0] % 256 == 0 else IQ4_NL
        data = quantize(r.tensor(name), typ) if typ != t.type else np.array(r.raw(name))
        counts[typ] = counts.get(typ, 0) + 1
        w.add_tensor(name, r.shape(name), typ, data)
    w.write()
    return counts


def ppl_of(out):
    line = [l for l in out.splitlines() if l.startswith("Final estimate")]
    return float(line[-1].split()[4]) if line else float("nan")


demo = os.path.join(ROOT, "models", "ember-demo.gguf")
heldout = os.path.join(ROOT, "models", "heldout.txt")
out_dir = os.path.join(ROOT, BUILD, "test-models")
os.makedirs(out_dir, exist_ok=True)
cases = [
    # type, tensors by type, file sha256, llama.cpp's "Final estimate: PPL = ..."
    (IQ4_XS, {0: 9, 1: 1, IQ4_NL: 4, IQ4_XS: 24},
     "7b90fdb24b5352a10e79652cf217809fe4a56bfe774312a0d16c5b996d214c5d", 102.2274),   # +/- 1.83506
    (IQ4_NL, {0: 9, 1: 1, IQ4_NL: 28},
     "cc44414ed0cd7eaee55036e9fea614b9f2674791bf1273360cd121cdc1981d6a", 102.2078),   # +/- 1.83502
]
for ftype, want_counts, sha, want in cases:
    tname = gw.GGML_TYPES[ftype][0].lower()
    path = os.path.join(out_dir, "ember-demo-%s.gguf" % tname)
    counts = write_iq4(demo, path, ftype)
    print("%s: tensors by type %s" % (os.path.basename(path),
                                      {gw.GGML_TYPES[k][0]: v for k, v in sorted(counts.items())}))
    check(counts == want_counts, "%s: tensors by type %r, want %r" % (path, counts, want_counts))
    got_sha = hashlib.sha256(open(path, "rb").read()).hexdigest()
    check(sha is None or got_sha == sha, "%s: sha256 %s, llama.cpp's number is for %s" % (path, got_sha, sha))
    r = subprocess.run([EMBER, "perplexity", "-m", path, "-f", heldout, "-c", "128", "--kv-f32"],
                       capture_output=True, text=True)
    got = ppl_of(r.stdout)
    print("%s perplexity: ember %.4f, llama.cpp %s (sha256 %s)" % (tname, got, want, got_sha))
    check(want is not None and abs(np.log(got) - np.log(want)) <= 5e-4,
          "%s perplexity %.4f vs llama.cpp's %s" % (tname, got, want))
sys.exit(summary())
