"""test_grammar_cli.py - constrained generation through the CLI
(--grammar, --grammar-file, --json-schema) with models/ember-demo.gguf,
checked by independent references: Python's json module plus a small JSON
Schema validator written here for the subset, Python's re for grammars with
a regular equivalent, and exact membership for "one of these strings".
Runs that end at the length limit are only checked to be unfinished
prefixes; every run that ends by itself must be complete and valid."""
import json
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from testlib import ROOT, EMBER, check, summary  # noqa: E402

MODEL = os.path.join(ROOT, "models", "ember-demo.gguf")
TMP = tempfile.mkdtemp(prefix="ember-grammar-")


def run(*args):
    p = subprocess.run([EMBER, "-m", MODEL] + list(args), capture_output=True, timeout=300)
    err = p.stderr.decode("utf-8", "replace")
    m = re.search(r"stop: (.*)", err)
    return p.returncode, p.stdout.decode("utf-8"), m.group(1).strip() if m else None, err


def validate(schema, v, path="$"):
    """The subset ember converts: type, properties/required (no others),
    items/minItems/maxItems, minLength/maxLength, enum, const, anyOf."""
    if schema is True or schema == {}:
        return None
    if "const" in schema:
        return None if v == schema["const"] else "%s: not the const" % path
    if "enum" in schema:
        return None if any(v == e and type(v) is type(e) for e in schema["enum"]) else "%s: %r not in enum" % (path, v)
    if "anyOf" in schema:
        return None if any(validate(s, v, path) is None for s in schema["anyOf"]) else "%s: no anyOf matches" % path
    t = schema.get("type", "object" if "properties" in schema else None)
    if t == "object":
        if not isinstance(v, dict):
            return "%s: not an object" % path
        props = schema.get("properties", {})
        for k in schema.get("required", []):
            if k not in v:
                return "%s: %s missing" % (path, k)
        for k, x in v.items():
            if k not in props:
                return "%s: extra property %s" % (path, k)
            e = validate(props[k], x, path + "." + k)
            if e:
                return e
    elif t == "array":
        if not isinstance(v, list):
            return "%s: not an array" % path
        if len(v) < schema.get("minItems", 0) or len(v) > schema.get("maxItems", 1 << 30):
            return "%s: %d items" % (path, len(v))
        for i, x in enumerate(v):
            e = validate(schema.get("items", {}), x, "%s[%d]" % (path, i))
            if e:
                return e
    elif t == "string":
        if not isinstance(v, str):
            return "%s: not a string" % path
        if len(v) < schema.get("minLength", 0) or len(v) > schema.get("maxLength", 1 << 30):
            return "%s: length %d" % (path, len(v))
    elif t == "integer":
        if not isinstance(v, int) or isinstance(v, bool):
            return "%s: not an integer" % path
    elif t == "number":
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            return "%s: not a number" % path
    elif t == "boolean":
        if not isinstance(v, bool):
            return "%s: not a boolean" % path
    elif t == "null":
        if v is not None:
            return "%s: not null" % path
    return None


def test_json_schema():
    schemas = [
        {"type": "object",
         "properties": {"name": {"type": "string", "maxLength": 10},
                        "age": {"type": "integer"},
                        "mood": {"enum": ["calm", "angry", "afraid"]},
                        "tags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 3},
                        "pos": {"type": "object", "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
                                "required": ["x", "y"]}},
         "required": ["name", "mood"]},
        {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 4},
        {"anyOf": [{"type": "null"}, {"const": "x"}, {"type": "object", "properties": {"ok": {"type": "boolean"}}}]},
    ]
    done = 0
    for si, schema in enumerate(schemas):
        path = os.path.join(TMP, "schema%d.json" % si)
        with open(path, "w") as f:
            json.dump(schema, f)
        for seed in range(8):
            temp = "0" if seed == 0 else "0.9"
            rc, out, stop, err = run("-p", "Data:", "-n", "300", "--seed", str(seed), "--temp", temp,
                                     "--json-schema", path)
            if not check(rc == 0 and stop in ("end of text", "length limit", "context full"), "schema %d seed %d: rc %d %s" %
                         (si, seed, rc, err[-300:])):
                continue
            if stop != "end of text":
                continue
            done += 1
            try:
                v = json.loads(out)
            except ValueError as e:
                check(False, "schema %d seed %d: not JSON (%s): %r" % (si, seed, e, out[:300]))
                continue
            e = validate(schema, v)
            check(e is None, "schema %d seed %d: %s: %r" % (si, seed, e, out[:300]))
    check(done >= 6, "%d JSON runs ended by themselves (want >= 6 of 24)" % done)
    print("json schema: %d of 24 runs complete and valid" % done)


def test_strings_and_regular():
    words = {"attack", "flee", "talk"}
    for seed in range(6):
        rc, out, stop, err = run("-p", "The knight chose to", "-n", "20", "--seed", str(seed),
                                 "--grammar", 'root ::= "attack" | "flee" | "talk"')
        check(rc == 0 and out in words and stop == "end of text", "words seed %d: %r %s" % (seed, out, stop))
    # grammars with a regular-expression twin
    cases = [
        ('root ::= [a-z]{2,5} ("-" [0-9]{1,3})?', r"[a-z]{2,5}(-[0-9]{1,3})?"),
        ('root ::= ("ab" | [^a-z\\n]) [xyz]* "." ', r"(ab|[^a-z\n])[xyz]*\."),
        ('# a comment\nroot ::= w (" " w){0,3}\nw ::= [A-Z] [a-z]+\n', r"[A-Z][a-z]+( [A-Z][a-z]+){0,3}"),
        ('root ::= "\\u00e9t\\u00e9" | "caf" [\\u00e0-\\u00ff]', "\u00e9t\u00e9|caf[\u00e0-\u00ff]"),
    ]
    ended = 0
    for gi, (g, rx) in enumerate(cases):
        gfile = os.path.join(TMP, "g%d.gbnf" % gi)
        with open(gfile, "w") as f:
            f.write(g)
        for seed in range(5):
            args = ["--grammar-file", gfile] if seed % 2 else ["--grammar", g]
            rc, out, stop, err = run("-p", "Once upon a time", "-n", "60", "--seed", str(seed), *args)
            if not check(rc == 0, "grammar %d seed %d: %s" % (gi, seed, err[-300:])):
                continue
            if stop == "end of text":
                ended += 1
                check(re.fullmatch(rx, out, re.S) is not None, "grammar %d seed %d: %r does not match %s" % (gi, seed, out, rx))
    check(ended >= 10, "%d of 20 regular runs ended by themselves" % ended)


def test_errors():
    rc, out, stop, err = run("-p", "x", "--grammar", 'root ::= "a"\nx ::= [b-')
    check(rc != 0 and "line 2, column 7" in err and "unterminated" in err, "syntax error: %r" % err)
    rc, out, stop, err = run("-p", "x", "--grammar", "root ::= root \"a\" | \"b\"")
    check(rc != 0 and "left recursion" in err, "left recursion: %r" % err)
    bad = os.path.join(TMP, "bad.json")
    with open(bad, "w") as f:
        f.write('{"type": "object", "properties": {"a": {"type": "date"}}}')
    rc, out, stop, err = run("-p", "x", "--json-schema", bad)
    check(rc != 0 and "unsupported type" in err, "bad schema: %r" % err)
    rc, out, stop, err = run("-p", "x", "--grammar", 'root ::= "a"', "--json-schema", bad)
    check(rc != 0 and "only one of" in err, "two grammars: %r" % err)
    rc, out, stop, err = run("-p", "x", "--grammar-file", os.path.join(TMP, "nonexistent.gbnf"))
    check(rc != 0 and "cannot read" in err, "missing file: %r" % err)


if __name__ == "__main__":
    if not os.path.exists(EMBER):
        check(False, "%s not built" % EMBER)
    else:
        test_strings_and_regular()
        test_json_schema()
        test_errors()
    sys.exit(summary())
