#!/usr/bin/python3
"""End-to-end checks of ember's bundled demo model against PyTorch reference values.

Run from the repository root after `make`:

    /usr/bin/python3 tests/test_demo.py

models/reference.json was written by tools/train_demo.py when it trained
models/ember-demo.gguf; it holds, computed with PyTorch on the F16-rounded weights:
the tokenization of models/heldout.txt, the held-out perplexity exactly as
llama.cpp's perplexity tool computes it at n_ctx 128, and greedy continuations of
a few prompts.  This script runs the ember CLI (build/ember) and compares:

  * the GGUF file: present, <= 8 MiB, llama metadata matching the reference config;
  * `ember tokenize -m MODEL -f models/heldout.txt` == the reference ids (with BOS);
  * `ember tokenize` of each greedy prompt == the reference prompt ids;
  * `ember perplexity -m MODEL -f models/heldout.txt -c 128`: within 0.5% of the
    F16 reference;
  * `ember -m MODEL -p PROMPT -n 20 --temp 0` prints exactly the detokenized
    reference continuation (one trailing newline is tolerated).

Needs only the Python standard library (and numpy for the GGUF metadata check,
through tools/gguf_reader.py; skipped without numpy).  Prints a final line
`N passed, M failed` and exits non-zero on failure.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import testlib
from testlib import EMBER, ROOT

# Overridable for dry runs against another model/reference pair.
MODEL = os.environ.get("EMBER_DEMO_MODEL", os.path.join(ROOT, "models", "ember-demo.gguf"))
HELDOUT = os.environ.get("EMBER_DEMO_HELDOUT", os.path.join(ROOT, "models", "heldout.txt"))
REFERENCE = os.environ.get("EMBER_DEMO_REFERENCE", os.path.join(ROOT, "models", "reference.json"))
MAX_BYTES = 8 * 1024 * 1024
PPL_TOL = 0.005
TIMEOUT = 900


def report(ok, name, detail=""):
    testlib.record(ok, "%s %s%s" % ("PASS" if ok else "FAIL", name, (": " + detail) if detail else ""))


def run_ember(args):
    """Run build/ember; return (returncode, stdout bytes, stderr bytes, seconds)."""
    t0 = time.time()
    p = subprocess.run([EMBER] + args, cwd=ROOT, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=TIMEOUT)
    return p.returncode, p.stdout, p.stderr, time.time() - t0


def tail(b, n=600):
    s = b.decode("utf-8", errors="replace")
    return s[-n:]


def last_line(b):
    lines = [l for l in b.decode("utf-8", errors="replace").splitlines() if l.strip()]
    return lines[-1] if lines else ""


def ids_sha256(ids):
    return hashlib.sha256(json.dumps(ids, separators=(", ", ": ")).encode()).hexdigest()


def parse_ids(line):
    try:
        ids = json.loads(line)
    except ValueError:
        return None
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        return None
    return ids


def first_diff(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def check_files(ref):
    ok = os.path.isfile(MODEL)
    size = os.path.getsize(MODEL) if ok else 0
    report(ok and size <= MAX_BYTES, "model file",
           "%s, %d bytes (limit %d)" % (os.path.relpath(MODEL, ROOT), size, MAX_BYTES) if ok
           else "%s is missing" % MODEL)
    with open(HELDOUT, "rb") as f:
        data = f.read()
    h = hashlib.sha256(data).hexdigest()
    report(h == ref["heldout_sha256"], "heldout.txt matches reference.json",
           "sha256 %s, %d bytes" % (h[:16], len(data)) if h == ref["heldout_sha256"]
           else "models/heldout.txt changed since the reference was computed (sha256 %s, expected %s)"
           % (h, ref["heldout_sha256"]))
    return ok


def check_gguf_metadata(ref):
    try:
        sys.path.insert(0, os.path.join(ROOT, "tools"))
        import gguf_reader  # noqa: E402  (needs numpy)
    except Exception as e:  # pragma: no cover
        print("SKIP gguf metadata (%s)" % e)
        return
    try:
        r = gguf_reader.GGUFReader(MODEL)
        md = r.metadata
        cfg = ref["config"]
        want = {
            "general.architecture": "llama",
            "llama.embedding_length": cfg["hidden_size"],
            "llama.feed_forward_length": cfg["intermediate_size"],
            "llama.block_count": cfg["num_hidden_layers"],
            "llama.attention.head_count": cfg["num_attention_heads"],
            "llama.attention.head_count_kv": cfg["num_key_value_heads"],
            "tokenizer.ggml.model": "gpt2",
            "tokenizer.ggml.bos_token_id": ref["tokenization"]["bos_id"],
        }
        bad = []
        for k, v in want.items():
            if md.get(k) != v:
                bad.append("%s=%r (want %r)" % (k, md.get(k), v))
        n_vocab = len(md.get("tokenizer.ggml.tokens", []))
        if n_vocab != cfg["vocab_size"]:
            bad.append("%d tokens (want %d)" % (n_vocab, cfg["vocab_size"]))
        report(not bad, "gguf metadata", "; ".join(bad) if bad else
               "llama, %d layers, vocab %d, %d tensors" % (cfg["num_hidden_layers"], n_vocab, len(r.tensors)))
    except Exception as e:
        report(False, "gguf metadata", "cannot read %s: %s" % (MODEL, e))


def check_tokenize(ref):
    tref = ref["tokenization"]
    rc, out, err, dt = run_ember(["tokenize", "-m", MODEL, "-f", HELDOUT])
    if rc != 0:
        report(False, "tokenize heldout.txt", "exit %d; stderr: %s" % (rc, tail(err)))
        return
    ids = parse_ids(last_line(out))
    if ids is None:
        report(False, "tokenize heldout.txt", "last stdout line is not a list of ids: %r" % last_line(out)[:200])
        return
    n, h = len(ids), ids_sha256(ids)
    if n == tref["n_tokens"] and h == tref["ids_sha256"]:
        report(True, "tokenize heldout.txt", "%d tokens, ids identical (%.1fs)" % (n, dt))
        return
    first = tref["first_1000"]
    i = first_diff(ids, first)
    detail = "%d tokens (reference %d), sha256 %s (reference %s)" % (n, tref["n_tokens"], h[:16],
                                                                       tref["ids_sha256"][:16])
    if i < min(len(first), len(ids)):
        detail += "; first difference at index %d: ember %r vs reference %r" % (
            i, ids[max(0, i - 3):i + 5], first[max(0, i - 3):i + 5])
    elif ids[:len(first)] == first:
        detail += "; the first %d ids agree, the difference is later" % len(first)
    k = min(len(ids), len(first) - 1)
    if ids and ids[0] != tref["bos_id"] and ids[:k] == first[1:k + 1]:
        detail += "; ember's ids look like the reference without BOS"
    report(False, "tokenize heldout.txt", detail)


def check_prompt_tokens(ref):
    for run in ref["greedy"]["runs"]:
        p = run["prompt"]
        if p == "":
            continue
        with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as f:
            f.write(p.encode("utf-8"))
            path = f.name
        try:
            rc, out, err, _ = run_ember(["tokenize", "-m", MODEL, "-f", path])
        finally:
            os.unlink(path)
        ids = parse_ids(last_line(out)) if rc == 0 else None
        ok = ids == run["prompt_ids"]
        report(ok, "tokenize prompt %r" % p,
               "%r" % ids if ok else "ember %r, reference %r%s" % (
                   ids, run["prompt_ids"], "" if rc == 0 else " (exit %d: %s)" % (rc, tail(err, 300))))


def check_perplexity(ref):
    pref = ref["perplexity"]
    want = pref["f16"]["ppl"]
    rc, out, err, dt = run_ember(["perplexity", "-m", MODEL, "-f", HELDOUT, "-c", str(pref["n_ctx"])])
    if rc != 0:
        report(False, "perplexity c=%d" % pref["n_ctx"], "exit %d; stderr: %s" % (rc, tail(err)))
        return
    line = last_line(out)
    m = re.search(r"Final estimate: PPL = ([0-9.eE+-]+) \+/- ([0-9.eE+-]+)", line)
    if not m:
        report(False, "perplexity c=%d" % pref["n_ctx"],
               "last stdout line is not 'Final estimate: PPL = <v> +/- <err>': %r" % line[:200])
        return
    got, got_err = float(m.group(1)), float(m.group(2))
    rel = abs(got - want) / want
    report(rel <= PPL_TOL, "perplexity c=%d" % pref["n_ctx"],
           "ember %.4f +/- %.5f, reference (F16 weights) %.4f +/- %.5f, F32 %.4f; difference %.3f%% "
           "(limit %.1f%%), %.1fs" % (got, got_err, want, pref["f16"]["error"], pref["f32"]["ppl"],
                                      100 * rel, 100 * PPL_TOL, dt))


def check_greedy(ref):
    for run in ref["greedy"]["runs"]:
        p = run["prompt"]
        n = run["n_predict"]
        rc, out, err, dt = run_ember(["-m", MODEL, "-p", p, "-n", str(n), "--temp", "0"])
        name = "greedy %r -n %d" % (p, n)
        if rc != 0:
            report(False, name, "exit %d; stderr: %s" % (rc, tail(err)))
            continue
        if "text_hex" in run:
            want = bytes.fromhex(run["text_hex"])
        else:
            want = run["text"].encode("utf-8")
        ok = out == want or (out == want + b"\n" and not want.endswith(b"\n"))
        detail = "%r (%.1fs)" % (want.decode("utf-8", errors="replace"), dt) if ok else \
            "ember printed %r, expected %r (reference ids %r; smallest top-2 logit margin %.3f)" % (
                out.decode("utf-8", errors="replace"), want.decode("utf-8", errors="replace"),
                run["ids"], run.get("min_logit_margin", float("nan")))
        report(ok, name, detail)


def main():
    os.chdir(ROOT)
    try:
        with open(REFERENCE) as f:
            ref = json.load(f)
    except (OSError, ValueError) as e:
        report(False, "reference.json", "cannot read %s: %s" % (REFERENCE, e))
        return testlib.summary()
    have_model = check_files(ref)
    if have_model:
        check_gguf_metadata(ref)
    if not (os.path.isfile(EMBER) and os.access(EMBER, os.X_OK)):
        report(False, "ember CLI", "%s is missing or not executable: run `make` first" % EMBER)
    elif not have_model:
        report(False, "ember CLI", "no model to run")
    else:
        checks = [check_tokenize, check_prompt_tokens, check_perplexity, check_greedy]
        for c in checks:
            try:
                c(ref)
            except subprocess.TimeoutExpired as e:
                report(False, c.__name__, "timed out after %ds: %s" % (TIMEOUT, e.cmd))
            except Exception as e:
                report(False, c.__name__, "%s: %s" % (type(e).__name__, e))
    return testlib.summary()


if __name__ == "__main__":
    sys.exit(main())
