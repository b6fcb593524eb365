#!/usr/bin/env python3
"""A DNS server on loopback for the nginx specs: nginx's resolver reads no
/etc/hosts, so a spec that wants a host name inside nginx points `resolver`
here.

    python3 spec/helpers/dns_stub.py --port-file F [--silent]

Answers every A query with 127.0.0.1 (TTL 60), any other type with no
answer; with --silent it reads every query and never answers, as a resolver
that is down or filtered does.  Standard library only.
"""
import argparse
import os
import socket
import struct


def answer(query):
    """The reply to one query: the question echoed, and an A record for it."""
    if len(query) < 12:
        return None
    qid, _flags, qdcount = struct.unpack("!HHH", query[:6])
    if qdcount != 1:
        return None
    i = 12
    while i < len(query) and query[i] != 0:
        i += 1 + query[i]
    end = i + 5                     # the terminating zero, QTYPE, QCLASS
    if end > len(query):
        return None
    question = query[12:end]
    qtype = struct.unpack("!H", query[i + 1:i + 3])[0]
    records = b""
    if qtype == 1:
        records = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton("127.0.0.1")
    header = struct.pack("!HHHHHH", qid, 0x8180, 1, 1 if records else 0, 0, 0)
    return header + question + records


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port-file", required=True)
    p.add_argument("--silent", action="store_true")
    args = p.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    tmp = args.port_file + ".tmp"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(f"{sock.getsockname()[1]}\n")
    os.replace(tmp, args.port_file)
    while True:
        query, peer = sock.recvfrom(4096)
        if args.silent:
            continue
        reply = answer(query)
        if reply:
            sock.sendto(reply, peer)


if __name__ == "__main__":
    main()
