#!/usr/bin/env python3
"""A loopback server that answers every request with the same raw bytes.

For specs that need a reply no real server would send: a body cut short by a
clean close, megabytes of headers, a stall. It also serves as a recording
"proxy": every connection is logged, whatever it sends.

    python3 spec/helpers/raw_reply.py --port-file F --log-file L --reply-file R
        [--delay S] [--then close|stall] [--stall-limit S]

For each connection: log one JSON line {"n": k, "first": first request line},
read the request head (and a Content-Length body), wait --delay seconds, send
the reply file's bytes, then close cleanly (FIN) or stall (keep the socket
open, sending nothing, for at most --stall-limit seconds).
"""
import argparse
import json
import os
import socket
import threading
import time


def handle(conn, n, args, reply, log_lock):
    first = b""
    try:
        conn.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 1 << 20:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        first = data.split(b"\r\n", 1)[0]
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip() or 0)
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        with log_lock:
            with open(args.log_file, "a") as f:
                f.write(json.dumps({"n": n, "first": first.decode("latin-1")}) + "\n")
        if args.delay:
            time.sleep(args.delay)
        conn.sendall(reply)
        if args.then == "stall":
            time.sleep(args.stall_limit)
        else:
            conn.shutdown(socket.SHUT_WR)  # a clean close: FIN, not RST
            conn.settimeout(2)
            try:
                while conn.recv(65536):
                    pass
            except OSError:
                pass
    except OSError:
        pass
    finally:
        conn.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port-file", required=True)
    p.add_argument("--log-file", required=True)
    p.add_argument("--reply-file", required=True)
    p.add_argument("--delay", type=float, default=0)
    p.add_argument("--then", choices=["close", "stall"], default="close")
    p.add_argument("--stall-limit", type=float, default=5)
    args = p.parse_args()
    with open(args.reply_file, "rb") as f:
        reply = f.read()
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    open(args.log_file, "w").close()
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(srv.getsockname()[1]))
    os.rename(args.port_file + ".tmp", args.port_file)
    lock = threading.Lock()
    n = 0
    while True:
        conn, _ = srv.accept()
        n += 1
        threading.Thread(target=handle, args=(conn, n, args, reply, lock), daemon=True).start()


if __name__ == "__main__":
    main()
