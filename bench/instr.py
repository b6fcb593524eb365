#!/usr/bin/env python3
"""Instructions per call, counted by callgrind: `make bench-instr`.

    python3 bench/instr.py [--short 20] [--long 60] [--runtimes lua5.4,luajit] [--json FILE]

Counts, with `valgrind --tool=callgrind`, the instructions of one ListBindings
call of 100 bindings (bench/pages.py's chain, about 27 KB a page) over HTTP
keep-alive on loopback, stage by stage (bench/profile.lua --stage): validate,
sign, http, decode and the whole call (`client:list_bindings`), the rest
("parse/response": client:call, retries, error checks, the response table)
being whole minus the four. Each stage runs once with --short calls and once
with --long; (long - short) / (long - short calls) is its cost per call, so
start-up, client creation and the first connection drop out. The GC runs as
it does in a user's process. Start-up (`require "imm"` plus `imm.new`) is
counted against an empty interpreter. The limits are bench/curl_loop.c's
libcurl alone and libcurl + lua-cjson, counted the same way.

The server is a small canned-reply HTTP/1.1 server in this Python process,
so none of its work is in the counted process.
"""

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from urllib.parse import parse_qs, urlsplit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ["validate", "sign", "http", "decode", "whole"]


def serve(pages):
    """A keep-alive server answering every request with the page its NextToken names."""
    by_token = {}
    for tok, body in pages:
        by_token[tok] = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json;charset=utf-8\r\n"
                         b"x-acs-request-id: 7D2B5E6A-0000-4000-8000-000000000000\r\n"
                         b"Content-Length: %d\r\nConnection: keep-alive\r\n\r\n" % len(body)) + body
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)

    def conn(c):
        buf = b""
        with c:
            while True:
                while b"\r\n\r\n" not in buf:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                head, buf = buf.split(b"\r\n\r\n", 1)
                m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                n = int(m.group(1)) if m else 0
                while len(buf) < n:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                buf = buf[n:]
                target = head.split(b" ", 2)[1].decode()
                tok = parse_qs(urlsplit(target).query).get("NextToken", [""])[0]
                reply = by_token.get(tok)
                if reply is None:
                    c.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                else:
                    c.sendall(reply)

    def accept():
        while True:
            c, _ = srv.accept()
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=conn, args=(c,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return srv.getsockname()[1]


def instructions(argv, env, workdir, tag):
    out = os.path.join(workdir, f"cg.{tag}.out")
    p = subprocess.run(["valgrind", "--tool=callgrind", "--smc-check=all-non-file",
                        f"--callgrind-out-file={out}", *argv],
                       cwd=ROOT, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"callgrind {' '.join(argv)} failed:\n{p.stderr[-2000:]}")
    with open(out) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    raise RuntimeError("no totals in " + out)


def fmt(n):
    if n is None:
        return "-"
    if abs(n) >= 1e6:
        return f"{n / 1e6:.3f}M"
    return f"{n / 1e3:.1f}k"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--short", type=int, default=200, help="calls of the short run (200): past LuaJIT's trace compiling")
    ap.add_argument("--long", type=int, default=600, help="calls of the long run (600)")
    ap.add_argument("--runtimes", default="lua5.4,luajit")
    ap.add_argument("--stages", default=",".join(STAGES + ["startup", "limits"]))
    ap.add_argument("--json", help="also write the figures to this file")
    a = ap.parse_args()
    want = a.stages.split(",")
    n = a.long - a.short

    workdir = tempfile.mkdtemp(prefix="imm-instr-")
    subprocess.run([sys.executable, os.path.join(ROOT, "bench/pages.py"), workdir], check=True,
                   stdout=subprocess.DEVNULL)
    with open(os.path.join(workdir, "tokens.json")) as f:
        tokens = json.load(f)["tokens"]["100"]
    pages = []
    for i, tok in enumerate(tokens):
        with open(os.path.join(workdir, f"p100-{i + 1:02d}.json"), "rb") as f:
            pages.append((tok, f.read()))
    port = serve(pages)
    url = f"http://127.0.0.1:{port}"
    with open(os.path.join(workdir, "tokens.txt"), "w") as f:
        f.write("\n".join(tokens) + "\n")

    res = {}
    for rt in a.runtimes.split(","):
        env = dict(os.environ, LUA_PATH="lua/?.lua;lua/?/init.lua;;", LUA_CPATH=f"build/{rt}/?.so;;")
        r = res[rt] = {}

        def per_call(stage):
            def run(calls):
                return instructions([rt, "bench/profile.lua", "--url", url, "--calls", str(calls),
                                     "--stage", stage], env, workdir, f"{rt}-{stage}-{calls}")
            return (run(a.long) - run(a.short)) / n

        for st in STAGES:
            if st in want:
                r[st] = per_call(st)
                print(f"{rt} {st}: {fmt(r[st])}", file=sys.stderr)
        if "sign" in r and "validate" in r:
            r["sign"] -= r["validate"]  # the sign stage validates first, for a fresh query table
        if all(st in r for st in STAGES):
            r["parse/response"] = r["whole"] - sum(r[st] for st in STAGES[:-1])
        if "startup" in want:
            empty = instructions([rt, "-e", ""], env, workdir, f"{rt}-empty")
            full = instructions([rt, "-e", 'local imm = require "imm"; '
                                 'assert(imm.new { endpoint = "http://127.0.0.1:1", '
                                 'access_key_id = "id", access_key_secret = "secret" })'],
                                env, workdir, f"{rt}-startup")
            r["startup"] = full - empty
            print(f"{rt} startup: {fmt(r['startup'])}", file=sys.stderr)
        if "limits" in want:
            loop = {"lua5.4": "curl_cjson_loop", "luajit": "curl_cjson_jit_loop"}.get(rt)
            for key, exe in (("libcurl + lua-cjson", loop), ("libcurl alone", "curl_loop")):
                path = os.path.join(ROOT, "build/bench", exe) if exe else None
                if not path or not os.path.exists(path):
                    continue

                def run(calls, path=path, key=key):
                    # --warmup rounds up to whole chains of 10, then --seconds 0 runs one chain
                    return instructions([path, "--url", url, "--tokens", os.path.join(workdir, "tokens.txt"),
                                         "--warmup", str(calls), "--seconds", "0"], env, workdir,
                                        f"{rt}-{os.path.basename(path)}-{calls}")
                r[key] = (run(a.long) - run(a.short)) / n
                print(f"{rt} {key}: {fmt(r[key])}", file=sys.stderr)

    rows = STAGES[:-1] + ["parse/response", "whole", "startup", "libcurl + lua-cjson", "libcurl alone"]
    rts = list(res)
    print(f"Instructions per ListBindings call of 100 bindings (callgrind; {a.long} - {a.short} calls), "
          "start-up once:\n")
    print("| stage | " + " | ".join(rts) + " |")
    print("| --- |" + " ---: |" * len(rts))
    for row in rows:
        if any(row in res[rt] for rt in rts):
            label = {"whole": "**per call**", "startup": "start-up (require + new)"}.get(row, row)
            print(f"| {label} | " + " | ".join(fmt(res[rt].get(row)) for rt in rts) + " |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
