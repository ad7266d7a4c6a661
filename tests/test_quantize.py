"""ember quantize against llama.cpp's llama-quantize.

Without llama.cpp:
  * a random F32 model from tools/convert_weights.py (8 layers, GQA 4, an untied head,
    ffn_down rows of 96: not whole 256-blocks) quantized to every type: each tensor's
    type is the one llama-quantize chose (tests/data/quantize/types.txt, read from
    llama-quantize's own files), general.file_type is its, every other KV is the input's;
  * models/ember-demo.gguf (F16, tied head, ffn_down rows of 640) quantized to every
    type reopens in ember, and its perplexity on the start of models/heldout.txt stays
    within a per-type bound of the F16 model's;
  * the converter's --type q4_k_m hand-off makes the same file as ember quantize;
    1 and 2 threads make the same file; a bad type, an already quantized input and an
    unwritable output are refused with a message that says so.
With llama.cpp (LLAMA_CPP_DIR, default ../llama.cpp; its build/bin), skipped by name
otherwise:
  * llama-quantize on the same inputs: ember's file equals its file byte for byte, for
    every type on the demo model and for four of the mixes on the random one (where they
    differ, ember's perplexity must be within 1% of the one on llama-quantize's file);
  * llama-perplexity loads ember's files (Q4_K_M, Q2_K) and its running perplexity
    is ember's within 1%.
Last line: "N passed, M failed, K skipped"."""
import math
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import testlib
from testlib import BUILD, EMBER, ROOT, check, summary

sys.path.insert(0, os.path.join(ROOT, "tools"))
import gguf_reader  # noqa: E402
import gguf_writer as gw  # noqa: E402

# ggml type ids the writer's table lacks (ggml-common.h)
gw.GGML_TYPES.setdefault(20, ("IQ4_NL", 32, 18))
gw.GGML_TYPES.setdefault(23, ("IQ4_XS", 256, 136))

OUT = os.path.join(ROOT, BUILD, "test-quantize")
CONVERT = os.path.join(ROOT, "tools", "convert_weights.py")
DEMO = os.path.join(ROOT, "models", "ember-demo.gguf")
SPEC = "random:dim=256,hidden=96,layers=8,heads=8,kv_heads=2,vocab=64,ctx=64,seed=11,tied=0"

# perplexity of the demo's quantized files on the start of heldout.txt may differ from
# the F16 model's by at most this much (measured on 1500 bytes, before rounding the limits up)
PPL_SLACK = {"q2_k": 0.03, "q3_k_s": 0.02, "q3_k_m": 0.02, "q3_k_l": 0.02, "q3_k": 0.02,
             "q4_0": 0.01, "q4_1": 0.01, "q4_k_s": 0.01, "q4_k_m": 0.01, "q4_k": 0.01,
             "iq4_nl": 0.01, "iq4_xs": 0.01, "f32": 0.0}


def run(*cmd):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True)


def parallel(fn, args):
    """fn over args, four processes at a time (most of each run is start-up and I/O)"""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda a: fn(*a), args))


def quantize(src, dst, typ, threads=1):
    r = run(EMBER, "quantize", src, dst, typ, "-t", threads)
    if r.returncode:
        print(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "exit %d" % r.returncode)
    return r.returncode == 0


def ppl_of(text):
    line = [l for l in text.splitlines() if "Final estimate" in l]
    return float(line[-1].split("PPL = ")[1].split()[0]) if line else float("nan")


def ember_ppl(model, text):
    return ppl_of(run(EMBER, "perplexity", "-m", model, "-f", text, "-c", "128", "--kv-f32", "-t", "1").stdout)


def llama_chunks(lp, model, text):
    """llama-perplexity's running estimate after each chunk, {chunk: ppl}.  Its logger
    prints from a thread that the process does not wait for at exit (llama.cpp issue
    22142), so the last lines, the final estimate among them, are often lost: the
    estimates that did come out are compared, and a run that printed none is repeated
    (three times at most)."""
    for _ in range(4):
        r = run(lp, "-m", model, "-f", text, "-c", "128", "-b", "128", "-ctk", "f32", "-ctv", "f32", "-fa", "off",
                "-t", "2")
        got = {int(k): float(v) for k, v in re.findall(r"\[(\d+)\]([0-9.]+),", r.stdout + r.stderr)}
        if r.returncode or got:
            break
    return r.returncode, got, r.stderr[-300:]


def ember_chunks(model, text):
    """ember perplexity's running estimate after each chunk, {chunk: ppl}"""
    r = run(EMBER, "perplexity", "-m", model, "-f", text, "-c", "128", "--kv-f32", "-t", "1")
    return {int(k): float(v) for k, v in re.findall(r"\[(\d+)/\d+\] ([0-9.]+)", r.stdout + r.stderr)}


def read_table():
    """tests/data/quantize/types.txt: {type: (file_type, [tensor types])}, tensor names"""
    names, table = None, {}
    for line in open(os.path.join(ROOT, "tests", "data", "quantize", "types.txt"), encoding="utf-8"):
        if line.startswith("#") or not line.strip():
            continue
        f = line.split()
        if f[0] == "tensors":
            names = f[1:]
        else:
            table[f[0]] = (int(f[1]), f[2:])
    return names, table


def as_list(v):
    return v.tolist() if hasattr(v, "tolist") else v


def tensor_types(path):
    r = gguf_reader.GGUFReader(path)
    return r, list(r.tensors), [gw.GGML_TYPES[t.type][0].lower() for t in r.tensors.values()]


def llama_cpp_bin():
    base = os.environ.get("LLAMA_CPP_DIR", os.path.join(ROOT, "..", "llama.cpp"))
    for d in (os.path.join(base, "build", "bin"), base):
        if all(os.access(os.path.join(d, b), os.X_OK) for b in ("llama-quantize", "llama-perplexity")):
            return d
    testlib.skipped.append("llama.cpp")
    print("SKIP: llama.cpp (llama-quantize, llama-perplexity) not found in %s/build/bin (set LLAMA_CPP_DIR): "
          "the byte comparisons with llama-quantize and llama-perplexity on ember's files did not run" % base)
    return None


os.makedirs(OUT, exist_ok=True)
names, table = read_table()
check(SPEC in open(os.path.join(ROOT, "tests", "data", "quantize", "types.txt")).read(),
      "types.txt was made from this test's model")
text = os.path.join(OUT, "heldout-start.txt")
with open(os.path.join(ROOT, "models", "heldout.txt"), encoding="utf-8") as f:
    open(text, "w", encoding="utf-8").write(f.read(1500))   # three chunks of 128 tokens

# ---- the random model: types per tensor, KVs ----
t0 = time.time()
small = os.path.join(OUT, "small-input.gguf")
subprocess.run([sys.executable, CONVERT, SPEC, "-o", small, "--type", "f32", "-q"], check=True)
src = gguf_reader.GGUFReader(small)
made = parallel(quantize, [(m, os.path.join(OUT, "%s-%s.gguf" % (name, typ)), typ)
                           for name, m in (("small", small), ("demo", DEMO)) for typ in table])
ok_small, ok_demo = dict(zip(table, made[:len(table)])), dict(zip(table, made[len(table):]))
for typ, (ftype, want) in table.items():
    out = os.path.join(OUT, "small-%s.gguf" % typ)
    if not check(ok_small[typ], "small model: ember quantize %s" % typ):
        continue
    r, got_names, got = tensor_types(out)
    check(got_names == names, "small %s: tensors in llama-quantize's order" % typ)
    bad = ["%s %s (llama-quantize: %s)" % (n, g, w) for n, g, w in zip(got_names, got, want) if g != w]
    check(not bad and len(got) == len(want), "small %s: types as llama-quantize's: %s" % (typ, "; ".join(bad[:4])))
    check(r.metadata.get("general.file_type") == ftype and r.metadata.get("general.quantization_version") == 2,
          "small %s: general.file_type %s, quantization_version %s" % (typ, r.metadata.get("general.file_type"),
                                                                     r.metadata.get("general.quantization_version")))
    keys = [k for k in src.metadata if k != "general.file_type"]
    same = all(k in r.metadata and as_list(r.metadata[k]) == as_list(src.metadata[k]) for k in keys)
    check(same and list(r.metadata)[:len(keys)] == keys, "small %s: the input's KVs, in order" % typ)
print("small model: %d types checked against llama-quantize's table (%.0f s)" % (len(table), time.time() - t0))

# ---- the demo model: reopens in ember, perplexity close to F16's ----
base_ppl = ember_ppl(DEMO, text)
check(math.isfinite(base_ppl), "demo F16 perplexity %s" % base_ppl)
demo_ppl = dict(zip(table, parallel(ember_ppl, [(os.path.join(OUT, "demo-%s.gguf" % t), text) for t in table])))
for typ in table:
    if not check(ok_demo[typ], "demo: ember quantize %s" % typ):
        continue
    p = demo_ppl[typ]
    slack = PPL_SLACK.get(typ, 0.005)
    print("demo %-7s perplexity %.4f (F16 %.4f, %+.2f%%)" % (typ, p, base_ppl, 100 * (p / base_ppl - 1)))
    check(math.isfinite(p) and abs(p / base_ppl - 1) <= slack if typ != "q2_k" else p / base_ppl - 1 <= slack,
          "demo %s: perplexity %.4f vs F16 %.4f (allowed %.1f%%)" % (typ, p, base_ppl, 100 * slack))

# ---- threads, the converter's hand-off, errors ----
one = os.path.join(OUT, "demo-q4_k_m-t1.gguf")
print("demo model: %d types reopened (%.0f s)" % (len(table), time.time() - t0))
check(quantize(DEMO, one, "q4_k_m", threads=2) and
      open(one, "rb").read() == open(os.path.join(OUT, "demo-q4_k_m.gguf"), "rb").read(),
      "1 and 2 threads make the same file")
for alias, mix in (("q3_k", "q3_k_m"), ("q4_k", "q4_k_m"), ("q5_k", "q5_k_m")):
    a = os.path.join(OUT, "demo-%s.gguf" % alias)
    check(quantize(DEMO, a, alias.upper()) and open(a, "rb").read() == open(os.path.join(OUT, "demo-%s.gguf" % mix),
                                                                              "rb").read(),
          "%s is %s (as llama-quantize's alias)" % (alias, mix))
conv = os.path.join(OUT, "small-converter-q4_k_m.gguf")
r = run(sys.executable, CONVERT, SPEC, "-o", conv, "--type", "q4_k_m", "-q", "-t", "2")
check(r.returncode == 0 and open(conv, "rb").read() == open(os.path.join(OUT, "small-q4_k_m.gguf"), "rb").read()
      and not os.path.exists(conv + ".f32.tmp"),
      "convert_weights.py --type q4_k_m = convert to F32 + ember quantize: %s" % r.stderr.strip())
r = run(EMBER, "quantize", DEMO, os.path.join(OUT, "x.gguf"), "q4_k_z")
check(r.returncode == 1 and "unknown type 'q4_k_z'" in r.stderr and "q4_k_m" in r.stderr, "bad type: %s" % r.stderr)
r = run(EMBER, "quantize", os.path.join(OUT, "demo-q4_k_m.gguf"), os.path.join(OUT, "x.gguf"), "q8_0")
check(r.returncode == 1 and "already quantized" in r.stderr and not os.path.exists(os.path.join(OUT, "x.gguf")),
      "quantized input: %s" % r.stderr)
r = run(EMBER, "quantize", DEMO, os.path.join(OUT, "no-such-dir", "x.gguf"), "q8_0")
check(r.returncode == 1 and "cannot create" in r.stderr, "unwritable output: %s" % r.stderr)
r = run(EMBER, "quantize", DEMO, "q8_0")
check(r.returncode == 2 and "usage" in r.stderr, "missing argument: %s" % r.stderr)

# ---- llama.cpp ----
bindir = llama_cpp_bin()
if bindir:
    lq = os.path.join(bindir, "llama-quantize")
    cases = [("demo", DEMO, t) for t in table] + [("small", small, t) for t in ("q2_k", "q3_k_m", "q4_k_m", "iq4_xs")]
    refs = [os.path.join(OUT, "llama-%s-%s.gguf" % (name, typ)) for name, _, typ in cases]
    done = parallel(run, [(lq, model, ref, typ.upper(), 1) for (name, model, typ), ref in zip(cases, refs)])
    identical = []
    for (name, model, typ), ref, r in zip(cases, refs, done):
        if not check(r.returncode == 0, "llama-quantize %s %s: %s" % (name, typ, r.stderr[-300:])):
            continue
        mine = os.path.join(OUT, "%s-%s.gguf" % (name, typ))
        if open(ref, "rb").read() == open(mine, "rb").read():
            identical.append("%s %s" % (name, typ))
            check(True, "")
            continue
        # not the same bytes: say which tensors differ, and hold ember's file to 1% perplexity
        a, b = gguf_reader.GGUFReader(ref), gguf_reader.GGUFReader(mine)
        diff = [n for n in a.tensors if n not in b.tensors or a.raw(n).tobytes() != b.raw(n).tobytes()]
        print("%s %s: file differs from llama-quantize's; tensors: %s" % (name, typ, ", ".join(diff[:6]) or "none"))
        if name == "demo":
            p_ref, p = ember_ppl(ref, text), demo_ppl.get(typ, float("nan"))
            check(abs(p / p_ref - 1) <= 0.01, "demo %s: perplexity %.4f vs %.4f on llama-quantize's file"
                  % (typ, p, p_ref))
        else:
            check(False, "small %s: differs from llama-quantize's file" % typ)
    print("byte-identical to llama-quantize's file: %d of %d (%s) (%.0f s)"
          % (len(identical), len(cases), ", ".join(identical), time.time() - t0))
    lp = os.path.join(bindir, "llama-perplexity")
    mixes = ("q4_k_m", "q2_k")
    got = parallel(llama_chunks, [(lp, os.path.join(OUT, "demo-%s.gguf" % typ), text) for typ in mixes])
    for typ, (rc, theirs) in zip(mixes, [(g[0], g[1]) for g in got]):
        mine = ember_chunks(os.path.join(OUT, "demo-%s.gguf" % typ), text)
        k = max(theirs) if theirs else 0
        p, q = theirs.get(k, float("nan")), mine.get(k, float("nan"))
        print("llama-perplexity on ember's demo %s: %.4f after chunk %d (ember %.4f)" % (typ, p, k, q))
        check(rc == 0 and k > 0 and abs(p / q - 1) <= 0.01,
              "llama-perplexity loads ember's %s file: %.4f vs ember %.4f after chunk %d" % (typ, p, q, k))
    print("(%.0f s)" % (time.time() - t0))

shutil.rmtree(OUT, ignore_errors=True)
sys.exit(summary())
