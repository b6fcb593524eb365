#!/usr/bin/env python3
"""A recording forward proxy on loopback, for the proxy specs.

    python3 spec/helpers/proxy.py --port-file F --log-file L
        [--user U --password P] [--tls CERT_DIR]

It speaks, on one port:
  - HTTP CONNECT (a tunnel, for https endpoints);
  - absolute-form requests ("POST http://host:port/ HTTP/1.1"), forwarded to
    the origin with keep-alive on both sides (for http endpoints);
  - SOCKS5 (a first byte of 5), with the no-auth or the user/password method,
    names resolved here (socks5h).
With --user, a request without the right Basic credentials (or SOCKS
user/password) is refused: 407 with Proxy-Authenticate for HTTP, method 0xFF
or auth failure for SOCKS. With --tls the listener speaks TLS (an https://
proxy) with CERT_DIR/server.crt. Only loopback targets are reached: any other
is refused with 403, so no spec can leave the machine through it.

Every request or tunnel appends one JSON line to the log file:
  {"kind": "connect"|"forward"|"socks", "target": "host:port" or the URL,
   "method": ..., "auth": "none"|"ok"|"bad", "status": the proxy's answer,
   "conn": the client connection's number}
Standard library only.
"""
import argparse
import base64
import json
import os
import select
import socket
import ssl
import threading

LOCK = threading.Lock()
ARGS = None


def log(rec):
    with LOCK:
        with open(ARGS.log_file, "a") as f:
            f.write(json.dumps(rec) + "\n")


def loopback(host):
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


class Conn:
    """A buffered reader over a socket (plain or TLS)."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def fill(self):
        data = self.sock.recv(65536)
        if not data:
            return False
        self.buf += data
        return True

    def line(self):
        while b"\n" not in self.buf:
            if len(self.buf) > 65536 or not self.fill():
                return None
        line, _, self.buf = self.buf.partition(b"\n")
        return line.rstrip(b"\r")

    def exact(self, n):
        while len(self.buf) < n:
            if not self.fill():
                return None
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def head(self):
        """Header lines up to the blank line: [(name, value)], or None."""
        headers = []
        while True:
            line = self.line()
            if line is None:
                return None
            if line == b"":
                return headers
            name, _, value = line.partition(b":")
            headers.append((name.strip().decode("latin-1"), value.strip().decode("latin-1")))


def get(headers, name):
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


def check_auth(headers):
    if ARGS.user is None:
        return "none", True
    value = get(headers, "proxy-authorization")
    if value is None:
        return "none", False
    want = "Basic " + base64.b64encode((ARGS.user + ":" + ARGS.password).encode()).decode()
    return ("ok", True) if value == want else ("bad", False)


def deny(c, status, reason, extra=b""):
    c.sock.sendall(b"HTTP/1.1 %d %s\r\n%sContent-Length: 0\r\nConnection: close\r\n\r\n"
                   % (status, reason, extra))


def pipe(a, b):
    """Relays bytes both ways until either side closes."""
    socks = [a, b]
    while True:
        ready, _, _ = select.select(socks, [], [], 30)
        if not ready:
            return
        for s in ready:
            # a TLS socket may hold decrypted bytes select cannot see
            while True:
                try:
                    data = s.recv(65536)
                except (ssl.SSLWantReadError, BlockingIOError):
                    break
                if not data:
                    return
                (b if s is a else a).sendall(data)
                if not (isinstance(s, ssl.SSLSocket) and s.pending()):
                    break


def split_target(target):
    host, _, port = target.rpartition(":")
    return host.strip("[]"), int(port)


def tunnel(c, target, n, auth):
    host, port = split_target(target)
    if not loopback(host):
        log({"kind": "connect", "target": target, "auth": auth, "status": 403, "conn": n})
        return deny(c, 403, b"Forbidden")
    try:
        up = socket.create_connection((host, port), timeout=10)
    except OSError:
        log({"kind": "connect", "target": target, "auth": auth, "status": 502, "conn": n})
        return deny(c, 502, b"Bad Gateway")
    log({"kind": "connect", "target": target, "auth": auth, "status": 200, "conn": n})
    c.sock.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
    if c.buf:
        up.sendall(c.buf)
    try:
        pipe(c.sock, up)
    finally:
        up.close()


def relay_body(src, dst, headers, method, status):
    """Copies one message body from src (a Conn) to dst; False when the
    body ran to the end of the connection."""
    if method == "HEAD" or status in (204, 304) or (status is not None and 100 <= status < 200):
        return True
    te = (get(headers, "transfer-encoding") or "").lower()
    if "chunked" in te:
        while True:
            line = src.line()
            if line is None:
                raise OSError("chunk")
            dst.sendall(line + b"\r\n")
            size = int(line.split(b";")[0], 16)
            if size == 0:
                while True:
                    t = src.line()
                    if t is None:
                        raise OSError("trailer")
                    dst.sendall(t + b"\r\n")
                    if t == b"":
                        return True
            data = src.exact(size + 2)
            if data is None:
                raise OSError("chunk body")
            dst.sendall(data)
    length = get(headers, "content-length")
    if length is not None:
        data = src.exact(int(length))
        if data is None:
            raise OSError("body")
        dst.sendall(data)
        return True
    if status is None:
        return True  # a request without a body
    dst.sendall(src.buf)
    src.buf = b""
    while True:
        data = src.sock.recv(65536)
        if not data:
            return False
        dst.sendall(data)


def forward(c, method, url, version, headers, n, auth):
    """Forwards absolute-form requests on this connection, keep-alive."""
    upstream = {}
    try:
        while True:
            if not url.startswith("http://"):
                log({"kind": "forward", "target": url, "method": method, "auth": auth, "status": 400, "conn": n})
                return deny(c, 400, b"Bad Request")
            rest = url[len("http://"):]
            authority, slash, path = rest.partition("/")
            path = "/" + path
            host, port = (split_target(authority) if ":" in authority.lstrip("[").split("]")[-1]
                          else (authority.strip("[]"), 80))
            if not loopback(host):
                log({"kind": "forward", "target": url, "method": method, "auth": auth, "status": 403, "conn": n})
                return deny(c, 403, b"Forbidden")
            key = (host, port)
            up = upstream.get(key)
            if up is None:
                up = Conn(socket.create_connection((host, port), timeout=10))
                upstream[key] = up
            out = [("%s %s %s" % (method, path, version)).encode("latin-1")]
            for k, v in headers:
                if k.lower() in ("proxy-authorization", "proxy-connection"):
                    continue
                out.append(("%s: %s" % (k, v)).encode("latin-1"))
            up.sock.sendall(b"\r\n".join(out) + b"\r\n\r\n")
            relay_body(c, up.sock, headers, method, None)
            status_line = up.line()
            if status_line is None:
                raise OSError("upstream closed")
            status = int(status_line.split()[1])
            rheaders = up.head()
            log({"kind": "forward", "target": url, "method": method, "auth": auth, "status": status, "conn": n})
            c.sock.sendall(status_line + b"\r\n" + b"".join(
                ("%s: %s\r\n" % (k, v)).encode("latin-1") for k, v in rheaders) + b"\r\n")
            if not relay_body(up, c.sock, rheaders, method, status):
                return
            # the next request on this connection
            line = c.line()
            if not line:
                return
            method, url, version = line.decode("latin-1").split(" ", 2)
            headers = c.head()
            if headers is None:
                return
            auth, ok = check_auth(headers)
            if not ok:
                log({"kind": "forward", "target": url, "method": method, "auth": auth, "status": 407, "conn": n})
                return deny(c, 407, b"Proxy Authentication Required",
                            b'Proxy-Authenticate: Basic realm="imm-test"\r\n')
    finally:
        for up in upstream.values():
            up.sock.close()


def socks(c, n):
    nmethods = c.exact(1)[0]
    methods = c.exact(nmethods)
    want = 2 if ARGS.user is not None else 0
    if want not in methods:
        c.sock.sendall(b"\x05\xff")
        log({"kind": "socks", "target": None, "auth": "none", "status": 407, "conn": n})
        return
    c.sock.sendall(bytes([5, want]))
    auth = "none"
    if want == 2:
        c.exact(1)
        user = c.exact(c.exact(1)[0]).decode()
        password = c.exact(c.exact(1)[0]).decode()
        ok = user == ARGS.user and password == ARGS.password
        auth = "ok" if ok else "bad"
        c.sock.sendall(b"\x01\x00" if ok else b"\x01\x01")
        if not ok:
            log({"kind": "socks", "target": None, "auth": auth, "status": 407, "conn": n})
            return
    _, cmd, _, atyp = c.exact(4)
    if atyp == 1:
        host = socket.inet_ntoa(c.exact(4))
    elif atyp == 3:
        host = c.exact(c.exact(1)[0]).decode()
    else:
        host = socket.inet_ntop(socket.AF_INET6, c.exact(16))
    port = int.from_bytes(c.exact(2), "big")
    target = "%s:%d" % (host, port)
    if cmd != 1 or not loopback(host):
        log({"kind": "socks", "target": target, "auth": auth, "status": 403, "conn": n})
        c.sock.sendall(b"\x05\x02\x00\x01\x00\x00\x00\x00\x00\x00")
        return
    up = socket.create_connection((host, port), timeout=10)
    log({"kind": "socks", "target": target, "auth": auth, "status": 200, "conn": n, "atyp": atyp})
    c.sock.sendall(b"\x05\x00\x00\x01\x7f\x00\x00\x01\x00\x00")
    try:
        pipe(c.sock, up)
    finally:
        up.close()


def handle(sock, n, ctx):
    try:
        if ctx is not None:
            sock.settimeout(10)
            sock = ctx.wrap_socket(sock, server_side=True)
        sock.settimeout(30)
        c = Conn(sock)
        if not c.fill():
            return
        if c.buf[0] == 5:
            c.buf = c.buf[1:]
            return socks(c, n)
        line = c.line()
        if not line:
            return
        method, target, version = line.decode("latin-1").split(" ", 2)
        headers = c.head()
        if headers is None:
            return
        auth, ok = check_auth(headers)
        if not ok:
            log({"kind": "connect" if method == "CONNECT" else "forward", "target": target,
                 "method": method, "auth": auth, "status": 407, "conn": n})
            return deny(c, 407, b"Proxy Authentication Required",
                        b'Proxy-Authenticate: Basic realm="imm-test"\r\n')
        if method == "CONNECT":
            return tunnel(c, target, n, auth)
        return forward(c, method, target, version, headers, n, auth)
    except (OSError, ValueError, IndexError, TypeError, ssl.SSLError):
        pass
    finally:
        try:
            sock.close()
        except OSError:
            pass


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--port-file", required=True)
    p.add_argument("--log-file", required=True)
    p.add_argument("--user")
    p.add_argument("--password", default="")
    p.add_argument("--tls")
    ARGS = p.parse_args()
    ctx = None
    if ARGS.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(ARGS.tls, "server.crt"), os.path.join(ARGS.tls, "server.key"))
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    open(ARGS.log_file, "w").close()
    with open(ARGS.port_file + ".tmp", "w") as f:
        f.write(str(srv.getsockname()[1]))
    os.rename(ARGS.port_file + ".tmp", ARGS.port_file)
    n = 0
    while True:
        conn, _ = srv.accept()
        n += 1
        threading.Thread(target=handle, args=(conn, n, ctx), daemon=True).start()


if __name__ == "__main__":
    main()
