#!/usr/bin/env python3
"""A request fuzzer for the local IMM server (server/imm_server/).  Standard library only.

    python3 server/tests/fuzz.py [--seed N] [--requests N] [--seconds S] [-v]

Starts the local IMM server, then sends it the known bad requests (a non-ASCII
ACS3 Signature, control requests with fields of the wrong type, a chunk size
of -1 followed by more than MAX_BODY_BYTES, fault options that are not finite)
and a bounded number of generated ones, from a fixed seed: broken request
lines, headers, Content-Length and chunked framing, bodies, signed requests
with odd parameters, control requests with odd JSON.  Each request goes on its
own connection, whose sending side is then shut, so the server always sees the
end of what it is sent.

Every reply must be a well-formed HTTP/1.x response (status line, headers,
Content-Length, exactly that many body bytes) with a JSON body; a status of 400
or more must be a 4xx with a body in the service's error shape (RequestId,
HostId, Code, Message, Recommend); no request may go unanswered.  The server's
peak memory (VmHWM) may grow by at most --max-growth-mib over the run.
Prints one line per failed case (with the seed and the case number to replay
it) and a summary; exits 1 if anything failed.
"""

import argparse
import base64
import collections
import hashlib
import hmac
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "..", "imm_server")     # run as a directory (its __main__.py)
KEY_ID, SECRET = "imm-local-id", "imm-local-secret"
ERROR_FIELDS = ("RequestId", "HostId", "Code", "Message", "Recommend")
# every action of the description, with its parameter names, and a few beyond it
with open(os.path.join(HERE, "..", "..", "api", "imm-2020-09-30.json"), encoding="utf-8") as _f:
    _API = json.load(_f)["actions"]
PARAMS = {name: [p["name"] for p in a["params"]] for name, a in _API.items()}
PARAMS.update({"StopBinding": ["ProjectName", "DatasetName", "URI", "Reason"],
               "ResumeBinding": ["ProjectName", "DatasetName", "URI"], "NoSuchAction": ["ProjectName"]})
ACTIONS = tuple(sorted(PARAMS))
CONTROL = [("GET", "/_imm/health"), ("GET", "/_imm/log"), ("GET", "/_imm/stats"), ("GET", "/_imm/faults"),
           ("POST", "/_imm/faults"), ("DELETE", "/_imm/faults"), ("POST", "/_imm/data"),
           ("GET", "/_imm/settings"), ("POST", "/_imm/settings"), ("POST", "/_imm/binding-state"),
           ("GET", "/_imm/nothing"), ("PUT", "/_imm/faults"), ("POST", "/_imm/replies"), ("GET", "/_imm/replies"),
           ("DELETE", "/_imm/replies"), ("POST", "/_imm/task-outcomes"), ("POST", "/_imm/task-state"),
           ("POST", "/_imm/notify-target"), ("GET", "/_imm/notifications"), ("POST", "/_imm/records")]
MAX_BODY_BYTES = 10 * 1024 * 1024


# ---------------------------------------------------------------------------
# Reading replies
# ---------------------------------------------------------------------------

class BadReply(Exception):
    pass


def parse_replies(data, head_only=False):
    """The replies in data, each (status, headers, body); BadReply when malformed.
    head_only: replies to HEAD, which have no body whatever Content-Length says."""
    replies = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            raise BadReply(f"no end of headers in {data[:120]!r}")
        lines = head.split(b"\r\n")
        m = re.fullmatch(rb"HTTP/1\.[01] ([0-9]{3}) [^\r\n]*", lines[0])
        if not m:
            raise BadReply(f"bad status line {lines[0][:120]!r}")
        headers = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not re.fullmatch(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
                raise BadReply(f"bad header line {line[:120]!r}")
            headers[name.decode().lower()] = value.strip().decode("latin-1")
        length = headers.get("content-length")
        if length is None or not re.fullmatch(r"[0-9]+", length):
            raise BadReply(f"no Content-Length (status {m.group(1).decode()})")
        n = 0 if head_only else int(length)
        if len(rest) < n:
            raise BadReply(f"body of {len(rest)} bytes, {n} promised")
        replies.append((int(m.group(1)), headers, rest[:n]))
        data = rest[n:]
    return replies


def check_reply(status, headers, body, method):
    """Problems with one reply, as a list of strings."""
    problems = []
    if status >= 500:
        problems.append(f"status {status}: a bad request must get a 4xx")
    if method == "HEAD":
        return problems
    if not headers.get("content-type", "").startswith("application/json"):
        problems.append(f"content-type {headers.get('content-type')!r}")
    try:
        doc = json.loads(body, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    except ValueError as err:
        return problems + [f"status {status}: body is not JSON ({err}): {body[:120]!r}"]
    if status >= 400:
        if not isinstance(doc, dict) or not all(isinstance(doc.get(k), str) for k in ERROR_FIELDS):
            problems.append(f"status {status}: not in the service's error shape: {body[:200]!r}")
    return problems


def exchange(port, raw, trailer=None, timeout=10.0):
    """Sends raw (then trailer bytes, from a thread, ignoring a peer that hangs up),
    shuts the sending side, and returns everything read until the server closes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        def send_rest():
            try:
                s.sendall(raw)
                if trailer is not None:
                    chunk = b"A" * (1 << 20)
                    sent = 0
                    while sent < trailer:
                        s.sendall(chunk)
                        sent += len(chunk)
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass        # the server answered and hung up before taking it all: fine
        sender = threading.Thread(target=send_rest, daemon=True)
        sender.start()
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                part = s.recv(1 << 16)
            except socket.timeout:
                break
            except ConnectionResetError:
                break
            if not part:
                break
            data += part
        sender.join(timeout)
        return data
    finally:
        s.close()


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


# ---------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------

def enc(text):
    return urllib.parse.quote(text, safe="-_.~")


def signed_v3(method, params, body=b"", content_type=None, signature=None, extra=()):
    """A request signed with ACS3-HMAC-SHA256 by an independent signer; signature
    replaces the computed one (to send a wrong one)."""
    action = params.pop("Action", "ListBindings")
    query = "&".join(f"{enc(k)}={enc(v)}" for k, v in sorted(params.items()))
    headers = {"host": "127.0.0.1", "x-acs-action": action, "x-acs-version": "2020-09-30",
               "x-acs-date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
               "x-acs-signature-nonce": uuid.uuid4().hex,
               "x-acs-content-sha256": hashlib.sha256(body).hexdigest()}
    if content_type:
        headers["content-type"] = content_type
    names = sorted(h for h in headers if h.startswith("x-acs-") or h in ("host", "content-type"))
    canonical = "\n".join([method, "/", query, "".join(f"{h}:{headers[h]}\n" for h in names),
                           ";".join(names), headers["x-acs-content-sha256"]])
    sts = "ACS3-HMAC-SHA256\n" + hashlib.sha256(canonical.encode()).hexdigest()
    sig = hmac.new(SECRET.encode(), sts.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"ACS3-HMAC-SHA256 Credential={KEY_ID},SignedHeaders={';'.join(names)},"
                                f"Signature={signature if signature is not None else sig}")
    lines = [f"{method} /{'?' + query if query else ''} HTTP/1.1".encode()]
    lines += [f"{k}: {v}".encode("utf-8") for k, v in headers.items()]
    lines += [b"Content-Length: %d" % len(body)] + [h for h in extra]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def plain(method, target, headers=(), body=b"", length=True):
    lines = [f"{method} {target} HTTP/1.1".encode("utf-8", "surrogateescape"), b"Host: 127.0.0.1"]
    lines += list(headers)
    if length:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def known_cases():
    """(name, raw request, bytes streamed after it or None): the defects of issue 21."""
    cases = [
        ("ACS3 Signature with non-ASCII characters", signed_v3("POST", {"ProjectName": "immtest"},
                                                               signature="\u00e9" * 64), None),
        ("ACS3 Signature with a non-Latin-1 UTF-8 sequence", signed_v3("POST", {"ProjectName": "immtest"},
                                                                       signature="\u2603" * 10), None),
        ("chunk size -1, then more than MAX_BODY_BYTES",
         plain("POST", "/", [b"Transfer-Encoding: chunked"], b"-1\r\n", length=False), 6 * MAX_BODY_BYTES),
        ("chunk sizes summing past MAX_BODY_BYTES",
         plain("POST", "/", [b"Transfer-Encoding: chunked"], b"%x\r\n" % MAX_BODY_BYTES, length=False),
         3 * MAX_BODY_BYTES),
        ("chunk size with an underscore", plain("POST", "/", [b"Transfer-Encoding: chunked"],
                                                b"1_0\r\n" + b"a" * 16 + b"\r\n0\r\n\r\n", length=False), None),
        ("Content-Length over MAX_BODY_BYTES",
         plain("POST", "/", [b"Content-Length: %d" % (MAX_BODY_BYTES + 1)], length=False), 2 * MAX_BODY_BYTES),
        ("Content-Length with a sign", plain("POST", "/", [b"Content-Length: +5"], b"abcde", length=False), None),
        ("Content-Length longer than the body", plain("POST", "/", [b"Content-Length: 100"], b"abc",
                                                      length=False), None),
        ("fault option Infinity", plain("POST", "/_imm/faults", body=b'{"mode":"slow","delay":1e999}'), None),
        ("fault option NaN", plain("POST", "/_imm/faults", body=b'{"mode":"slow","delay":NaN}'), None),
        ("fault size beyond memory", plain("POST", "/_imm/faults", body=b'{"mode":"big","size":1e15}'), None),
        ("faults listed after the above", plain("GET", "/_imm/faults"), None),
        ("binding-state with a list for ProjectName",
         plain("POST", "/_imm/binding-state", body=b'{"ProjectName":["a"],"DatasetName":"d","URI":"oss://b/",'
                                                   b'"State":"Failed"}'), None),
        ("data with a number for DatasetName",
         plain("POST", "/_imm/data", body=b'{"Projects":["p"],"Bindings":[{"ProjectName":"p","DatasetName":1,'
                                          b'"URI":"oss://b/"},{"ProjectName":"p","DatasetName":"d","URI":"x"}]}'),
         None),
        ("settings with a string delay", plain("POST", "/_imm/settings", body=b'{"binding_start_delay":"1"}'),
         None),
        ("settings with an infinite delay", plain("POST", "/_imm/settings", body=b'{"binding_start_delay":1e999}'),
         None),
        ("control JSON nested past the recursion limit", plain("POST", "/_imm/data", body=b"[" * 100000), None),
        ("Tag nested past the recursion limit", signed_v3("POST", {"Action": "CreateProject", "ProjectName": "deep",
                                                                   "Tag": "[" * 20000}), None),
        ("request line over 64 KiB", plain("GET", "/?" + "a" * 70000), None),
        ("header line over 64 KiB", plain("GET", "/", [b"X-Big: " + b"a" * 70000]), None),
        ("an unknown method", plain("BREW", "/"), None),
        ("HTTP/2.0 in the request line", b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", None),
        ("a request line of one word", b"NONSENSE\r\n\r\n", None),
        ("an HTTP/0.9 request", b"GET /\r\n", None),
        ("empty lines before the request line", b"\r\n\r\n" + plain("GET", "/_imm/health"), None),
        ("an empty line, then a request line over 64 KiB", b"\r\n" + plain("GET", "/?" + "a" * 70000), None),
        ("HEAD", plain("HEAD", "/"), None),
        ("Transfer-Encoding that is not chunked", plain("POST", "/", [b"Transfer-Encoding: gzip"], b"x"), None),
    ]
    return cases


def random_text(rng, n):
    alphabet = ["a", "Z", "0", "-", "_", ".", "~", " ", "%", "&", "=", "+", "/", "?", "#", ":", "\u00e9", "\u2603",
                "\U0001f600", "\x00", "\r", "\n", "\t", "\"", "\\", "[", "]", "{", "}"]
    return "".join(rng.choice(alphabet) for _ in range(n))


def random_json(rng, depth=0):
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 2 ** 70, -2 ** 70, 0.5, 1e300, -1e-300])
    if kind in (3, 4, 5):
        return rng.choice(["", "Failed", "slow", "big", "gzip_bomb", "p", "oss://b/", random_text(rng, 8)])
    if kind == 6:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["mode", "count", "match", "delay", "size", "interval", "retry_after_ms", "ProjectName", "DatasetName",
            "URI", "State", "Reason", "Phase", "Projects", "Bindings", "Datasets", "binding_start_delay", "x"]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randrange(6))}


def random_control(rng):
    method, path = rng.choice(CONTROL)
    if method != "POST":
        return plain(method, path)
    if rng.random() < 0.1:
        body = random_text(rng, rng.randrange(40)).encode("utf-8")
    else:
        doc = random_json(rng)
        if path == "/_imm/faults" and isinstance(doc, dict) and rng.random() < 0.7:
            # a real mode, so the options are what gets checked; never a fault that
            # would delay or cut the next generated requests
            doc["mode"] = rng.choice(["throttle", "unavailable", "internal", "malformed", "big", "gzip_bomb"])
            doc["count"] = 1
            doc["match"] = {"ProjectName": "never-sent"}
        body = json.dumps(doc).encode()
    return plain(method, path, [b"Content-Type: application/json"], body)


def random_framing(rng):
    """Broken request lines, headers and bodies."""
    kind = rng.randrange(8)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))) + b"\r\n\r\n"
    if kind == 1:
        method = rng.choice(["GET", "POST", "DELETE", "PUT", "OPTIONS", "PATCH", "G\u00e9T", "", "get"])
        target = rng.choice(["/", "*", "/_imm/", "//", "/?" + random_text(rng, 30), "http://x/", ""])
        version = rng.choice(["HTTP/1.1", "HTTP/1.0", "HTTP/1.x", "HTTP/9.9", "HTTP/1.1 extra", "FTP/1.1", ""])
        return f"{method} {target} {version}\r\nHost: x\r\n\r\n".encode("utf-8")
    if kind == 2:
        n = rng.choice([b"-1", b"0x10", b"ffffffffffffffffffff", b"", b" 5", b"5;ext=1", b"z", b"\xff"])
        body = n + b"\r\n" + b"x" * rng.randrange(20) + b"\r\n0\r\n\r\n"
        return plain("POST", "/", [b"Transfer-Encoding: chunked"], body, length=False)
    if kind == 3:
        value = rng.choice([b"-1", b"abc", b"1e3", b"\xd9\xa3", b"5, 5", b"99999999999999999999999", b""])
        return plain("POST", "/", [b"Content-Length: " + value], b"abc", length=False)
    if kind == 4:
        headers = [random_text(rng, 10).encode("utf-8") + b": " + random_text(rng, 20).encode("utf-8")
                   for _ in range(rng.randrange(1, 5))]
        return plain("GET", "/", headers)
    if kind == 5:
        return plain("POST", "/", [b"Authorization: " + random_text(rng, 60).encode("utf-8")])
    if kind == 6:
        auth = "ACS3-HMAC-SHA256 Credential=%s,SignedHeaders=%s,Signature=%s" % (
            rng.choice([KEY_ID, "", random_text(rng, 5)]),
            rng.choice(["host", "", random_text(rng, 10), "host;x-acs-date;x-acs-action"]), random_text(rng, 64))
        return plain("POST", "/", [b"Authorization: " + auth.encode("utf-8")])
    return plain("POST", "/", [b"Content-Type: application/x-www-form-urlencoded"],
                 random_text(rng, 50).encode("utf-8"))


def random_signed(rng):
    """Signed requests (V3, or V2 in the query) with odd parameter values."""
    action = rng.choice(ACTIONS)
    params = {"Action": action}
    names = PARAMS[action] + ["ProjectName", "DatasetName", "URI", "MaxResults", "NextToken", "Tag"]
    for name in rng.sample(names, min(len(names), rng.randrange(7))):
        params[name] = rng.choice(["immtest", "dataset001", "oss://examplebucket01/", "7", "-1", "201", "",
                                   '[{"Key":"k","Value":"v"}]', '[{"Key":1}]', "[", "null", "{}", "[]",
                                   '[{"URI":"oss://b/o"}]', '{"Start":"2024-01-01T00:00:00Z"}', "true", "1e999",
                                   random_text(rng, 12), "immtest:x:", "immtest:dataset001:oss://x/"])
    if rng.random() < 0.7:
        sig = None if rng.random() < 0.8 else random_text(rng, 64)
        return signed_v3(rng.choice(["POST", "GET"]), params, signature=sig)
    # V2: all in the query, signed or not
    q = {"Format": "JSON", "Version": "2020-09-30", "AccessKeyId": KEY_ID, "SignatureMethod": "HMAC-SHA1",
         "SignatureVersion": "1.0", "SignatureNonce": uuid.uuid4().hex,
         "Timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), **params}
    canonical = "&".join(f"{enc(k)}={enc(v)}" for k, v in sorted(q.items()))
    sts = f"POST&{enc('/')}&{enc(canonical)}"
    sig = base64.b64encode(hmac.new((SECRET + "&").encode(), sts.encode(), hashlib.sha1).digest()).decode()
    q["Signature"] = sig if rng.random() < 0.8 else random_text(rng, 28)
    return plain("POST", "/?" + "&".join(f"{enc(k)}={enc(v)}" for k, v in q.items()))


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def start_server(tmp):
    port_file = os.path.join(tmp, "port")
    proc = subprocess.Popen([sys.executable, SERVER, "--port", "0", "--quiet", "--port-file", port_file],
                            stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "log"), "wb"))
    for _ in range(200):
        if os.path.exists(port_file):
            with open(port_file, encoding="ascii") as f:
                return proc, int(f.read())
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("fuzz: the server did not start")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--requests", type=int, default=1500, help="generated requests at most")
    p.add_argument("--seconds", type=float, default=30, help="stop generating after this long")
    p.add_argument("--max-growth-mib", type=int, default=40, help="allowed growth of the server's peak RSS")
    p.add_argument("-v", action="store_true")
    args = p.parse_args()
    rng = random.Random(args.seed)
    failures = []
    statuses = collections.Counter()
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_server(tmp)
        try:
            exchange(port, plain("GET", "/_imm/health"))
            baseline = peak_rss_kib(proc.pid)
            cases = [(f"known: {name}", raw, trailer) for name, raw, trailer in known_cases()]
            started = time.monotonic()
            for i in range(args.requests):
                if time.monotonic() - started > args.seconds:
                    break
                make = rng.choice([random_framing, random_control, random_signed])
                cases.append((f"seed {args.seed} case {i} ({make.__name__})", make(rng), None))
            for name, raw, trailer in cases:
                data = exchange(port, raw, trailer)
                method = raw.split(b" ", 1)[0].decode("latin-1")
                problems = []
                try:
                    replies = parse_replies(data, head_only=method == "HEAD")
                    if not replies:
                        problems.append("no reply")
                    for status, headers, body in replies:
                        statuses[status] += 1
                        problems += check_reply(status, headers, body, method)
                except BadReply as err:
                    problems.append(str(err))
                if proc.poll() is not None:
                    problems.append("the server exited")
                if problems:
                    failures.append(name)
                    print(f"FAIL {name}: {'; '.join(problems)}\n     sent {raw[:160]!r}")
                elif args.v:
                    print(f"ok   {name}")
                if proc.poll() is not None:
                    break
            growth = (peak_rss_kib(proc.pid) - baseline) // 1024 if proc.poll() is None else 0
            if growth > args.max_growth_mib:
                failures.append("memory")
                print(f"FAIL the server's peak RSS grew by {growth} MiB (at most {args.max_growth_mib})")
            print(f"fuzz: {len(cases) - len(failures)} of {len(cases)} requests answered well "
                  f"(seed {args.seed}), peak RSS +{growth} MiB; statuses "
                  + " ".join(f"{k}:{v}" for k, v in sorted(statuses.items())))
        finally:
            proc.terminate()
            proc.wait(10)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
