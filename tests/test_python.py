"""test_python.py - the ctypes binding (bindings/python/ember.py) against the CLI.

The CLI and the binding are two independent callers of the library: the
binding's tokens, greedy text, sampled text, perplexity and chat rendering
must equal what `ember` prints for the same model and settings, its errors
must carry ember's status and message, and its logits must agree with its
own greedy choices."""
import os
import re
import subprocess
import sys

import testlib
from testlib import ROOT, EMBER, check

sys.path.insert(0, os.path.join(ROOT, "bindings", "python"))
os.environ.setdefault("EMBER_LIB", os.path.join(ROOT, testlib.BUILD, "libember.so"))
import ember  # noqa: E402

MODEL = os.path.join(ROOT, "models", "ember-demo.gguf")
PROMPT = "Once upon a time"


def cli(*args):
    r = subprocess.run([EMBER] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


def main():
    model = ember.Model(MODEL)
    hdr = open(os.path.join(ROOT, "include", "ember.h")).read()
    want = ".".join(re.search(r"#define EMBER_VERSION_%s (\d+)" % p, hdr).group(1) for p in ("MAJOR", "MINOR", "PATCH"))
    check(ember.version() == want, "version() %r is ember.h's %r" % (ember.version(), want))
    info = model.info
    check(info["architecture"] == "llama" and info["n_vocab"] == model.n_vocab == 4096, "info: %r" % info)
    check(model.meta("general.architecture") == "llama", "meta(general.architecture)")
    check(info["kernels"] == ember.cpu_features(), "info: the best kernel set by default (%s)" % info["kernels"])
    check(ember.Model(MODEL, kernels="scalar").info["kernels"] == "scalar", "Model(kernels='scalar')")
    check(model.meta("no.such.key") is None, "meta of an absent key is None")

    # tokens: the CLI prints [ids]
    for text in ("hello world", "Once upon a time, there was a tiny dragon.", ""):
        rc, out, _ = cli("tokenize", "-m", MODEL, "-p", text)
        want = [int(x) for x in re.findall(r"\d+", out)]
        got = model.tokenize(text)
        check(rc == 0 and got == want, "tokenize(%r) = %r, CLI %r" % (text, got, want))
    ids = model.tokenize("The cat sat on the mat.", add_special=False)
    check(model.detokenize(ids) == "The cat sat on the mat.", "detokenize(tokenize(text)) is text")
    check(b"".join(model.token_to_piece(t, p) for p, t in zip([-1] + ids[:-1], ids)) == b"The cat sat on the mat.",
          "token_to_piece pieces join to the text")
    long_text = "word " * 3000
    check(len(model.tokenize(long_text)) > 1000, "tokenize grows its buffer for long text")

    # greedy text equals the CLI's (which prints the continuation on stdout)
    rc, out, _ = cli("-m", MODEL, "-p", PROMPT, "-n", "32", "--temp", "0")
    ctx = model.context(n_ctx=256)
    got = ctx.generate_text(PROMPT, n_predict=32, temperature=0)
    check(rc == 0 and out.rstrip("\n") == got.rstrip("\n"),
          "greedy text equals the CLI's:\n  py:  %r\n  cli: %r" % (got, out))
    check(ctx.stop_reason in ("length", "eog"), "stop_reason %r" % ctx.stop_reason)

    # sampled text with a seed equals the CLI's
    rc, out, _ = cli("-m", MODEL, "-p", PROMPT, "-n", "32", "--temp", "0.8", "--seed", "42")
    ctx.set_pos(0)
    sp = ember.Sampler(model, temperature=0.8, seed=42)
    got = ctx.generate_text(PROMPT, n_predict=32, sampler=sp)
    check(rc == 0 and out.rstrip("\n") == got.rstrip("\n"),
          "sampled text (seed 42) equals the CLI's:\n  py:  %r\n  cli: %r" % (got, out))

    # logits: list and numpy agree, and their argmax is the greedy choice
    ctx.set_pos(0)
    ctx.eval(model.tokenize(PROMPT))
    lst = ctx.logits(numpy=False)
    check(len(lst) == model.n_vocab, "logits list has n_vocab floats")
    try:
        import numpy as np
        arr = ctx.logits()
        check(isinstance(arr, np.ndarray) and arr.shape == (model.n_vocab,) and list(arr) == lst,
              "numpy logits equal the list")
    except ImportError:
        testlib.skipped.append("numpy logits (python3-numpy not installed)")
        print("SKIP: numpy logits (python3-numpy not installed)")
    greedy = ember.Sampler(model, temperature=0)
    check(greedy.sample(ctx.logits_ptr()) == max(range(len(lst)), key=lambda i: lst[i]),
          "the greedy sampler picks the logits' argmax")

    # perplexity equals the CLI's
    text = open(os.path.join(ROOT, "models", "heldout.txt"), encoding="utf-8").read()[:6000]
    path = os.path.join(ROOT, testlib.BUILD, "test_python_ppl.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    rc, out, err = cli("perplexity", "-m", MODEL, "-f", path, "-c", "64")
    m = re.search(r"PPL = ([0-9.]+)", out + err)
    pctx = model.context(n_ctx=64)
    r = pctx.perplexity(text)
    check(rc == 0 and m and abs(r["ppl"] - float(m.group(1))) <= 1e-4 * float(m.group(1)),
          "perplexity %.4f equals the CLI's %s" % (r["ppl"], m.group(1) if m else out + err))

    # state: save, generate, restore, generate again: the same text
    ctx.set_pos(0)
    ctx.eval(model.tokenize(PROMPT))
    sp = ember.Sampler(model, temperature=0.9, seed=7)
    saved = ctx.save_state(sp)
    a = ctx.generate_text(None, n_predict=16, sampler=sp)
    ctx.load_state(saved, sp)
    b = ctx.generate_text(None, n_predict=16, sampler=sp)
    check(a == b and len(saved) > 0, "state restore replays the same text (%r / %r)" % (a, b))

    # constrained output
    g = ember.Grammar.one_of(["attack", "flee", "talk"])
    check(g.accepts("flee") and not g.accepts("fle"), "grammar accepts")
    ctx.set_pos(0)
    ctx.eval(model.tokenize("The knight decided to"))
    out = ctx.generate_text(None, n_predict=16, sampler=ember.Sampler(model, temperature=0.8, seed=3, grammar=g))
    check(out in ("attack", "flee", "talk"), "a grammar-constrained answer is one of the strings: %r" % out)
    js = ember.Grammar.from_json_schema({"type": "object", "properties": {"n": {"type": "integer"}},
                                         "required": ["n"]})
    check(js.accepts('{"n": 12}') and not js.accepts('{"m": 1}'), "JSON-schema grammar")

    # chat rendering equals the CLI's `template`
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
    got = model.apply_chat_template(msgs, template="chatml")
    check(got == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
          "chatml rendering: %r" % got)

    # errors carry the status and ember's message
    try:
        ember.Model(os.path.join(ROOT, "no-such-model.gguf"))
        check(False, "opening a missing file raises")
    except ember.Error as e:
        check(e.status == -3 and "no-such-model.gguf" in e.message, "missing file: %s" % e)
    try:
        ctx.eval([model.n_vocab + 5])
        check(False, "evaluating a token outside the vocabulary raises")
    except ember.Error as e:
        check(e.status == -12 and e.message, "bad token: %s" % e)
    try:
        ember.Grammar('root ::= "a" | ')
        ember.Grammar("root ::= undefined-rule")
        check(False, "a bad grammar raises")
    except ember.Error as e:
        check("line" in e.message and "column" in e.message, "bad grammar names line and column: %s" % e)
    try:
        model.context(n_ctx=-5)
        check(False, "a negative n_ctx raises")
    except ember.Error as e:
        check(e.status == -1 and e.message, "bad context params: %s" % e)
    return testlib.summary()


if __name__ == "__main__":
    sys.exit(main())
