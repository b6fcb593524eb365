#!/usr/bin/env python3
"""A hostile HTTP server for the specs (spec/16_hostile_spec.lua).

It answers each request with the next step of a script the spec hands it,
byte for byte: replies no IMM server would send, cut short by a clean close
or a reset, trickled a byte at a time, or nothing at all. Loopback only.

    python3 spec/helpers/hostile.py --port-file FILE [--tls CERTDIR]

FILE receives "PORT CONTROL_PORT". PORT serves the script (HTTPS with
CERTDIR/server.crt and server.key when --tls is given); CONTROL_PORT is plain
HTTP on 127.0.0.1:

    POST /script   body: a JSON list of steps; replaces the script, clears the log
    GET  /log      the requests served so far (JSON list)

Requests take the steps in order; the last step repeats. A step (JSON):

    {"status": 200, "headers": {...}, "body": "..."}   a reply; Content-Length is
                                                       added unless headers set one
                                                       or Transfer-Encoding
    {"raw": [part, ...]}          these bytes instead; a part is a string
                                  (code points < 256 are bytes: "\\u0000" is NUL)
                                  or {"fill": "a", "count": N}
    "cut": N                      send only the first N bytes
    "trickle": S                  send a byte every S seconds
    "end": "keep" | "fin" | "rst" | "stall"
                                  after the bytes: keep the connection for the
                                  next request (the default), close it cleanly,
                                  reset it, or hold it open and say nothing more
                                  until the client goes (at most 60 s)
    {"end": "stall"} alone        accept, read the request and say nothing
"""

import argparse
import json
import os
import socket
import ssl
import struct
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
STATE = {"script": [{"status": 200, "body": "{}"}], "next": 0, "log": []}
MAX_REQUEST = 1 << 20


def next_step():
    with LOCK:
        script = STATE["script"]
        i = min(STATE["next"], len(script) - 1)
        STATE["next"] += 1
        return script[i]


def reply_bytes(step):
    if "raw" in step:
        out = bytearray()
        for part in step["raw"]:
            if isinstance(part, str):
                out += part.encode("latin-1")
            else:
                out += part["fill"].encode("latin-1") * int(part["count"])
        return bytes(out)
    status = int(step.get("status", 200))
    headers = dict(step.get("headers", {}))
    body = step.get("body", "").encode("latin-1")
    lower = {k.lower() for k in headers}
    if "content-length" not in lower and "transfer-encoding" not in lower:
        headers["Content-Length"] = str(len(body))
    if "content-type" not in lower:
        headers["Content-Type"] = "application/json;charset=utf-8"
    head = "HTTP/1.1 %d %s\r\n" % (status, step.get("reason", "X"))
    head += "".join("%s: %s\r\n" % (k, v) for k, v in headers.items())
    return head.encode("latin-1") + b"\r\n" + body


def read_request(conn, buf):
    """Reads one request; returns (record, rest of buf) or (None, None) at EOF."""
    while b"\r\n\r\n" not in buf:
        data = conn.recv(65536)
        if not data:
            return None, None
        buf += data
        if len(buf) > MAX_REQUEST:
            return None, None
    head, _, buf = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target = lines[0].split(" ")[:2]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    n = int(headers.get("content-length", "0") or "0")
    while len(buf) < n:
        data = conn.recv(65536)
        if not data:
            return None, None
        buf += data
    body, buf = buf[:n], buf[n:]
    url = urllib.parse.urlsplit(target)
    params = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
    if "form-urlencoded" in headers.get("content-type", ""):
        params.update(urllib.parse.parse_qsl(body.decode("latin-1"), keep_blank_values=True))
    return {"method": method, "path": url.path, "params": params, "headers": headers,
            "time": time.time()}, buf


def send(conn, data, step):
    data = data[:int(step["cut"])] if "cut" in step else data
    trickle = step.get("trickle")
    if trickle:
        for i in range(len(data)):
            conn.sendall(data[i:i + 1])
            time.sleep(float(trickle))
    else:
        for i in range(0, len(data), 65536):
            conn.sendall(data[i:i + 65536])


def stall(conn):
    conn.settimeout(60)
    try:
        while conn.recv(65536):
            pass
    except OSError:
        pass


def serve(conn, ctx):
    try:
        if ctx:
            conn = ctx.wrap_socket(conn, server_side=True)
        buf = b""
        while True:
            rec, buf = read_request(conn, buf)
            if rec is None:
                return
            step = next_step()
            rec["step"] = STATE["next"]
            with LOCK:
                STATE["log"].append(rec)
            if "raw" in step or "status" in step:
                send(conn, reply_bytes(step), step)
            end = step.get("end", "keep")
            if end == "keep":
                continue
            if end == "stall":
                stall(conn)
            elif end == "rst":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif end == "fin":
                conn.shutdown(socket.SHUT_RDWR)
            return
    except (OSError, ValueError, ssl.SSLError):
        return  # the client went away, which is what most steps expect
    finally:
        try:
            conn.close()
        except OSError:
            pass


class Control(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, value):
        body = json.dumps(value).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        with LOCK:
            self.answer(STATE["log"])

    def do_POST(self):
        n = int(self.headers.get("content-length", "0"))
        script = json.loads(self.rfile.read(n) or b"[]")
        with LOCK:
            STATE["script"], STATE["next"], STATE["log"] = script, 0, []
        self.answer({"ok": True})


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port-file", required=True)
    p.add_argument("--tls", metavar="CERTDIR")
    args = p.parse_args()
    ctx = None
    if args.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(args.tls, "server.crt"), os.path.join(args.tls, "server.key"))
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)
    control = ThreadingHTTPServer(("127.0.0.1", 0), Control)
    threading.Thread(target=control.serve_forever, daemon=True).start()
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d %d\n" % (lsock.getsockname()[1], control.server_address[1]))
    os.rename(tmp, args.port_file)
    while True:
        conn, _ = lsock.accept()
        threading.Thread(target=serve, args=(conn, ctx), daemon=True).start()


if __name__ == "__main__":
    main()
