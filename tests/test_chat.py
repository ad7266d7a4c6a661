"""test_chat.py - ember's chat templates against Jinja itself.

For each published template in tests/data/chat_templates (templates.json says
which model and where it comes from), Debian's python3-jinja2 renders the
real template with the environment and globals Hugging Face's
apply_chat_template uses (trim_blocks, lstrip_blocks, loopcontrols,
raise_exception, strftime_now, tojson, bos_token, eos_token, tools=None,
add_generation_prompt, enable_thinking), and ember renders the same
conversation through the public ember_chat_apply (tests/tool_chat.c).  The
two must agree byte for byte, or both refuse (the template raises where
ember returns an error).  Conversations: one to five turns, with and without
a system message, with and without the generation prompt, thinking on and
off, whitespace and non-ASCII at the edges of contents, reasoning blocks,
tool results, roles out of order.  Templates ember does not render must be
refused, never rendered in some other format."""
import datetime
import json
import os
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from testlib import BUILD, ROOT, SHARED, check, missing_shared, summary  # noqa: E402

import jinja2  # noqa: E402
from jinja2.sandbox import ImmutableSandboxedEnvironment  # noqa: E402

DATA = os.path.join(ROOT, "tests", "data", "chat_templates")
TOOL = os.path.join(ROOT, BUILD, "tests", "tool_chat")
TODAY = datetime.datetime(2025, 3, 7, 14, 30)   # what strftime_now sees; ember gets "2025-03-07"


def jinja_env():
    """The environment transformers' apply_chat_template compiles templates in."""
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: TODAY.strftime(fmt)
    return env


def M(role, content):
    return {"role": role, "content": content}


SYS = M("system", "You are a terse assistant.")
U1, A1, U2, A2, U3 = (M("user", "Hello, who are you?"), M("assistant", "I am a model."),
                      M("user", "What is 2+2?"), M("assistant", "4"), M("user", "Thanks! And 3+3?"))
CONVERSATIONS = [
    [U1],
    [SYS, U1],
    [U1, A1, U2],
    [SYS, U1, A1, U2],
    [SYS, U1, A1, U2, A2],
    [U1, A1, U2, A2, U3],
    [SYS, U1, A1, U2, A2, U3],
    # whitespace the templates trim (Python's str.strip: Unicode spaces too) or keep
    [M("system", "  \tSpaced system\n\n"), M("user", "\n  padded user \u00a0"), M("assistant", " \u3000padded reply\u2003\n"),
     M("user", "caf\u00e9 \u2014 \u65e5\u672c\u8a9e \U0001F600")],
    [M("system", ""), M("user", ""), M("assistant", ""), M("user", "x")],
    [M("user", "line one\nline two\r\n"), M("assistant", "\n\nleading newlines"), M("user", "<|im_start|> and [INST] as text")],
    # reasoning in replies (Qwen3 keeps it only after the last query)
    [U1, M("assistant", "<think>\nI should greet.\n</think>\n\nHi there."), U2],
    [U1, M("assistant", "<think>\nplan\n</think>\n\nHi."), U2, M("assistant", "<think>\n\n</think>\n\n4")],
    [SYS, U1, M("assistant", "no think tags but </think> in the middle</think>end"), U2,
     M("assistant", "<think>a</think>b<think>c</think>\nd")],
    [U1, M("assistant", "\n<think>\n\n\nr\n\n</think>\n\n\nanswer")],
    # tool results and unusual roles
    [U1, M("assistant", "calling"), M("tool", "42"), M("tool", "43"), U2],
    [U1, M("user", "<tool_response>\nr\n</tool_response>")],
    [U1, A1, M("tool", 'say "hi" \\ back\n\t\x01\x1f caf\u00e9 \u2028 \x7f'), M("ipython", "{}")],
    # roles out of order: templates that insist on alternation refuse
    [U1, U2],
    [SYS, A1, U1],
    [U1, SYS, U2],
    [M("narrator", "once upon a time"), U1],
]


def pack(cases):
    out = bytearray()
    for msgs, agp, think in cases:
        out += struct.pack("<II", (1 if agp else 0) | (2 if think else 0), len(msgs))
        for m in msgs:
            for s in (m["role"], m["content"]):
                b = s.encode("utf-8")
                out += struct.pack("<I", len(b)) + b
    return bytes(out)


def run_tool(template_path, bos, eos, cases):
    with tempfile.TemporaryDirectory() as d:
        inp, outp = os.path.join(d, "in"), os.path.join(d, "out")
        with open(inp, "wb") as f:
            f.write(pack(cases))
        subprocess.run([TOOL, template_path, bos, eos, TODAY.strftime("%Y-%m-%d"), inp, outp], check=True)
        data = open(outp, "rb").read()
    res, pos = [], 0
    while pos < len(data):
        status, n = struct.unpack_from("<iI", data, pos)
        pos += 8
        res.append((status, data[pos:pos + n]))
        pos += n
    return res


def jinja_render(template, bos, eos, msgs, agp, think):
    try:
        return jinja_env().from_string(template).render(
            messages=msgs, bos_token=bos, eos_token=eos, add_generation_prompt=agp, enable_thinking=think,
            tools=None, documents=None).encode("utf-8")
    except jinja2.exceptions.TemplateError as e:
        return e


def test_template(entry):
    path = os.path.join(DATA, entry["file"])
    template = open(path, encoding="utf-8").read()
    name = entry["file"]
    detected = subprocess.run([TOOL, "--detect", path], capture_output=True, text=True).stdout.strip()
    check(detected == (entry["format"] or "(none)"), "%s: recognised as %s, expected %s" % (name, detected, entry["format"]))
    cases = [(msgs, agp, think) for msgs in CONVERSATIONS for agp in (True, False) for think in (True, False)]
    got = run_tool(path, entry["bos"], entry["eos"], cases)
    check(len(got) == len(cases), "%s: %d results for %d cases" % (name, len(got), len(cases)))
    rendered = refused = 0
    for (msgs, agp, think), (status, text) in zip(cases, got):
        what = "%s: %s, generation prompt %s, thinking %s" % (name, [m["role"] for m in msgs], agp, think)
        if entry["format"] is None:
            ok = status == -8 and b"not one ember can render" in text
            check(ok, "%s: refused as unsupported (got status %d: %r)" % (what, status, text[:120]))
            continue
        want = jinja_render(template, entry["bos"], entry["eos"], msgs, agp, think)
        if isinstance(want, Exception):
            refused += 1
            check(status < 0, "%s: Jinja raises (%s) but ember rendered %r" % (what, want, text[:200]))
        else:
            rendered += 1
            if not check(status == 0 and text == want, "%s: ember differs from Jinja" % what):
                print("   jinja: %r\n   ember: %r" % (want, text if status == 0 else "error %d: %s" % (status, text)))
    if entry["format"]:
        # the format's name renders exactly what the template text does
        with tempfile.TemporaryDirectory() as d:
            named = os.path.join(d, "name")
            with open(named, "w") as f:
                f.write(entry["format"])
            by_name = run_tool(named, entry["bos"], entry["eos"], cases)
        check(by_name == got, "%s: rendering by the name '%s' equals rendering by the template" % (name, entry["format"]))
    if entry["format"]:
        print("ok    %-24s %-18s %3d conversations rendered equal to Jinja, %d refused by both"
              % (name, entry["format"], rendered, refused))
    else:
        print("ok    %-24s %-18s not rendered: ember refuses the template" % (name, "(refused)"))
    return template


def main():
    if not os.path.exists(TOOL):
        check(False, "%s is missing (run make tests)" % TOOL)
        return summary()
    entries = json.load(open(os.path.join(DATA, "templates.json")))
    texts = {e["file"]: test_template(e) for e in entries}
    # the templates of ../shared's tokenizers are the committed ones
    for fam in ("qwen3", "gemma3"):
        cfg = os.path.join(SHARED, "tokenizers", fam, "tokenizer_config.json")
        if not os.path.exists(cfg):
            missing_shared(cfg)
            continue
        shared = json.load(open(cfg, encoding="utf-8"))["chat_template"]
        check(shared == texts[fam + ".jinja"], "%s: ../shared's tokenizer_config.json template equals the committed one" % fam)
    # names and errors
    with tempfile.TemporaryDirectory() as d:
        bad = os.path.join(d, "bad")
        with open(bad, "w") as f:
            f.write("no-such-format")
        r = run_tool(bad, "", "", [([U1], True, True)])
        check(r[0][0] == -8 and b"unknown chat template name 'no-such-format'" in r[0][1],
              "an unknown name is refused with its name: %r" % (r,))
        with open(bad, "w") as f:
            f.write("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}")
        r = run_tool(bad, "", "", [([U1], True, True)])
        check(r[0][0] == -8 and b"not one ember can render" in r[0][1], "an unknown template is refused: %r" % (r,))
    return summary()


if __name__ == "__main__":
    sys.exit(main())
