#!/usr/bin/env python3
"""ember benchmark driver (`make bench`).  Not part of the test suite.

Makes random-weight GGUF models of well-known shapes (cached under build/bench/),
runs `build/ember bench --json` on each at 1 and 2 threads, optionally runs
llama.cpp's llama-bench on the very same files, and writes

    build/bench/results.json   every measurement, with load average and commit
    build/bench/results.md     the table (also printed at the end)
    build/bench/results.svg    a bar chart of generation speed (hand-written SVG)

Usage:
    /usr/bin/python3 tools/bench.py [--quick] [--models a,b] [--types f16,q8_0,q4_0|all]
                                    [--threads 1,2] [--repeats 3] [--llama-cpp DIR]
                                    [--load default|mmap|read] [--kernels NAME]

Models (random weights; speed does not depend on the values):
    stories260k  dim 64,   hidden 172,  5 layers,  8 heads, 4 kv, vocab 512   (thread check)
    stories15m   dim 288,  hidden 768,  6 layers,  6 heads, 6 kv, vocab 32000
    stories110m  dim 768,  hidden 2048, 12 layers, 12 heads, 12 kv, vocab 32000
    tinyllama    dim 2048, hidden 5632, 22 layers, 32 heads, 4 kv, vocab 32000 (1.1B)
--quick runs stories260k and stories15m only (about a minute).

Quantized types other than q8_0/q4_0 are made by the converter through `ember quantize`
(the same bytes as llama-quantize's).  Each row also gives the peak resident memory of
the run: ember's as `ember bench` takes it (before its probe buffer), llama-bench's as the
kernel reports it for the process (wait4's ru_maxrss).  The memory read bandwidth is
`ember bench`'s probe and, where likwid-bench is installed (Debian package likwid), an
independent one: likwid-bench's load kernel over 1 GB at the same thread count.
"""
import argparse
import html
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODELS = {
    # name: (random spec, prompt tokens, generated tokens, label)
    "stories260k": ("dim=64,hidden=172,layers=5,heads=8,kv_heads=4,vocab=512,ctx=512", 128, 64, "stories260K"),
    "stories15m": ("dim=288,hidden=768,layers=6,heads=6,kv_heads=6,vocab=32000,ctx=256", 128, 64, "stories15M"),
    "stories110m": ("dim=768,hidden=2048,layers=12,heads=12,kv_heads=12,vocab=32000,ctx=1024", 128, 64, "stories110M"),
    "tinyllama": ("dim=2048,hidden=5632,layers=22,heads=32,kv_heads=4,vocab=32000,ctx=2048", 128, 64, "TinyLlama 1.1B"),
}
ORDER = ["stories260k", "stories15m", "stories110m", "tinyllama"]
QUICK = ["stories260k", "stories15m"]
TYPES = ["f16", "q8_0", "q4_0"]
# --types all: every type issue #16 names
ALL_TYPES = ["f16", "bf16", "q8_0", "q4_0", "q4_k_m", "q5_k_m", "q6_k", "iq4_xs"]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def git_commit():
    try:
        rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no", "--", "src",
                                "include", "examples"], capture_output=True, text=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def binary_id(path):
    """sha1 prefix and build time of the ember binary measured."""
    import hashlib
    try:
        with open(path, "rb") as f:
            h = hashlib.sha1(f.read()).hexdigest()[:12]
        return "%s (built %s)" % (h, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(os.path.getmtime(path))))
    except OSError:
        return "?"


def run_membw(outdir, files):
    """Build and run tools/mem_bandwidth.c (anonymous huge/4k pages, file mmap vs read)."""
    exe = os.path.join(outdir, "mem_bandwidth")
    src = os.path.join(ROOT, "tools", "mem_bandwidth.c")
    cc = os.environ.get("CC", "cc")
    r = subprocess.run([cc, "-O2", "-march=native", "-pthread", "-o", exe, src], capture_output=True, text=True)
    if r.returncode != 0:
        return "mem_bandwidth: build failed: %s" % r.stderr[-300:]
    out = []
    for f in files or [None]:
        r = subprocess.run([exe] + ([f] if f else []), capture_output=True, text=True, timeout=600)
        out.append(r.stdout.strip() if r.returncode == 0 else "mem_bandwidth failed: %s" % r.stderr[-300:])
        files = None
    return "\n".join(out)


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = "%.1f GiB" % (int(f.readline().split()[1]) / 1048576)
    except (OSError, ValueError, IndexError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": mem, "kernel": os.uname().release}


def model_path(outdir, name, typ):
    return os.path.join(outdir, "%s-%s.gguf" % (name, typ))


def ensure_model(outdir, name, typ, python):
    path = model_path(outdir, name, typ)
    if os.path.exists(path):
        return path
    spec = "random:%s,seed=1" % MODELS[name][0]
    log("making %s (%s) ..." % (path, typ))
    t0 = time.time()
    f16 = model_path(outdir, name, "f16")
    if typ not in ("f32", "f16", "bf16", "q8_0", "q4_0") and os.path.exists(f16):
        # the converter would make an F32 file and quantize it; from the F16 one it is
        # what llama-quantize users do, and faster
        cmd = [os.path.join(ROOT, "build", "ember"), "quantize", f16, path, typ]
    else:
        cmd = [python, os.path.join(ROOT, "tools", "convert_weights.py"), spec, "-o", path, "--type", typ,
               "--name", "%s-random" % name, "-q"]
    r = subprocess.run(["nice", "-n", "10"] + cmd, capture_output=True, text=True)
    if r.returncode != 0 or not os.path.exists(path):
        raise RuntimeError("converter failed for %s:\n%s%s" % (path, r.stdout[-2000:], r.stderr[-2000:]))
    log("  done in %.0f s" % (time.time() - t0))
    return path


def last_json_line(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{") or line.startswith("["):
            return json.loads(line)
    raise ValueError("no JSON line in output")


def run_ember(ember, path, threads, pp, tg, repeats, load, timeout, kernels=None):
    cmd = [ember, "bench", "-m", path, "-t", str(threads), "-p", str(pp), "-n", str(tg), "-r", str(repeats), "--json"]
    if kernels:
        cmd += ["--kernels", kernels]
    if load == "mmap":
        cmd.append("--mmap")
    elif load == "read":
        cmd.append("--no-mmap")
    la = loadavg()
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    wall = time.time() - t0
    if r.returncode != 0:
        return {"error": (r.stderr or r.stdout).strip()[-500:], "cmd": " ".join(cmd), "load": la}
    try:
        j = last_json_line(r.stdout)
    except ValueError as e:
        return {"error": "%s: %s" % (e, r.stdout[-300:]), "cmd": " ".join(cmd), "load": la}
    j.update(cmd=" ".join(cmd), load=la, wall_s=round(wall, 1))
    return j


NOAMX_C = r"""
/* LD_PRELOAD shim for llama.cpp builds made with -march=native on a machine whose
 * CPU advertises AMX but where AMX instructions fault (SIGILL in tilezero, seen in
 * KVM guests): refuse the AMX permission request, so ggml falls back to its
 * AVX-512 kernels (and its repacking buffer type) instead of the AMX buffer type. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <sys/syscall.h>
long syscall(long n, ...) {
    va_list ap;
    va_start(ap, n);
    long a[6];
    for (int i = 0; i < 6; i++) a[i] = va_arg(ap, long);
    va_end(ap);
    if (n == SYS_arch_prctl && a[0] == 0x1023 /* ARCH_REQ_XCOMP_PERM */) { errno = EPERM; return -1; }
    static long (*real)(long, ...);
    if (!real) real = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
    return real(n, a[0], a[1], a[2], a[3], a[4], a[5]);
}
"""


def run_measured(cmd, timeout, env=None):
    """subprocess.run(cmd) that also returns the child's peak resident memory in
    bytes (wait4's ru_maxrss; None where the OS does not give it)."""
    import tempfile
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        maxrss = None
        try:
            if hasattr(os, "wait4"):
                deadline = time.time() + timeout
                while True:
                    pid, status, ru = os.wait4(p.pid, os.WNOHANG)
                    if pid:
                        p.returncode = os.waitstatus_to_exitcode(status)
                        maxrss = ru.ru_maxrss * 1024   # KiB on Linux
                        break
                    if time.time() > deadline:
                        p.kill()
                        p.wait()
                        raise subprocess.TimeoutExpired(cmd, timeout)
                    time.sleep(0.05)
            else:
                p.wait(timeout=timeout)
        except BaseException:
            if p.poll() is None:
                p.kill()
            raise
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(cmd, p.returncode, out.read(), err.read()), maxrss


def likwid_probe(threads, repeats=3):
    """GB/s of likwid-bench's streaming load kernel (the widest this CPU has) over
    1 GB with `threads` threads, median of `repeats`; None without likwid-bench."""
    import shutil
    exe = shutil.which("likwid-bench")
    if not exe:
        return None
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((l for l in f if l.startswith("flags")), "")
    except OSError:
        pass
    kernel = "load_avx512" if " avx512f" in flags else "load_avx" if " avx" in flags else "load"
    vals = []
    for _ in range(repeats):
        r = subprocess.run([exe, "-t", kernel, "-w", "N:1GB:%d" % threads], capture_output=True, text=True)
        for line in r.stdout.splitlines():
            if line.startswith("MByte/s:"):
                vals.append(float(line.split()[1]) / 1000)
    if not vals:
        return None
    return {"kernel": kernel, "gbps": statistics.median(vals), "samples": vals}


class Llama:
    """llama-bench runner: picks the no-mmap flag its version knows and, if it dies
    of SIGILL (AMX advertised but unusable), retries under the no-AMX shim."""

    def __init__(self, llama_dir, outdir):
        self.exe = os.path.join(llama_dir, "llama-bench")
        self.outdir = outdir
        self.env = None
        self.note = ""
        helptext = subprocess.run([self.exe, "--help"], capture_output=True, text=True).stdout
        self.nommap = ["--load-mode", "none"] if "--load-mode" in helptext else ["--mmap", "0"]

    def shim(self):
        src = os.path.join(self.outdir, "noamx.c")
        so = os.path.join(self.outdir, "noamx.so")
        with open(src, "w") as f:
            f.write(NOAMX_C)
        cc = os.environ.get("CC", "cc")
        subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", so, src, "-ldl"], check=True)
        env = dict(os.environ)
        env["LD_PRELOAD"] = so
        return env

    def run(self, path, threads, pp, tg, repeats, timeout):
        cmd = [self.exe, "-m", path, "-t", str(threads), "-p", str(pp), "-n", str(tg), "-r", str(repeats),
               "-o", "json"] + self.nommap
        la = loadavg()
        t0 = time.time()
        r, maxrss = run_measured(cmd, timeout, self.env)
        if r.returncode in (-4, 132) and self.env is None:   # SIGILL
            log("llama-bench died of SIGILL (AMX?); retrying with AMX disabled (LD_PRELOAD noamx.so)")
            self.env = self.shim()
            self.note = "AMX disabled (it faults here): ggml's AVX-512 kernels with weight repacking"
            t0 = time.time()
            r, maxrss = run_measured(cmd, timeout, self.env)
        wall = time.time() - t0
        shown = ("LD_PRELOAD=noamx.so " if self.env else "") + " ".join(cmd)
        if r.returncode != 0:
            return {"error": "exit %d: %s" % (r.returncode, (r.stderr or r.stdout).strip()[-500:]), "cmd": shown,
                    "load": la}
        try:
            rows = json.loads(r.stdout[r.stdout.index("["):])
        except ValueError as e:
            return {"error": "cannot parse llama-bench output: %s" % e, "cmd": shown, "load": la}
        out = {"cmd": shown, "load": la, "wall_s": round(wall, 1)}
        if maxrss:
            out["peak_rss_bytes"] = maxrss
        for row in rows:
            samples = row.get("samples_ts") or [row.get("avg_ts", 0.0)]
            med = statistics.median(samples)
            if row.get("n_gen", 0) == 0 and row.get("n_prompt", 0) > 0:
                out["pp_tok_s"] = med
            elif row.get("n_gen", 0) > 0 and row.get("n_prompt", 0) == 0:
                out["tg_tok_s"] = med
            out.setdefault("build_commit", row.get("build_commit"))
            out.setdefault("cpu_info", row.get("cpu_info"))
        return out


def fmt(x, nd=1):
    if x is None:
        return "-"
    if x >= 1000:
        return "%.0f" % x
    return ("%%.%df" % nd) % x


def ratio(a, b):
    if a is None or b is None or not b:
        return None
    return a / b


def table(results, with_llama):
    head = ["model", "type", "threads", "pp tok/s", "tg tok/s", "MB/token", "tg GB/s", "% of mem BW", "peak RSS MiB"]
    if with_llama:
        head += ["llama.cpp pp", "llama.cpp tg", "pp ratio", "tg ratio", "llama.cpp % BW", "llama.cpp RSS MiB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * (len(head) - 3)) + "|"]
    for r in results:
        e = r.get("ember", {})
        row = [MODELS[r["model"]][3], r["type"].upper(), str(r["threads"])]
        if "error" in e:
            row += ["error"] + ["-"] * 5
        else:
            mb = e["weight_bytes"] / 1e6
            row += [fmt(e["pp_tok_s"]), fmt(e["tg_tok_s"]), "%.1f" % mb, "%.1f" % e["tg_gbps"],
                    "%.0f%%" % (100 * e["tg_gbps"] / e["mem_gbps"]) if e.get("mem_gbps") else "-",
                    "%.0f" % (e["peak_rss_bytes"] / 1048576) if e.get("peak_rss_bytes") else "-"]
        if with_llama:
            l = r.get("llama", {})
            if "error" in l or not l:
                row += ["error"] + ["-"] * 5
            else:
                pr = ratio(e.get("pp_tok_s"), l.get("pp_tok_s"))
                tr = ratio(e.get("tg_tok_s"), l.get("tg_tok_s"))
                lbw = None
                if e.get("mem_gbps") and l.get("tg_tok_s") and e.get("weight_bytes"):
                    lbw = 100 * l["tg_tok_s"] * e["weight_bytes"] / 1e9 / e["mem_gbps"]
                row += [fmt(l.get("pp_tok_s")), fmt(l.get("tg_tok_s")),
                        "%.2f" % pr if pr else "-", "%.2f" % tr if tr else "-",
                        "%.0f%%" % lbw if lbw is not None else "-",
                        "%.0f" % (l["peak_rss_bytes"] / 1048576) if l.get("peak_rss_bytes") else "-"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def svg_chart(results, with_llama, title):
    """Horizontal bars of tg tok/s (log scale), ember and llama.cpp per row."""
    rows = [r for r in results if "error" not in r.get("ember", {})]
    vals = []
    for r in rows:
        vals.append(r["ember"]["tg_tok_s"])
        if with_llama and r.get("llama", {}).get("tg_tok_s"):
            vals.append(r["llama"]["tg_tok_s"])
    if not vals:
        return '<svg xmlns="http://www.w3.org/2000/svg" width="400" height="40"><text x="10" y="25">no data</text></svg>\n'
    import math
    lo = 10 ** math.floor(math.log10(max(min(vals), 1e-3)))
    hi = 10 ** math.ceil(math.log10(max(vals)))
    left, width, bar, gap = 230, 560, 11, 8
    per = bar * (2 if with_llama else 1) + gap
    top = 50
    height = top + per * len(rows) + 50
    W = left + width + 90

    def x(v):
        v = max(v, lo)
        return left + width * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

    o = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">'
         % (W, height),
         '<rect width="100%" height="100%" fill="white"/>',
         '<text x="%d" y="20" font-size="14" font-weight="bold">%s</text>' % (left, html.escape(title))]
    d = lo
    while d <= hi * 1.0001:
        xx = x(d)
        o.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>' % (xx, top - 5, xx, height - 40))
        o.append('<text x="%.1f" y="%d" text-anchor="middle" fill="#555">%g</text>' % (xx, height - 25, d))
        d *= 10
    o.append('<text x="%d" y="%d" text-anchor="middle" fill="#333">generation, tokens/s (log scale)</text>'
             % (left + width // 2, height - 8))
    for i, r in enumerate(rows):
        y = top + i * per
        label = "%s %s, %dt" % (MODELS[r["model"]][3], r["type"].upper(), r["threads"])
        o.append('<text x="%d" y="%d" text-anchor="end">%s</text>' % (left - 6, y + bar * (2 if with_llama else 1) // 2 + 4,
                                                                      html.escape(label)))
        v = r["ember"]["tg_tok_s"]
        o.append('<rect x="%d" y="%d" width="%.1f" height="%d" fill="#d9531e"/>' % (left, y, x(v) - left, bar))
        o.append('<text x="%.1f" y="%d">%s</text>' % (x(v) + 3, y + bar - 2, fmt(v)))
        if with_llama and r.get("llama", {}).get("tg_tok_s"):
            v2 = r["llama"]["tg_tok_s"]
            o.append('<rect x="%d" y="%d" width="%.1f" height="%d" fill="#5b7fa8"/>' % (left, y + bar, x(v2) - left, bar))
            o.append('<text x="%.1f" y="%d">%s (x%.2f)</text>' % (x(v2) + 3, y + 2 * bar - 2, fmt(v2), v / v2))
    o.append('<rect x="%d" y="30" width="10" height="10" fill="#d9531e"/><text x="%d" y="39">ember</text>'
             % (left + width - 150, left + width - 136))
    if with_llama:
        o.append('<rect x="%d" y="30" width="10" height="10" fill="#5b7fa8"/><text x="%d" y="39">llama.cpp (ratio ember/llama.cpp)</text>'
                 % (left + width - 90, left + width - 76))
    o.append("</svg>")
    return "\n".join(o) + "\n"


def main():
    ap = argparse.ArgumentParser(description="ember benchmarks (random-weight models; not a test)")
    ap.add_argument("--quick", action="store_true", help="small models only (%s)" % ", ".join(QUICK))
    ap.add_argument("--models", help="comma list of %s" % ", ".join(ORDER))
    ap.add_argument("--types", default=",".join(TYPES),
                    help="comma list, or all (%s); default %%(default)s" % ",".join(ALL_TYPES))
    ap.add_argument("--threads", default="1,2", help="comma list (default %(default)s)")
    ap.add_argument("-r", "--repeats", type=int, default=3, help="repetitions per run, median reported (default 3)")
    ap.add_argument("--tg", type=int, help="generated tokens (default 64)")
    ap.add_argument("--pp", type=int, help="prompt tokens (default 128)")
    ap.add_argument("--load", choices=["default", "mmap", "read"], default="default",
                    help="ember weight loading: its default, --mmap or --no-mmap")
    ap.add_argument("--kernels", help="ember kernel set (auto, scalar, avx2, avx512, amx, neon); default auto")
    ap.add_argument("--llama-cpp", metavar="DIR", help="directory holding llama-bench: also run it on the same files")
    ap.add_argument("--ember", default=os.path.join(ROOT, "build", "ember"), help="ember CLI (default build/ember)")
    ap.add_argument("--outdir", default=os.path.join(ROOT, "build", "bench"), help="models and results (default build/bench)")
    ap.add_argument("--python", default=sys.executable or "/usr/bin/python3", help="python for the converter")
    ap.add_argument("--membw", action="store_true",
                    help="also build and run tools/mem_bandwidth.c (huge pages vs 4k vs file mapping)")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per run before giving up")
    args = ap.parse_args()

    if args.models:
        models = [m.strip().lower() for m in args.models.split(",") if m.strip()]
    else:
        models = QUICK if args.quick else ORDER
    for m in models:
        if m not in MODELS:
            ap.error("unknown model %r (known: %s)" % (m, ", ".join(ORDER)))
    types = ALL_TYPES if args.types.strip().lower() == "all" else \
        [t.strip().lower() for t in args.types.split(",") if t.strip()]
    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    if not os.access(args.ember, os.X_OK):
        sys.exit("bench: %s not found; run `make` first" % args.ember)
    if args.llama_cpp and not os.access(os.path.join(args.llama_cpp, "llama-bench"), os.X_OK):
        sys.exit("bench: no llama-bench in %s" % args.llama_cpp)
    os.makedirs(args.outdir, exist_ok=True)

    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    meta = {"started": started, "commit": git_commit(), "machine": machine(), "load_start": loadavg(),
            "ember_load": args.load, "repeats": args.repeats, "ember_kernels": args.kernels or "auto",
            "ember_binary": binary_id(args.ember)}
    log("ember bench: commit %s, load average %s" % (meta["commit"], meta["load_start"]))

    llama = Llama(args.llama_cpp, args.outdir) if args.llama_cpp else None
    results = []
    t_start = time.time()
    for name in models:
        for typ in types:
            try:
                path = ensure_model(args.outdir, name, typ, args.python)
            except RuntimeError as e:
                log(str(e))
                continue
            _, pp, tg, _label = MODELS[name]
            pp = args.pp or pp
            tg = args.tg or tg
            for i, t in enumerate(threads):
                rec = {"model": name, "type": typ, "threads": t, "file": os.path.relpath(path, ROOT),
                       "n_prompt": pp, "n_gen": tg}
                # Alternate which program goes first, so a drifting background load
                # does not always favour the same one.
                order = ["ember", "llama"] if (len(results) % 2 == 0) else ["llama", "ember"]
                for who in order:
                    if who == "ember":
                        rec["ember"] = run_ember(args.ember, path, t, pp, tg, args.repeats, args.load, args.timeout,
                                                args.kernels)
                    elif llama:
                        rec["llama"] = llama.run(path, t, pp, tg, args.repeats, args.timeout)
                e = rec["ember"]
                msg = "%-12s %-5s %dt  " % (name, typ, t)
                if "error" in e:
                    msg += "ember error: %s" % e["error"]
                else:
                    msg += "ember pp %8.1f tg %8.1f tok/s (%.1f GB/s of %.1f)" % (
                        e["pp_tok_s"], e["tg_tok_s"], e["tg_gbps"], e["mem_gbps"])
                if "llama" in rec:
                    l = rec["llama"]
                    if "error" in l:
                        msg += "  llama.cpp error: %s" % l["error"][-200:]
                    else:
                        msg += "  llama.cpp pp %8.1f tg %8.1f" % (l.get("pp_tok_s", 0), l.get("tg_tok_s", 0))
                log(msg + "  [load %s]" % rec["ember"].get("load", "?"))
                results.append(rec)
    likwid = {}
    for t in threads:
        lp = likwid_probe(t)
        if lp:
            likwid[t] = lp
    meta["likwid_bench"] = likwid
    membw = None
    if args.membw:
        big = [model_path(args.outdir, n, "q4_0") for n in reversed(models)]
        big = [f for f in big if os.path.exists(f) and os.path.getsize(f) >= (256 << 20)][:1]
        log("measuring memory bandwidth (tools/mem_bandwidth.c) ...")
        membw = run_membw(args.outdir, big)
        meta["mem_bandwidth"] = membw
    meta["load_end"] = loadavg()
    meta["elapsed_s"] = round(time.time() - t_start)

    with_llama = bool(args.llama_cpp)
    md = table(results, with_llama)
    mem = {}
    for r in results:
        e = r.get("ember", {})
        if e.get("mem_gbps"):
            mem.setdefault(r["threads"], []).append(e["mem_gbps"])
    mem_line = ", ".join("%d thread%s %.1f GB/s" % (t, "" if t == 1 else "s", statistics.median(v))
                         for t, v in sorted(mem.items()))
    if likwid:
        mem_line += "; likwid-bench %s (independent): %s" % (
            next(iter(likwid.values()))["kernel"],
            ", ".join("%d thread%s %.1f GB/s" % (t, "" if t == 1 else "s", v["gbps"]) for t, v in sorted(likwid.items())))
    header = ("# ember benchmark results\n\n"
              "Commit %s (ember binary %s), %s; %s (%s cores, %s RAM); load average %s at start, %s at end;"
              " %d s.\n"
              "Random-weight models; pp = %s-token prompt, tg = generation after it; median of %d repeats.\n"
              "Memory read bandwidth (ember bench's probe, median): %s.\nMB/token = weight bytes read per generated token;\n"
              "%% of mem BW = tg tok/s x MB/token / measured bandwidth at the same thread count"
              " (small models fit in cache and can exceed 100%%).\n"
              "peak RSS = peak resident memory of the run (ember: as `ember bench` takes it, before its probe's"
              " buffer; llama.cpp: the process's ru_maxrss).\n"
              % (meta["commit"], meta["ember_binary"], started, meta["machine"]["cpu"], meta["machine"]["cores"], meta["machine"]["memory"],
                 meta["load_start"], meta["load_end"], meta["elapsed_s"], args.pp or 128, args.repeats,
                 mem_line or "-"))
    if with_llama:
        meta["llama_cpp"] = {"dir": args.llama_cpp, "no_mmap": " ".join(llama.nommap), "note": llama.note}
        header += ("llama.cpp: `llama-bench -p %d -n %d -r %d %s` on the same files (its tg starts at an empty "
                   "context); ratio = ember / llama.cpp.%s\n"
                   % (args.pp or 128, args.tg or 64, args.repeats, " ".join(llama.nommap),
                      "  " + llama.note + "." if llama.note else ""))
    if membw:
        md += "\n\nMemory read bandwidth (tools/mem_bandwidth.c):\n\n```\n%s\n```" % membw
    with open(os.path.join(args.outdir, "results.md"), "w") as f:
        f.write(header + "\n" + md + "\n")
    with open(os.path.join(args.outdir, "results.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    with open(os.path.join(args.outdir, "results.svg"), "w") as f:
        f.write(svg_chart(results, with_llama, "ember generation speed, commit %s" % meta["commit"]))
    print(header)
    print(md)
    print("\nwritten: %s/results.{md,json,svg}" % os.path.relpath(args.outdir, os.getcwd()))


if __name__ == "__main__":
    main()
