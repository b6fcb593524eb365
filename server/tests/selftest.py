#!/usr/bin/env python3
"""End-to-end self-test of the local IMM server (server/imm_server/).  Standard library only.

    python3 server/tests/selftest.py [-v]

Starts the server (plain, with a security token, with --fault, and with --tls
using certificates from tools/gen_certs.sh), then signs real V3 SHA-256, V3 SM3
and V2 requests with a signer written here independently of the server's (and
first checked against the official vectors), and checks paging, validation,
signature errors, every fault mode, the control API, keep-alive, gzip and TLS.
Prints one line per failed check and a summary; exits 1 if anything failed.
"""

import base64
import gzip
import hashlib
import hmac
import http.client
import http.server
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
import zlib
from datetime import datetime, timedelta, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.normpath(os.path.join(HERE, "..", ".."))
SERVER_DIR = os.path.join(TOP, "server")
# run as a directory (its __main__.py); IMM_SERVER_UNDER_TEST runs the checks against another copy
SERVER = os.environ.get("IMM_SERVER_UNDER_TEST") or os.path.join(SERVER_DIR, "imm_server")
API = os.path.join(TOP, "api", "imm-2020-09-30.json")
TOOLS = os.path.join(TOP, "tools")
DATA_FILE = os.path.join(TOOLS, "sample_bindings.json")
VECTORS = os.path.join(TOP, "spec", "fixtures", "signing.json")
KEY_ID, SECRET = "imm-local-id", "imm-local-secret"
SHA256, SM3 = "ACS3-HMAC-SHA256", "ACS3-HMAC-SM3"
VERBOSE = "-v" in sys.argv
FAILURES = []


def check(condition, what):
    if not condition:
        FAILURES.append(what)
        print(f"FAIL {what}")
    elif VERBOSE:
        print(f"ok   {what}")
    return condition


# ---------------------------------------------------------------------------
# An independent signer (deliberately not the server's code)
# ---------------------------------------------------------------------------

def enc(text):
    """RFC 3986, byte by byte."""
    out = []
    for byte in str(text).encode("utf-8"):
        char = chr(byte)
        out.append(char if char.isascii() and (char.isalnum() or char in "-_.~") else "%%%02X" % byte)
    return "".join(out)


def sm3_ctor():
    try:
        hashlib.new("sm3")
        return lambda data=b"": hashlib.new("sm3", data)
    except ValueError:                      # OpenSSL without SM3: borrow the server's
        sys.path.insert(0, SERVER_DIR)
        from imm_server import signing
        return signing.SM3


HASHES = {SHA256: hashlib.sha256, SM3: sm3_ctor()}


def now_iso(offset=0):
    return (datetime.now(timezone.utc) + timedelta(seconds=offset)).strftime("%Y-%m-%dT%H:%M:%SZ")


def v3_sign(algorithm, method, query, headers, key_id=KEY_ID, secret=SECRET):
    """Authorization for query (list of pairs) and headers (all of them signed)."""
    h = HASHES[algorithm]
    names = sorted(k.lower() for k in headers)
    lower = {k.lower(): v for k, v in headers.items()}
    canonical = "\n".join([
        method, "/", "&".join(f"{k}={v}" for k, v in sorted((enc(k), enc(v)) for k, v in query)),
        "".join(f"{n}:{lower[n].strip()}\n" for n in names), ";".join(names), lower["x-acs-content-sha256"]])
    string_to_sign = f"{algorithm}\n{h(canonical.encode()).hexdigest()}"
    signature = hmac.new(secret.encode(), string_to_sign.encode(), h).hexdigest()
    return f"{algorithm} Credential={key_id},SignedHeaders={';'.join(names)},Signature={signature}"


def v2_sign(method, params, secret=SECRET):
    canonical = "&".join(f"{k}={v}" for k, v in sorted((enc(k), enc(v)) for k, v in params.items()))
    string_to_sign = f"{method}&{enc('/')}&{enc(canonical)}"
    mac = hmac.new((secret + "&").encode(), string_to_sign.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def check_signer_against_vectors():
    with open(VECTORS, encoding="utf-8") as f:
        doc = json.load(f)
    for case in doc["v3"]:
        got = v3_sign(case["algorithm"], case["method"], list(case["query"].items()), case["headers"],
                      doc["access_key_id"], doc["access_key_secret"])
        check(got == case["authorization"], f"selftest signer matches vector v3/{case['name']}")
    for case in doc["v2"]:
        got = v2_sign(case["method"], case["params"], doc["access_key_secret"])
        check(got == case["signature"], f"selftest signer matches vector v2/{case['name']}")


# ---------------------------------------------------------------------------
# Servers and clients
# ---------------------------------------------------------------------------

class Server:
    """python3 server/imm_server ... in a subprocess; stopped with SIGTERM on exit."""

    def __init__(self, *extra, tls_dir=None, ssl_ctx=None):
        self.tmp = tempfile.mkdtemp(prefix="imm-selftest-")
        port_file = os.path.join(self.tmp, "port")
        args = [sys.executable, SERVER, "--port", "0", "--port-file", port_file, *extra]
        if tls_dir:
            args += ["--tls", tls_dir]
        self.stderr = open(os.path.join(self.tmp, "stderr"), "w+")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        self.banner = self.proc.stdout.readline().strip()
        with open(port_file) as f:
            self.port = int(f.read())
        # One keep-alive connection for the control API, so control calls do not
        # show up as extra connections in /_imm/stats.
        if ssl_ctx is None:
            self.control_conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        else:
            self.control_conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=30, context=ssl_ctx)

    def stop(self):
        self.control_conn.close()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(10)
        self.stderr.seek(0)
        err = self.stderr.read()
        self.stderr.close()
        shutil.rmtree(self.tmp)
        check(rc == 0 and "Traceback" not in err, f"server exits 0 without traceback on SIGTERM (rc={rc})")
        return err

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # -- control API --
    def control(self, method, path, payload=None):
        body = json.dumps(payload).encode() if payload is not None else None
        self.control_conn.request(method, path, body=body)
        resp = self.control_conn.getresponse()
        return resp.status, json.loads(resp.read())

    def fault(self, mode, **options):
        status, _ = self.control("POST", "/_imm/faults", {"mode": mode, **options})
        assert status == 200, (mode, options)


class Response:
    def __init__(self, status, headers, body, elapsed):
        self.status, self.headers, self.body, self.elapsed = status, headers, body, elapsed

    def json(self):
        return json.loads(self.body)


class Client:
    """Signs and sends requests over one keep-alive connection."""

    def __init__(self, server, token=None, ssl_ctx=None, host=None):
        self.server, self.token = server, token
        self.host = host or f"127.0.0.1:{server.port}"
        if ssl_ctx is not None:
            self.conn = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=30, context=ssl_ctx)
        else:
            self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)

    def v3_request(self, query, algorithm=SHA256, method="POST", body=b"", headers=None, unsigned=None,
                   action="ListBindings", version="2020-09-30", date=None, nonce=None, secret=SECRET,
                   key_id=KEY_ID):
        """(target, headers, body) for a signed V3 request."""
        signed = {"host": self.host, "x-acs-action": action, "x-acs-version": version,
                  "x-acs-date": date or now_iso(), "x-acs-signature-nonce": nonce or uuid.uuid4().hex,
                  "x-acs-content-sha256": HASHES[algorithm](body).hexdigest()}
        if self.token:
            signed.update({"x-acs-security-token": self.token, "x-acs-accesskey-id": key_id})
        signed.update(headers or {})
        all_headers = dict(signed, authorization=v3_sign(algorithm, method, query, signed, key_id, secret),
                           **(unsigned or {}))
        target = "/?" + "&".join(f"{enc(k)}={enc(v)}" for k, v in query) if query else "/"
        return method, target, all_headers, body

    def v2_request(self, params, method="POST", in_body=False, nonce=None, timestamp=None, secret=SECRET):
        full = {"Action": "ListBindings", "Version": "2020-09-30", "Format": "JSON", "AccessKeyId": KEY_ID,
                "SignatureMethod": "HMAC-SHA1", "SignatureVersion": "1.0",
                "SignatureNonce": nonce or uuid.uuid4().hex, "Timestamp": timestamp or now_iso(), **params}
        if self.token:
            full["SecurityToken"] = self.token
        full["Signature"] = v2_sign(method, full, secret)
        encoded = "&".join(f"{enc(k)}={enc(v)}" for k, v in full.items())
        if in_body:
            return method, "/", {"host": self.host, "content-type": "application/x-www-form-urlencoded"}, \
                encoded.encode()
        return method, "/?" + encoded, {"host": self.host}, b""

    def send(self, request):
        method, target, headers, body = request
        start = time.monotonic()
        self.conn.request(method, target, body=body, headers=headers)
        resp = self.conn.getresponse()
        data = resp.read()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data, time.monotonic() - start)

    def v3(self, query, **kw):
        return self.send(self.v3_request(query, **kw))

    def v2(self, params, **kw):
        return self.send(self.v2_request(params, **kw))

    # page_all passes a list of pairs; V2 takes a dict.
    def v2_query_pages(self, query):
        return self.v2(dict(query))

    def v2_body_pages(self, query):
        return self.v2(dict(query), in_body=True)

    def close(self):
        self.conn.close()


def raw_exchange(port, request, timeout=10, extra_headers=None):
    """Send request bytes by hand and read until the server closes or resets.
    Returns (bytes received, exception or None)."""
    method, target, headers, body = request
    lines = [f"{method} {target} HTTP/1.1"] + [f"{k}: {v}" for k, v in {**headers, **(extra_headers or {})}.items()]
    lines.append(f"Content-Length: {len(body)}")
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    data, error = b"", None
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError as err:
        error = err
    sock.close()
    return data, error


def split_response(data):
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def sorted_file_bindings(project):
    with open(DATA_FILE, encoding="utf-8") as f:
        items = [b for b in json.load(f)["Bindings"] if b["ProjectName"] == project]
    return sorted(items, key=lambda b: (b["DatasetName"], b["URI"]))


# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------

def page_all(fetch, query):
    """Follow NextToken to the end; returns (items, pages, tokens)."""
    items, pages, token = [], 0, None
    while True:
        resp = fetch(query + ([("NextToken", token)] if token else []))
        if resp.status != 200:
            check(False, f"paging request answered {resp.status}: {resp.body[:200]}")
            return items, pages
        doc = resp.json()
        items += doc["Bindings"]
        pages += 1
        token = doc.get("NextToken")
        if not token:
            return items, pages


def check_paging(client):
    expected = sorted_file_bindings("immtest")
    resp = client.v3([("ProjectName", "immtest"), ("MaxResults", "10")])
    doc = resp.json()
    check(resp.status == 200 and len(doc["Bindings"]) == 10, "V3 SHA-256: a page of 10")
    check(doc["Bindings"] == expected[:10], "first page is the first 10 by (DatasetName, URI), fields intact")
    check(doc["NextToken"] == f"immtest:{expected[9]['DatasetName']}:{expected[9]['URI']}", "NextToken format")
    check(re.fullmatch(r"[0-9A-F]{8}-[0-9A-F]{4}-4[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}", doc["RequestId"])
          and resp.headers["x-acs-request-id"] == doc["RequestId"], "RequestId is an uppercase UUID4, echoed in header")
    check(resp.headers["content-type"] == "application/json;charset=utf-8" and "date" in resp.headers,
          "Content-Type and Date headers")

    for label, fetch, query, project in [
        ("V3 SHA-256, default MaxResults", client.v3, [("ProjectName", "immtest")], "immtest"),
        ("V3 SHA-256, MaxResults=200", client.v3, [("ProjectName", "immtest"), ("MaxResults", "200")], "immtest"),
        ("V3 SM3, MaxResults=7", lambda q: client.v3(q, algorithm=SM3), [("ProjectName", "media-prod"), ("MaxResults", "7")], "media-prod"),
        ("V3 MaxResults=1 (tokens with ' ', '+', CJK)", client.v3, [("ProjectName", "media-prod"), ("MaxResults", "1")], "media-prod"),
        ("V2 query, MaxResults=50", client.v2_query_pages, [("ProjectName", "immtest"), ("MaxResults", "50")], "immtest"),
        ("V2 form body, MaxResults=30", client.v2_body_pages, [("ProjectName", "media-prod"), ("MaxResults", "30")], "media-prod"),
        ("V3 GET", lambda q: client.v3(q, method="GET"), [("ProjectName", "immtest"), ("MaxResults", "100")], "immtest"),
    ]:
        items, pages = page_all(fetch, query)
        check(items == sorted_file_bindings(project), f"{label}: all {len(items)} items once, in order, {pages} pages")
    check(len(page_all(client.v3, [("ProjectName", "immtest")])[0]) == 205, "immtest has 205 bindings")
    pages = page_all(client.v3, [("ProjectName", "immtest"), ("MaxResults", "200")])[1]
    check(pages == 2, "205 items at MaxResults=200 is 2 pages")
    resp = client.v3([("ProjectName", "media-prod"), ("MaxResults", "95")])
    check(len(resp.json()["Bindings"]) == 95 and "NextToken" not in resp.json(),
          "a page ending exactly at the last item has no NextToken")
    resp = client.v3([("ProjectName", "immtest"), ("MaxResults", "0")])
    check(len(resp.json()["Bindings"]) == 100, "MaxResults=0 means 100")


def check_filters_and_validation(client):
    def code(resp):
        return resp.status, resp.json().get("Code")

    resp = client.v3([("ProjectName", "immtest"), ("DatasetName", "dataset001"), ("MaxResults", "200")])
    check(len(resp.json()["Bindings"]) == 60 and all(b["DatasetName"] == "dataset001" for b in resp.json()["Bindings"]),
          "DatasetName filter")
    resp = client.v3([("ProjectName", "immtest"), ("Name", "a+b"), ("MaxResults", "200")])
    want = [b for b in sorted_file_bindings("immtest") if "a+b" in b["URI"]]
    check(want and resp.json()["Bindings"] == want, "Name filter (URI substring, with '+')")
    resp = client.v3([("ProjectName", "empty-project")])
    check(resp.status == 200 and resp.json()["Bindings"] == [] and "NextToken" not in resp.json(), "empty project")
    resp = client.v3([("ProjectName", "immtest"), ("SomethingNew", "x")])
    check(resp.status == 200, "unknown params are ignored")
    body = client.v3([("ProjectName", "nope")]).json()
    check(code(client.v3([("ProjectName", "nope")])) == (404, "ResourceNotFound")
          and body["Message"] == "The specified project nope does not exist.", "unknown project -> 404 ResourceNotFound")
    check(code(client.v3([])) == (400, "MissingParameter") and "ProjectName" in client.v3([]).json()["Message"],
          "missing ProjectName -> 400 MissingParameter")
    for bad in ("201", "-1", "abc", "1.5"):
        check(code(client.v3([("ProjectName", "immtest"), ("MaxResults", bad)])) == (400, "InvalidParameter.MaxResults"),
              f"MaxResults={bad} refused")
    check(code(client.v3([("ProjectName", "immtest"), ("MaxResults", "200")]))[0] == 200, "MaxResults=200 accepted")
    for bad in ("garbage", "media-prod:photos-2024:oss://x", "immtest:onlytwo"):
        check(code(client.v3([("ProjectName", "immtest"), ("NextToken", bad)])) == (400, "InvalidParameter.NextToken"),
              f"NextToken {bad!r} refused")
    check(code(client.v3([("ProjectName", "immtest")], version="2017-09-06")) == (400, "InvalidVersion"),
          "wrong version -> InvalidVersion")
    check(code(client.v3([("ProjectName", "immtest")], action="ListFigures")) == (404, "InvalidAction.NotFound"),
          "other action -> InvalidAction.NotFound")
    body = client.v3([("ProjectName", "nope")]).json()
    check(set(body) == {"RequestId", "HostId", "Code", "Message", "Recommend"} and body["HostId"] == client.host
          and body["Recommend"] == "https://api.aliyun.com/troubleshoot?q=ResourceNotFound&product=imm"
                                   f"&requestId={body['RequestId']}", "error body shape")


def check_signature_errors(client):
    def code(resp):
        return resp.status, resp.json().get("Code")

    q = [("ProjectName", "immtest"), ("MaxResults", "1")]
    check(client.v3(q, algorithm=SM3).status == 200, "V3 SM3 accepted")
    check(client.v2(dict(q)).status == 200, "V2 accepted")
    nonce = uuid.uuid4().hex
    check(client.v3(q, nonce=nonce).status == 200, "fresh nonce accepted")
    check(code(client.v3(q, nonce=nonce)) == (400, "SignatureNonceUsed"), "reused nonce -> SignatureNonceUsed (V3)")
    nonce = uuid.uuid4().hex
    client.v2(dict(q), nonce=nonce)
    check(code(client.v2(dict(q), nonce=nonce)) == (400, "SignatureNonceUsed"), "reused nonce -> SignatureNonceUsed (V2)")
    nonce = uuid.uuid4().hex
    resp = client.v3(q, secret="wrong", nonce=nonce)
    check(code(resp) == (400, "SignatureDoesNotMatch") and "server string to sign is:ACS3-HMAC-SHA256\n" in
          resp.json()["Message"] and SECRET not in resp.body.decode(), "bad V3 signature refused, shows string to sign")
    check(client.v3(q, nonce=nonce).status == 200, "a refused request does not use up its nonce")
    resp = client.v2(dict(q), secret="wrong")
    check(code(resp) == (400, "SignatureDoesNotMatch") and "POST&%2F&AccessKeyId" in resp.json()["Message"],
          "bad V2 signature refused")
    resp = client.v3(q, algorithm=SM3, secret="wrong")
    check(code(resp) == (400, "SignatureDoesNotMatch"), "bad SM3 signature refused")
    check(code(client.v3(q, key_id="someone-else")) == (404, "InvalidAccessKeyId.NotFound"), "unknown access key -> 404")
    check(code(client.v3(q, date=now_iso(-16 * 60))) == (400, "InvalidTimeStamp.Expired"), "old x-acs-date refused")
    check(code(client.v3(q, date=now_iso(16 * 60))) == (400, "InvalidTimeStamp.Expired"), "future x-acs-date refused")
    check(client.v3(q, date=now_iso(-14 * 60)).status == 200, "x-acs-date 14 minutes old accepted")
    check(code(client.v3(q, date="2024-01-02 03:04:05")) == (400, "InvalidTimeStamp.Format"), "bad x-acs-date format")
    check(code(client.v2(dict(q), timestamp=now_iso(-3600))) == (400, "InvalidTimeStamp.Expired"), "old V2 Timestamp")
    check(code(client.v3(q, unsigned={"x-acs-extra": "1"})) == (400, "IncompleteSignature"),
          "unsigned x-acs-* header refused")
    method, target, headers, body = client.v3_request(q)
    check(code(client.send((method, target, headers, b"tampered"))) == (400, "SignatureDoesNotMatch"),
          "body not matching x-acs-content-sha256 refused")
    method, target, headers, body = client.v3_request(q)
    del headers["authorization"]
    check(code(client.send((method, target, headers, body))) == (400, "MissingParameter"), "unsigned request refused")
    method, target, headers, body = client.v3_request(q)
    headers["authorization"] = "Bearer abc"
    check(code(client.send((method, target, headers, body))) == (400, "IncompleteSignature"), "unknown scheme refused")
    method, target, headers, body = client.v3_request(q)
    headers["authorization"] = headers["authorization"].replace("Signature=", "Sig=")
    check(code(client.send((method, target, headers, body))) == (400, "IncompleteSignature"), "malformed Authorization")
    check(code(client.v3(q, headers={"x-acs-security-token": "t"})) == (400, "InvalidSecurityToken.Mismatch"),
          "token sent to a server without one -> Mismatch")
    # Query encodings that naive clients get wrong: '+' must stay '+'.
    check(client.v3([("ProjectName", "immtest"), ("Name", "a+b c/é")]).status == 200, "'+', space, '/', é in query")


def check_security_token():
    with Server("--quiet", "--security-token", "STS+tok/en=") as server:
        good = Client(server, token="STS+tok/en=")
        q = [("ProjectName", "immtest"), ("MaxResults", "1")]
        check(good.v3(q).status == 200 and good.v3(q, algorithm=SM3).status == 200, "V3 with security token")
        check(good.v2(dict(q)).status == 200 and good.v2(dict(q), in_body=True).status == 200, "V2 with SecurityToken")
        none = Client(server)
        check(none.v3(q).json()["Code"] == "InvalidSecurityToken.Malformed", "V3 without token -> Malformed")
        check(none.v2(dict(q)).json()["Code"] == "InvalidSecurityToken.Malformed", "V2 without token -> Malformed")
        wrong = Client(server, token="other")
        check(wrong.v3(q).json()["Code"] == "InvalidSecurityToken.Mismatch", "V3 wrong token -> Mismatch")
        check(wrong.v2(dict(q)).json()["Code"] == "InvalidSecurityToken.Mismatch", "V2 wrong token -> Mismatch")
        resp = good.v3(q, headers={"x-acs-accesskey-id": "other"})
        check(resp.json()["Code"] == "InvalidSecurityToken.Mismatch", "x-acs-accesskey-id must match")
        log = server.control("GET", "/_imm/log")[1]
        check(all(r["headers"].get("x-acs-security-token") in (None, "***") and
                  r["params"].get("SecurityToken") in (None, "***") for r in log), "token redacted in the log")
        check(all(r["headers"].get("authorization") in (None, "***") for r in log), "authorization redacted")
        for c in (good, none, wrong):
            c.close()


def check_keepalive_gzip_log(server):
    server.control("DELETE", "/_imm/log")
    before = server.control("GET", "/_imm/stats")[1]
    client = Client(server)
    q = [("ProjectName", "immtest"), ("MaxResults", "3")]
    client.v3(q)
    resp = client.v3(q, headers={"accept-encoding": "gzip"})
    after = server.control("GET", "/_imm/stats")[1]
    check(after["connections"] - before["connections"] == 1 and after["requests"] - before["requests"] == 2,
          f"keep-alive: two requests on one connection ({before} -> {after})")
    check(resp.headers.get("content-encoding") == "gzip" and len(json.loads(gzip.decompress(resp.body))["Bindings"]) == 3,
          "gzip when Accept-Encoding has gzip")
    log = server.control("GET", "/_imm/log")[1]
    check(len(log) == 2 and log[0]["conn"] == log[1]["conn"] and log[0]["seq"] < log[1]["seq"], "log: same conn, seq order")
    check([r["gzip"] for r in log] == [False, True], "log records gzip")
    rec = log[1]
    check(set(rec) == {"seq", "start", "end", "conn", "method", "action", "params", "headers", "signature", "status",
                       "fault", "gzip"} and rec["action"] == "ListBindings" and rec["signature"] == "v3-sha256"
          and rec["status"] == 200 and rec["params"] == dict(q) and rec["end"] >= rec["start"]
          and abs(rec["start"] - time.monotonic()) < 60, "log record fields")
    # A client that reads the log the moment it has its reply must find the record complete.
    complete = True
    for _ in range(30):
        client.v3(q, headers={"accept-encoding": "gzip"})
        last = server.control("GET", "/_imm/log")[1][-1]
        complete &= last["end"] is not None and last["status"] == 200 and last["gzip"] is True
    check(complete, "log record is complete by the time the reply has arrived")
    server.control("DELETE", "/_imm/log")
    client.v3(q)
    client.v3(q)
    client.v2({"ProjectName": "immtest", "MaxResults": "1"})
    client.v3(q, algorithm=SM3)
    log = server.control("GET", "/_imm/log")[1]
    check(log[2]["signature"] == "v2" and "Signature" not in log[2]["params"] and log[3]["signature"] == "v3-sm3",
          "log: v2 and v3-sm3, no Signature param")
    # Connection: close is honoured.
    method, target, headers, body = client.v3_request(q)
    data, err = raw_exchange(server.port, (method, target, headers, body), extra_headers={"Connection": "close"})
    status, resp_headers, _ = split_response(data)
    check(status == 200 and resp_headers.get("connection") == "close" and err is None, "Connection: close honoured")
    conns = server.control("GET", "/_imm/stats")[1]["connections"]
    Client(server).v3(q)
    check(server.control("GET", "/_imm/stats")[1]["connections"] == conns + 1, "a new client is a new connection")
    check(server.control("DELETE", "/_imm/log")[0] == 200 and server.control("GET", "/_imm/log")[1] == [], "log cleared")
    client.close()


def check_faults(server):
    q = [("ProjectName", "immtest"), ("MaxResults", "4")]
    client = Client(server)

    def fresh():
        return client.v3_request(q)

    server.fault("throttle", retry_after_ms=250)
    resp = client.v3(q)
    check(resp.status == 429 and resp.json()["Code"] == "Throttling.User" and resp.headers.get("x-acs-retry-after") == "250"
          and resp.json()["Message"] == "Request was denied due to user flow control.", "throttle")
    server.fault("unavailable")
    check((client.v3(q).status, client.v3(q).status) == (503, 200), "unavailable, once")
    server.fault("internal")
    check(client.v3(q).json()["Code"] == "InternalError", "internal")
    server.fault("throttle", count=2)
    server.fault("internal")
    check([client.v3(q).status for _ in range(4)] == [429, 429, 500, 200], "FIFO with counts")
    server.fault("unavailable", count=-1)
    check([client.v3(q).status for _ in range(3)] == [503] * 3, "count -1 repeats")
    check(server.control("GET", "/_imm/faults")[1][0]["count"] == -1, "GET /_imm/faults lists rules")
    server.control("DELETE", "/_imm/faults")
    check(client.v3(q).status == 200, "DELETE /_imm/faults clears")
    server.fault("throttle")
    check(client.v3(q, secret="bad").json()["Code"] == "SignatureDoesNotMatch", "faults apply only after signature passes")
    check(client.v3(q).status == 429, "...and the fault is still queued for the next good request")
    check(server.control("POST", "/_imm/faults", {"mode": "nonsense"})[0] == 400, "unknown fault mode refused")
    check(server.control("POST", "/_imm/faults", {"mode": "slow", "delay": "x"})[0] == 400, "non-numeric option refused")

    server.fault("reset")
    data, err = raw_exchange(server.port, fresh())
    check(data == b"" and isinstance(err, ConnectionResetError), f"reset -> RST, no data ({err!r})")
    server.fault("reset_mid_body")
    data, err = raw_exchange(server.port, fresh())
    # Linux hands over data that arrived before the RST, so the half body is always seen.
    status, headers, body = split_response(data)
    check(isinstance(err, ConnectionResetError) and status == 200 and len(body) == int(headers["content-length"]) // 2,
          f"reset_mid_body: half the body, then RST ({err!r})")
    server.fault("slow", delay=0.3)
    resp = client.v3(q)
    check(resp.status == 200 and resp.elapsed >= 0.3, f"slow ({resp.elapsed:.2f}s)")
    server.fault("stall", delay=0.5)
    start = time.monotonic()
    data, err = raw_exchange(server.port, fresh())
    check(data == b"" and err is None and 0.45 <= time.monotonic() - start < 5, "stall: silence, then a clean close")
    server.fault("trickle", interval=0.002)
    resp = Client(server).v3([("ProjectName", "immtest"), ("MaxResults", "1")])
    check(resp.status == 200 and len(resp.json()["Bindings"]) == 1 and resp.elapsed >= len(resp.body) * 0.002,
          f"trickle ({len(resp.body)} bytes in {resp.elapsed:.2f}s)")
    server.fault("truncated")
    data, err = raw_exchange(server.port, fresh())
    status, headers, body = split_response(data)
    check(err is None and status == 200 and len(body) == int(headers["content-length"]) // 2, "truncated: half, then FIN")
    server.fault("overrun")
    data, err = raw_exchange(server.port, fresh())
    status, headers, body = split_response(data)
    check(status == 200 and len(body) > int(headers["content-length"]) and json.loads(body)["Bindings"],
          "overrun: more body than Content-Length")
    for mode, test in [
        ("malformed", lambda r: r.status == 200 and r.body.startswith(b'{"RequestId":"') and r.body.endswith(b'"ProjectName":')),
        ("not_object", lambda r: r.status == 200 and r.json() == [1, 2, 3]),
        ("bindings_not_array", lambda r: r.status == 200 and r.json()["Bindings"] == "oops"),
        ("html502", lambda r: r.status == 502 and r.headers["content-type"] == "text/html" and b"nginx" in r.body),
    ]:
        server.fault(mode)
        check(test(Client(server).v3(q)), mode)
    server.fault("gzip_bomb")
    resp = client.v3(q)
    inflater, total, rest = zlib.decompressobj(31), 0, resp.body
    while rest:
        total += len(inflater.decompress(rest, 1 << 20))
        rest = inflater.unconsumed_tail
    check(resp.headers.get("content-encoding") == "gzip" and len(resp.body) < 1 << 20 and total == 100 << 20,
          f"gzip_bomb: {len(resp.body)} bytes inflate to {total}")
    server.fault("gzip_bomb", size=1000)
    check(len(zlib.decompress(client.v3(q).body, 31)) == 1000, "gzip_bomb size option")
    server.fault("big")
    resp = client.v3(q)
    check(resp.status == 200 and abs(len(resp.body) - (5 << 20)) < 4096 and len(resp.json()["Bindings"]) > 10000,
          f"big: {len(resp.body)} bytes")
    log = server.control("GET", "/_imm/log")[1]
    check(log[-1]["fault"] == "big" and log[-2]["fault"] == "gzip_bomb" and log[-2]["gzip"] is True, "log records fault")
    client.close()


def check_concurrency(server):
    server.fault("slow", count=4, delay=0.6)
    results = []

    def one():
        results.append(Client(server).v3([("ProjectName", "immtest"), ("MaxResults", "1")]).status)

    start = time.monotonic()
    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - start
    check(results == [200] * 4 and took < 1.5, f"4 slow requests overlap ({took:.2f}s)")


def check_data_control(server):
    client = Client(server)

    def binding(i):
        return {"ProjectName": "p", "DatasetName": "d", "URI": f"oss://b/{i:04d}", "State": "Ready",
                "Phase": "FullScanning", "CreateTime": "", "UpdateTime": "", "Reason": ""}

    for n, max_results, want_pages in [(0, "0", 1), (1, "0", 1), (100, "0", 1), (101, "0", 2), (200, "200", 1),
                                       (200, "100", 2)]:
        status, _ = server.control("POST", "/_imm/data", {"Projects": ["p"], "Bindings": [binding(i) for i in range(n)]})
        items, pages = page_all(client.v3, [("ProjectName", "p"), ("MaxResults", max_results)])
        check(status == 200 and len(items) == n and pages == want_pages,
              f"/_imm/data with {n} bindings, MaxResults={max_results}: {pages} pages")
    check(server.control("POST", "/_imm/data", {"Bindings": "x"})[0] == 400, "bad data refused")
    check(client.v3([("ProjectName", "immtest")]).json()["Code"] == "ResourceNotFound", "data replaced")
    nonce = uuid.uuid4().hex
    server.fault("throttle", count=-1)
    server.control("POST", "/_imm/reset")
    check(client.v3([("ProjectName", "immtest")], nonce=nonce).status == 200, "reset: data back, faults cleared")
    check(len(server.control("GET", "/_imm/log")[1]) == 1, "reset: log cleared")
    server.control("POST", "/_imm/reset")
    check(client.v3([("ProjectName", "immtest")], nonce=nonce).status == 200, "reset: nonces forgotten")
    client.close()


def check_lifecycle(server):
    """The binding lifecycle, ListProjects / ListDatasets, CreateProject with Tag."""
    client = Client(server)

    def call(action, **params):
        resp = client.v3(list(params.items()), action=action)
        return resp.status, resp.json()

    key = {"ProjectName": "immtest", "DatasetName": "photos-2024", "URI": "oss://lifecycle-bucket/in/"}
    server.control("POST", "/_imm/settings", {"binding_start_delay": 0.4})
    status, doc = call("CreateBinding", **key)
    check(status == 200 and doc["Binding"]["State"] == "Ready" and doc["Binding"]["URI"] == key["URI"],
          f"CreateBinding -> Ready: {status} {doc}")
    check(call("CreateBinding", **key)[1].get("Code") == "ResourceAlreadyExist", "CreateBinding twice -> 409")
    check(call("GetBinding", **key)[1]["Binding"]["State"] == "Ready", "GetBinding at once: still Ready")
    time.sleep(0.5)
    b = call("GetBinding", **key)[1]["Binding"]
    check(b["State"] == "Running" and b["Phase"] == "FullScanning", f"Running after the start delay: {b}")
    check(call("StopBinding", Reason="maintenance", **key)[0] == 200, "StopBinding")
    b = call("GetBinding", **key)[1]["Binding"]
    check(b["State"] == "Stopped" and b["Reason"] == "maintenance", f"Stopped with the reason: {b}")
    check(call("ResumeBinding", **key)[0] == 200 and call("GetBinding", **key)[1]["Binding"]["State"] == "Running",
          "ResumeBinding -> Running")
    listed = [x["URI"] for x in call("ListBindings", ProjectName="immtest", DatasetName="photos-2024",
                                     MaxResults="200")[1]["Bindings"]]
    check(key["URI"] in listed, "ListBindings lists the new binding")
    status, forced = server.control("POST", "/_imm/binding-state", dict(key, State="Failed", Reason="no access"))
    check(status == 200 and call("GetBinding", **key)[1]["Binding"]["State"] == "Failed", "binding-state Failed")
    check(call("DeleteBinding", **key)[0] == 200, "DeleteBinding")
    check(call("GetBinding", **key)[1].get("Code") == "ResourceNotFound", "GetBinding after delete -> 404")
    check(call("DeleteBinding", **key)[1].get("Code") == "ResourceNotFound", "DeleteBinding twice -> 404")
    check(call("CreateBinding", **dict(key, URI="s3://x/"))[1].get("Code") == "InvalidParameter.URI", "bad URI")
    check(call("CreateBinding", ProjectName="immtest", DatasetName="photos-2024")[1].get("Code")
          == "MissingParameter", "CreateBinding without URI")
    check(call("CreateBinding", **dict(key, DatasetName="nope"))[1].get("Code") == "ResourceNotFound",
          "CreateBinding in a dataset that does not exist")

    tag = json.dumps([{"Key": "env", "Value": "test"}])
    status, doc = call("CreateProject", ProjectName="zz-selftest", Description="d", Tag=tag)
    check(status == 200 and doc["Project"]["Tags"] == [{"TagKey": "env", "TagValue": "test"}], f"CreateProject {doc}")
    check(call("CreateProject", ProjectName="x", Tag="[1")[1].get("Code") == "InvalidParameter.Tag", "bad Tag")
    status, doc = call("ListProjects", Tag=tag)
    check(status == 200 and [p["ProjectName"] for p in doc["Projects"]] == ["zz-selftest"], f"ListProjects Tag {doc}")
    names, token, pages = [], None, 0
    while True:
        status, doc = call("ListProjects", MaxResults="2", **({"NextToken": token} if token else {}))
        names += [p["ProjectName"] for p in doc["Projects"]]
        pages += 1
        token = doc.get("NextToken")
        if not token:
            break
    check(names == ["empty-project", "immtest", "media-prod", "zz-selftest"] and pages == 2,
          f"ListProjects pages: {names} in {pages}")
    check([p["ProjectName"] for p in call("ListProjects", Prefix="im")[1]["Projects"]] == ["immtest"],
          "ListProjects Prefix")
    check(call("CreateDataset", ProjectName="empty-project", DatasetName="ds1")[0] == 200, "CreateDataset")
    datasets = call("ListDatasets", ProjectName="empty-project")[1]["Datasets"]
    check([d["DatasetName"] for d in datasets] == ["ds1"], f"ListDatasets {datasets}")
    check(call("ListDatasets", ProjectName="nope")[1].get("Code") == "ResourceNotFound", "ListDatasets 404")
    expected = sorted({b["DatasetName"] for b in sorted_file_bindings("immtest")})
    check([d["DatasetName"] for d in call("ListDatasets", ProjectName="immtest", MaxResults="200")[1]["Datasets"]]
          == expected, "ListDatasets: the datasets of the bindings")

    # reset_after: the action happens, the reply does not
    server.fault("reset_after")
    try:
        client.v3(list(dict(key, URI="oss://lifecycle-bucket/").items()), action="CreateBinding")
        check(False, "reset_after fault resets")
    except (ConnectionError, http.client.HTTPException):
        client.close()
    client = Client(server)
    check(call("GetBinding", **dict(key, URI="oss://lifecycle-bucket/"))[0] == 200, "reset_after: the action happened")
    server.control("POST", "/_imm/reset")
    check(server.control("GET", "/_imm/settings")[1] == {"binding_start_delay": 0.3, "task_delay": 0.2},
          "reset: settings back")
    check(call("ListProjects")[1]["Projects"][-1]["ProjectName"] == "media-prod", "reset: created project gone")
    client.close()


def check_cli_fault():
    with Server("--quiet", "--fault", "throttle:2", "--fault", "internal") as server:
        client = Client(server)
        check([client.v3([("ProjectName", "immtest")]).status for _ in range(4)] == [429, 429, 500, 200],
              "--fault throttle:2 --fault internal")
        client.close()


def check_logging_and_banner():
    server = Server()
    check(re.fullmatch(rf"imm_server listening on http://127\.0\.0\.1:{server.port}", server.banner), "banner line")
    Client(server).v3([("ProjectName", "immtest")], headers={"accept-encoding": "gzip"})
    Client(server).v3([("ProjectName", "immtest")], secret="nope")
    server.control("GET", "/_imm/health")
    err = server.stop()
    lines = [l for l in err.splitlines() if l.startswith("imm_server: #")]
    check(len(lines) == 2 and "gzip" in lines[0] and "400" in lines[1], f"one log line per API request: {lines}")
    check(SECRET not in err and "Signature=" not in err, "no secrets in the stderr log")


def check_tls():
    certs = tempfile.mkdtemp(prefix="imm-selftest-certs-")
    subprocess.run(["sh", os.path.join(TOOLS, "gen_certs.sh"), certs], check=True)
    try:
        ctx = ssl.create_default_context(cafile=os.path.join(certs, "ca.crt"))
        with Server("--quiet", tls_dir=certs, ssl_ctx=ctx) as server:
            check(server.banner == f"imm_server listening on https://127.0.0.1:{server.port}", "TLS banner")
            check(server.control("GET", "/_imm/health") == (200, {"ok": True}), "TLS health")
            client = Client(server, ssl_ctx=ctx, host=f"127.0.0.1:{server.port}")
            items, pages = page_all(client.v3, [("ProjectName", "media-prod"), ("MaxResults", "40")])
            check(items == sorted_file_bindings("media-prod") and pages == 3, "TLS paging")
            server.fault("reset")
            try:
                client.v3([("ProjectName", "immtest")])
                check(False, "TLS reset fault")
            except (ConnectionError, ssl.SSLError, http.client.HTTPException):
                check(True, "TLS reset fault")
            other = ssl.create_default_context(cafile=os.path.join(certs, "other-ca.crt"))
            try:
                http.client.HTTPSConnection("127.0.0.1", server.port, context=other, timeout=5).request("GET", "/_imm/health")
                check(False, "other-ca refused")
            except ssl.SSLCertVerificationError:
                check(True, "other-ca refused")
            ip_ctx = ssl.create_default_context(cafile=os.path.join(certs, "ca.crt"))
            with urllib.request.urlopen(f"https://127.0.0.1:{server.port}/_imm/health", context=ip_ctx) as r:
                check(r.status == 200, "IP SAN 127.0.0.1 verifies")
            if shutil.which("curl"):
                check_tls_with_curl(server, certs)
            client.close()
            stats = server.control("GET", "/_imm/stats")[1]
            check(stats["requests"] >= 4, f"TLS stats {stats}")
    finally:
        shutil.rmtree(certs)


def check_tls_with_curl(server, certs):
    base = f"https://127.0.0.1:{server.port}"
    out = subprocess.run(["curl", "-sS", "--cacert", os.path.join(certs, "ca.crt"), f"{base}/_imm/health"],
                         capture_output=True, text=True)
    check(out.returncode == 0 and json.loads(out.stdout) == {"ok": True}, f"curl --cacert health: {out.stderr}")
    method, target, headers, _ = Client(server, host=f"127.0.0.1:{server.port}").v3_request(
        [("ProjectName", "immtest"), ("MaxResults", "2")])
    args = ["curl", "-sS", "--compressed", "--cacert", os.path.join(certs, "ca.crt"), "-X", method]
    for name, value in headers.items():
        if name != "host":          # curl sends the same Host itself
            args += ["-H", f"{name}: {value}"]
    out = subprocess.run(args + [base + target], capture_output=True, text=True)
    check(out.returncode == 0 and len(json.loads(out.stdout)["Bindings"]) == 2, f"curl signed V3 request over TLS {out.stdout[:200]}")
    out = subprocess.run(["curl", "-sS", "--cacert", os.path.join(certs, "other-ca.crt"), f"{base}/_imm/health"],
                         capture_output=True, text=True)
    check(out.returncode == 60, f"curl with other-ca fails verification (rc={out.returncode})")


def check_nonce_cache():
    """The server's memory of nonces is bounded: by the validity window, and by a cap."""
    sys.path.insert(0, SERVER_DIR)
    from imm_server.signing import NonceCache
    cache = NonceCache(cap=100)
    for i in range(1000):
        cache.add(f"n{i}")
    check(len(cache) == 100, f"the nonce cache holds at most its cap ({len(cache)} for a cap of 100)")
    check(not cache.add("n999"), "a recent nonce is still refused at the cap")
    check(cache.add("n0"), "the oldest nonces went first")
    cache = NonceCache(ttl=0.05)
    cache.add("old")
    time.sleep(0.1)
    cache.add("new")
    check(len(cache) == 1 and not cache.add("new"), "an expired nonce is forgotten, a live one kept")


def api_caller(server):
    client = Client(server)

    def call(action, **params):
        # JSON-encoded parameters are given as Python objects here
        query = [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in params.items()]
        resp = client.v3(query, action=action)
        return resp.status, resp.json()
    return client, call


def check_validation_against_description(server):
    """Every request checked against api/imm-2020-09-30.json before any action."""
    client, call = api_caller(server)
    status, doc = call("GetTask", ProjectName="immtest", TaskType="MediaConvert")
    check((status, doc.get("Code")) == (400, "MissingParameter") and "TaskId" in doc.get("Message", ""),
          f"GetTask without TaskId -> 400 MissingParameter: {status} {doc}")
    status, doc = call("CreateMediaConvertTask", ProjectName="immtest", Sources="[1")
    check((status, doc.get("Code")) == (400, "InvalidParameter.Sources"), f"Sources not JSON -> 400: {status} {doc}")
    status, doc = call("CreateMediaConvertTask", ProjectName="immtest", Sources=[{"URI": 5}])
    check((status, doc.get("Code")) == (400, "InvalidParameter.Sources") and "Sources[0].URI" in doc["Message"],
          f"Sources[0].URI a number -> 400 naming the path: {status} {doc}")
    status, doc = call("DetectImageLabels", ProjectName="immtest", SourceURI="oss://b/o.jpg", Threshold="high")
    check((status, doc.get("Code")) == (400, "InvalidParameter.Threshold"), f"a number that is not: {status} {doc}")
    status, doc = call("GetDataset", ProjectName="immtest", DatasetName="dataset001", WithStatistics="yes")
    check((status, doc.get("Code")) == (400, "InvalidParameter.WithStatistics"), f"a boolean that is not: {doc}")
    check(set(doc) >= {"RequestId", "HostId", "Code", "Message", "Recommend"}, "validation errors: service shape")
    client.close()


def check_every_action_answers(server):
    """All actions of the description answer 200 with every response field (a
    stateful action may answer 404 for the resource it names: then its error is
    in the service's shape)."""
    with open(API, encoding="utf-8") as f:
        desc = json.load(f)
    client, call = api_caller(server)
    answered, missing = 0, []
    for name, action in sorted(desc["actions"].items()):
        params = {}
        for p in action["params"]:
            # the required ones, and the names a family's resource needs
            if not p.get("required") and p["name"] not in ("DatasetName", "URI"):
                continue
            params[p["name"]] = sample_value(desc, p["type"], p)
        status, doc = call(name, **params)
        if status == 200:
            answered += 1
            # NextToken is absent on a last page; SimpleQuery answers
            # Aggregations only when the request asked for them
            absent = [f for f in action["response"]["fields"] if f not in doc and f != "NextToken"
                      and not (name == "SimpleQuery" and f == "Aggregations" and "Aggregations" not in params)]
            if absent:
                missing.append(f"{name}: {absent}")
        elif not (status in (404, 409) and doc.get("Code") in ("ResourceNotFound", "ResourceAlreadyExist",
                                                                 "ResourceNotEmpty")):
            missing.append(f"{name}: {status} {doc.get('Code')} {doc.get('Message')}")
    check(not missing, f"every action answers ({answered} of {len(desc['actions'])} with 200, the others with "
                       f"a resource error): {missing[:6]}")
    client.close()




def sample_value(desc, typ, spec=None, depth=0):
    """A value of type typ with every required field; scalars as the text sent."""
    if spec is not None and spec.get("encoding") == "scalar":
        name = spec["name"]
        known = {"ProjectName": "immtest", "DatasetName": "dataset001", "TaskType": "MediaConvert",
                 "AcceptLanguage": "en", "OSSBucket": "selftest-bucket"}
        if name in known:
            return known[name]
        return {"number": "1", "boolean": "true"}.get(typ, spec.get("example") or "x")
    if typ == "string":
        return "oss://bucket/object.jpg"
    if typ == "number":
        return 1
    if typ == "boolean":
        return True
    if typ == "any":
        return "x"
    if "array" in typ:
        return [sample_value(desc, typ["array"], None, depth + 1)] if depth < 4 else []
    if "map" in typ:
        return {"k": sample_value(desc, typ["map"], None, depth + 1)} if depth < 4 else {}
    model = desc["models"].get(typ["model"], {"fields": []})
    return {f["name"]: sample_value(desc, f["type"], None, depth + 1)
            for f in model["fields"] if f.get("required") and depth < 4}


def check_tasks(server):
    """Create*Task starts a task: Running, then Succeeded after the delay, or
    Failed as a task outcome says; GetTask and ListTasks filter and page."""
    client, call = api_caller(server)
    server.control("POST", "/_imm/settings", {"task_delay": 0.3})
    status, doc = call("CreateMediaConvertTask", ProjectName="immtest", Sources=[{"URI": "oss://b/in.mp4"}],
                       UserData='{"id": 7}', Tags={"env": "test"})
    check(status == 200 and doc.get("TaskId", "").startswith("MediaConvert-") and doc.get("EventId"),
          f"CreateMediaConvertTask -> TaskId, EventId: {status} {doc}")
    tid = doc.get("TaskId", "")
    status, task = call("GetTask", ProjectName="immtest", TaskType="MediaConvert", TaskId=tid)
    check(status == 200 and task.get("Status") == "Running" and task.get("UserData") == '{"id": 7}'
          and task.get("Tags") == {"env": "test"}, f"GetTask at once: Running, UserData and Tags kept: {task}")
    time.sleep(0.45)
    status, task = call("GetTask", ProjectName="immtest", TaskType="MediaConvert", TaskId=tid)
    check(task.get("Status") == "Succeeded" and task.get("EndTime"), f"Succeeded after the delay: {task}")
    check(call("GetTask", ProjectName="immtest", TaskType="OfficeConversion", TaskId=tid)[1].get("Code")
          == "ResourceNotFound", "GetTask with another TaskType -> 404")

    status, _ = server.control("POST", "/_imm/task-outcomes", {"TaskType": "OfficeConversion", "Status": "Failed",
                                                              "Code": "InvalidFile", "Message": "not a document"})
    check(status == 200, "task outcome queued")
    check(server.control("POST", "/_imm/task-outcomes", {"Status": "Maybe"})[0] == 400, "bad outcome refused")
    server.control("POST", "/_imm/settings", {"task_delay": 0})
    status, doc = call("CreateOfficeConversionTask", ProjectName="immtest", SourceURI="oss://b/a.docx",
                       TargetType="pdf")
    task = call("GetTask", ProjectName="immtest", TaskType="OfficeConversion", TaskId=doc.get("TaskId", ""))[1]
    check((task.get("Status"), task.get("Code"), task.get("Message")) == ("Failed", "InvalidFile", "not a document"),
          f"a queued outcome fails the task: {task}")
    doc2 = call("CreateOfficeConversionTask", ProjectName="immtest", SourceURI="oss://b/a.docx", TargetType="pdf")[1]
    task = call("GetTask", ProjectName="immtest", TaskType="OfficeConversion", TaskId=doc2.get("TaskId", ""))[1]
    check(task.get("Status") == "Succeeded", f"an outcome is used once: {task}")

    for i in range(5):
        call("CreateFileCompressionTask", ProjectName="immtest", TargetURI=f"oss://b/{i}.zip")
    seen, token, pages = [], None, 0
    while pages < 10:
        extra = {"NextToken": token} if token else {}
        status, doc = call("ListTasks", ProjectName="immtest", TaskTypes=["FileCompression"], MaxResults="2", **extra)
        seen += [t["TaskId"] for t in doc.get("Tasks", [])]
        pages += 1
        token = doc.get("NextToken")
        if not token:
            break
    check(len(seen) == 5 and len(set(seen)) == 5 and pages == 3, f"ListTasks pages by 2 with TaskTypes: {pages} {seen}")
    failed = call("ListTasks", ProjectName="immtest", Status="Failed")[1].get("Tasks", [])
    check([t["TaskType"] for t in failed] == ["OfficeConversion"], f"ListTasks Status=Failed: {failed}")
    doc = call("ListTasks", ProjectName="immtest", MaxResults="101")[1]
    check(doc.get("Code") == "InvalidParameter.MaxResults", "ListTasks MaxResults over 100 -> 400")
    future = {"Start": "2999-01-01T00:00:00Z"}
    check(call("ListTasks", ProjectName="immtest", StartTimeRange=future)[1].get("Tasks") == [],
          "ListTasks StartTimeRange in the future: none")
    client.close()


def check_families(server):
    """Attachments, triggers, batches, stories and clusters keep state."""
    client, call = api_caller(server)
    check(call("AttachOSSBucket", ProjectName="immtest", OSSBucket="b1", Description="d")[0] == 200, "attach")
    check(call("AttachOSSBucket", ProjectName="immtest", OSSBucket="b1")[1].get("Code") == "ResourceAlreadyExist",
          "attach twice -> 409")
    doc = call("GetOSSBucketAttachment", OSSBucket="b1")[1]
    check(doc.get("ProjectName") == "immtest" and doc.get("Description") == "d", f"GetOSSBucketAttachment {doc}")
    doc = call("ListAttachedOSSBuckets", ProjectName="immtest")[1]
    check([b.get("OSSBucket") for b in doc.get("AttachedOSSBuckets", [])] == ["b1"], f"ListAttachedOSSBuckets {doc}")
    check(call("DetachOSSBucket", OSSBucket="b1")[0] == 200 and
          call("GetOSSBucketAttachment", OSSBucket="b1")[1].get("Code") == "ResourceNotFound", "detach")

    for noun, plural in (("Trigger", "Triggers"), ("Batch", "Batches")):
        ids = []
        for i in range(3):
            status, doc = call(f"Create{noun}", ProjectName="immtest", ServiceRole="AliyunIMMDefaultRole",
                               Input={"OSS": {"Bucket": "b", "Prefix": f"p{i}/"}},
                               Actions=[{"Name": "doc/convert"}], Tags={"n": str(i)})
            ids.append(doc.get("Id"))
        check(all(ids) and len(set(ids)) == 3, f"Create{noun} -> Id: {ids}")
        rec = call(f"Get{noun}", ProjectName="immtest", Id=ids[0])[1].get(noun, {})
        check(rec.get("State") == "Running" and rec.get("Input", {}).get("OSS", {}).get("Prefix") == "p0/",
              f"Get{noun}: {rec}")
        check(call(f"Suspend{noun}", ProjectName="immtest", Id=ids[0])[0] == 200 and
              call(f"Get{noun}", ProjectName="immtest", Id=ids[0])[1][noun]["State"] == "Suspended", f"Suspend{noun}")
        listed = call(f"List{plural}", ProjectName="immtest", State="Suspended")[1].get(plural, [])
        check([r["Id"] for r in listed] == [ids[0]], f"List{plural} State=Suspended")
        check(call(f"Resume{noun}", ProjectName="immtest", Id=ids[0])[0] == 200, f"Resume{noun}")
        page1 = call(f"List{plural}", ProjectName="immtest", MaxResults="2")[1]
        page2 = call(f"List{plural}", ProjectName="immtest", MaxResults="2", NextToken=page1.get("NextToken", ""))[1]
        got = [r["Id"] for r in page1.get(plural, []) + page2.get(plural, [])]
        check(got == ids and "NextToken" not in page2, f"List{plural} pages: {got}")
        check(call(f"Update{noun}", ProjectName="immtest", Id=ids[1], Tags={"n": "x"})[0] == 200 and
              call(f"Get{noun}", ProjectName="immtest", Id=ids[1])[1][noun]["Tags"] == {"n": "x"}, f"Update{noun}")
        check(call(f"Delete{noun}", ProjectName="immtest", Id=ids[2])[0] == 200 and
              call(f"Get{noun}", ProjectName="immtest", Id=ids[2])[1].get("Code") == "ResourceNotFound",
              f"Delete{noun}")

    scope = {"ProjectName": "immtest", "DatasetName": "dataset001"}
    status, doc = call("CreateCustomizedStory", StoryName="trip", StoryType="TravelStory", StorySubType="Solo",
                       Cover={"URI": "oss://b/c.jpg"}, Files=[{"URI": "oss://b/1.jpg"}], **scope)
    oid = doc.get("ObjectId")
    check(status == 200 and oid, f"CreateCustomizedStory -> ObjectId: {doc}")
    check(call("AddStoryFiles", ObjectId=oid, Files=[{"URI": "oss://b/2.jpg"}], **scope)[0] == 200, "AddStoryFiles")
    story = call("GetStory", ObjectId=oid, **scope)[1].get("Story", {})
    check([f["URI"] for f in story.get("Files", [])] == ["oss://b/1.jpg", "oss://b/2.jpg"], f"GetStory files {story}")
    check(call("RemoveStoryFiles", ObjectId=oid, Files=[{"URI": "oss://b/1.jpg"}], **scope)[0] == 200 and
          len(call("GetStory", ObjectId=oid, **scope)[1]["Story"]["Files"]) == 1, "RemoveStoryFiles")
    check(call("UpdateStory", ObjectId=oid, StoryName="trip 2", **scope)[0] == 200 and
          [s["StoryName"] for s in call("QueryStories", StoryType="TravelStory", **scope)[1]["Stories"]]
          == ["trip 2"], "UpdateStory, QueryStories")
    status, doc = call("CreateStory", StoryType="TimeMemory", **scope)
    check(status == 200 and doc.get("TaskId", "").startswith("CreateStory-"), f"CreateStory -> a task {doc}")
    check(call("DeleteStory", ObjectId=oid, **scope)[0] == 200 and
          call("GetStory", ObjectId=oid, **scope)[1].get("Code") == "ResourceNotFound", "DeleteStory")

    clusters = [dict(scope, ObjectId=f"Cluster-{i}", Name=f"c{i}") for i in range(3)]
    check(server.control("POST", "/_imm/records", {"FigureClusters": clusters})[0] == 200, "records loaded")
    doc = call("QueryFigureClusters", MaxResults="2", WithTotalCount="true", **scope)[1]
    check(len(doc.get("FigureClusters", [])) == 2 and doc.get("TotalCount") == 3 and doc.get("NextToken"),
          f"QueryFigureClusters page: {doc}")
    check(call("UpdateFigureCluster", FigureCluster={"ObjectId": "Cluster-1", "Name": "Ann"}, **scope)[0] == 200 and
          call("GetFigureCluster", ObjectId="Cluster-1", **scope)[1]["FigureCluster"]["Name"] == "Ann",
          "UpdateFigureCluster, GetFigureCluster")
    doc = call("BatchGetFigureCluster", ObjectIds=["Cluster-0", "Cluster-2", "nope"], **scope)[1]
    check([c["ObjectId"] for c in doc.get("FigureClusters", [])] == ["Cluster-0", "Cluster-2"], "BatchGetFigureCluster")

    check(call("CreateDataset", ProjectName="immtest", DatasetName="tmp-ds", DatasetMaxFileCount="10")[0] == 200,
          "CreateDataset")
    check(call("UpdateDataset", ProjectName="immtest", DatasetName="tmp-ds", Description="x")[0] == 200 and
          call("GetDataset", ProjectName="immtest", DatasetName="tmp-ds")[1]["Dataset"]["Description"] == "x",
          "UpdateDataset, GetDataset")
    check(call("DeleteDataset", ProjectName="immtest", DatasetName="tmp-ds")[0] == 200 and
          call("GetDataset", ProjectName="immtest", DatasetName="tmp-ds")[1].get("Code") == "ResourceNotFound",
          "DeleteDataset")
    client.close()


def check_analysis(server):
    """Actions without state: the documented shape, the same for the same request."""
    client, call = api_caller(server)
    a = call("DetectImageLabels", ProjectName="immtest", SourceURI="oss://b/1.jpg")[1]
    b = call("DetectImageLabels", ProjectName="immtest", SourceURI="oss://b/1.jpg")[1]
    c = call("CompareImageFaces", ProjectName="immtest", Source={"URI1": "oss://b/1.jpg", "URI2": "oss://b/2.jpg"})[1]
    d = call("CompareImageFaces", ProjectName="immtest", Source={"URI1": "oss://b/1.jpg", "URI2": "oss://b/3.jpg"})[1]
    check(isinstance(a.get("Labels"), list) and a["Labels"] == b["Labels"], f"DetectImageLabels shape {a}")
    check(isinstance(c.get("Similarity"), (int, float)) and c["Similarity"] != d["Similarity"],
          f"CompareImageFaces: a number derived from the request {c} {d}")
    t = call("GenerateWebofficeToken", ProjectName="immtest", SourceURI="oss://b/a.docx")[1]
    check(all(isinstance(t.get(k), str) and t[k] for k in ("AccessToken", "RefreshToken", "WebofficeURL")),
          f"GenerateWebofficeToken {t}")
    client.close()


def check_canned_replies(server):
    client, call = api_caller(server)
    status, _ = server.control("POST", "/_imm/replies", {"action": "GetProject", "body": {"Project": {"X": 1}}})
    check(status == 200, "canned reply queued")
    status, doc = call("GetProject", ProjectName="immtest")
    check(status == 200 and doc.get("Project") == {"X": 1} and doc.get("RequestId"), f"canned body: {doc}")
    check(call("GetProject", ProjectName="immtest")[1].get("Project", {}).get("ProjectName") == "immtest",
          "a canned reply is used once")
    server.control("POST", "/_imm/replies", {"action": "DetectImageLabels", "match": {"SourceURI": "oss://b/2.jpg"},
                                             "error": {"code": "Throttling.User", "message": "slow", "status": 429}})
    check(call("DetectImageLabels", ProjectName="immtest", SourceURI="oss://b/1.jpg")[0] == 200,
          "a canned error with match: other requests pass it by")
    status, doc = call("DetectImageLabels", ProjectName="immtest", SourceURI="oss://b/2.jpg")
    check((status, doc.get("Code"), doc.get("Message")) == (429, "Throttling.User", "slow"), f"canned error {doc}")
    for bad in ({"action": "Nope"}, {"action": "GetTask", "status": 99}, {"action": "GetTask", "body": [1]},
                {"action": "GetTask", "error": {"message": "no code"}}, {"action": "GetTask", "extra": 1}):
        check(server.control("POST", "/_imm/replies", bad)[0] == 400, f"bad canned reply refused: {bad}")
    client.close()


def check_notifications(server):
    """A task's end is POSTed to the notification target, MNS-style."""
    got = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            got.append((self.path, dict(self.headers), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    receiver = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    client, call = api_caller(server)
    try:
        url = f"http://127.0.0.1:{receiver.server_address[1]}/mns"
        check(server.control("POST", "/_imm/notify-target", {"url": "http://example.com/x"})[0] == 400,
              "a notify target off loopback is refused")
        check(server.control("POST", "/_imm/notify-target", {"url": url})[0] == 200, "notify target set")
        server.control("POST", "/_imm/settings", {"task_delay": 0.1})
        server.control("POST", "/_imm/task-outcomes", {"Status": "Failed", "Code": "Bad", "Message": "no"})
        doc = call("CreateFileCompressionTask", ProjectName="immtest", TargetURI="oss://b/x.zip", UserData="u1",
                   Notification={"MNS": {"TopicName": "t"}})[1]
        call("CreateFileCompressionTask", ProjectName="immtest", TargetURI="oss://b/y.zip")   # no Notification
        deadline = time.time() + 5
        while not got and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        check(len(got) == 1, f"one notification, for the task that asked: {len(got)}")
        if got:
            path, headers, body = got[0]
            envelope = json.loads(body)
            message = json.loads(envelope.get("Message", "{}"))
            lower = {k.lower(): v for k, v in headers.items()}
            check(path == "/mns" and lower.get("x-mns-version") == "2015-06-06", f"MNS-style push: {headers}")
            check(envelope.get("MessageMD5") == hashlib.md5(envelope["Message"].encode()).hexdigest().upper(),
                  "MessageMD5 of the message")
            check({k: message.get(k) for k in ("TaskId", "TaskType", "Status", "Code", "Message", "UserData",
                                                "ProjectName")} ==
                  {"TaskId": doc.get("TaskId"), "TaskType": "FileCompression", "Status": "Failed", "Code": "Bad",
                   "Message": "no", "UserData": "u1", "ProjectName": "immtest"} and message.get("EndTime"),
                  f"the task message: {message}")
        sent = server.control("GET", "/_imm/notifications")[1]
        check(len(sent) == 1 and sent[0].get("status") == 204, f"GET /_imm/notifications: {sent}")
    finally:
        receiver.shutdown()
        client.close()


def main():
    check_nonce_cache()
    rc = subprocess.run([sys.executable, SERVER, "--check-vectors", VECTORS], capture_output=True, text=True)
    check(rc.returncode == 0 and rc.stdout.strip().endswith("0 failed"), f"--check-vectors: {rc.stdout.strip()}")
    check_signer_against_vectors()
    with Server("--quiet") as server:
        client = Client(server)
        check(server.control("GET", "/_imm/health") == (200, {"ok": True}), "health")
        check_paging(client)
        check_filters_and_validation(client)
        check_signature_errors(client)
        client.close()
        check_keepalive_gzip_log(server)
        check_faults(server)
        check_concurrency(server)
        check_data_control(server)
        check_lifecycle(server)
    with Server("--quiet") as server:
        check_validation_against_description(server)
        check_tasks(server)
        check_families(server)
        check_analysis(server)
        check_canned_replies(server)
        check_notifications(server)
        check_every_action_answers(server)
    check_security_token()
    check_cli_fault()
    check_logging_and_banner()
    check_tls()
    print(f"{'FAILED' if FAILURES else 'OK'}: {len(FAILURES)} failed checks")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
