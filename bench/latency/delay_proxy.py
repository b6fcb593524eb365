#!/usr/bin/env python3
"""A TCP proxy on loopback that adds a round-trip time to everything.

    python3 bench/latency/delay_proxy.py --rtt-ms 20 --upstream PORT
            [--port 0] [--port-file F] [--max-seconds 900] [--stats F.json]

Every byte is delivered RTT/2 after it arrived, in each direction, but none
from the client before one RTT after the connection was accepted: bytes from
the client go out at max(arrival, accept + RTT) + RTT/2. On a real network a
client can only send once the SYN / SYN-ACK round trip is over, which starts
at connect() (a connection opened early has it done when its first bytes
come), but a connect() to loopback completes at once. So a TCP connect plus
a TLS 1.3 handshake plus a request costs 3 RTT, as it does across a network.
Bandwidth is not limited: only the round trips are modelled.

The bytes are not looked at (TLS passes through). Listens on 127.0.0.1 only,
connects to 127.0.0.1:UPSTREAM only. It stops by itself: when its standard
input reaches end of file (the parent that started it with a pipe went
away), on SIGTERM/SIGINT, or after --max-seconds.

Prints "listening PORT" on stdout once it accepts connections.

bench/latency/delay_proxy.c is the same proxy in C, which the benchmark uses
when it is built (bench/bench.sh builds it): it delivers closer to the time.
This one is the fallback (run.py --python-proxy).
"""

import argparse
import asyncio
import collections
import json
import os
import selectors
import signal
import sys


LATE = []   # how late each delivery was, in seconds (for --stats)


class Pipe:
    """One direction of one connection: chunks wait in a queue until their
    time comes, in arrival order (their times never decrease)."""

    def __init__(self, loop, writer, delay, not_before=0.0):
        self.loop, self.writer, self.delay, self.not_before = loop, writer, delay, not_before
        self.queue = collections.deque()
        self.ready = asyncio.Event()
        self.task = loop.create_task(self.run())

    def push(self, data):
        """data=None is the end of the stream (delivered late like the rest)."""
        now = self.loop.time()
        self.queue.append((max(now, self.not_before) + self.delay, data))
        self.ready.set()

    async def run(self):
        try:
            while True:
                await self.ready.wait()
                while self.queue:
                    due, data = self.queue[0]
                    wait = due - self.loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    self.queue.popleft()
                    LATE.append(self.loop.time() - due)
                    if data is None:
                        if self.writer.can_write_eof():
                            self.writer.write_eof()
                        return
                    self.writer.write(data)
                    await self.writer.drain()
                self.ready.clear()
        except (ConnectionError, OSError):
            pass


async def pump(reader, pipe):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            pipe.push(data)
    except (ConnectionError, OSError):
        pass
    pipe.push(None)


async def handle(client_reader, client_writer, args):
    loop = asyncio.get_running_loop()
    rtt = args.rtt_ms / 1000.0
    accepted = loop.time()
    try:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", args.upstream)
    except OSError:
        client_writer.close()
        return
    # Client to server: the first byte can leave only after the TCP handshake's
    # round trip, then it takes RTT/2 to arrive. Server to client: RTT/2.
    up = Pipe(loop, up_writer, rtt / 2, not_before=accepted + rtt)
    down = Pipe(loop, client_writer, rtt / 2)
    try:
        await asyncio.gather(pump(client_reader, up), pump(up_reader, down))
        await asyncio.gather(up.task, down.task, return_exceptions=True)
    except asyncio.CancelledError:   # the proxy is stopping
        pass
    for w in (up_writer, client_writer):
        try:
            w.close()
        except OSError:
            pass


async def main(args):
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def stdin_readable():
        try:
            if not os.read(0, 4096):
                stop.set()
        except OSError:
            stop.set()

    if not os.isatty(0):
        try:
            loop.add_reader(0, stdin_readable)
        except (OSError, ValueError, NotImplementedError):
            pass   # stdin is a regular file or /dev/null: rely on the time limit
    loop.call_later(args.max_seconds, stop.set)

    server = await asyncio.start_server(lambda r, w: handle(r, w, args), "127.0.0.1", args.port,
                                        backlog=512)
    port = server.sockets[0].getsockname()[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{port}\n")
        os.replace(tmp, args.port_file)
    print(f"listening {port}", flush=True)
    await stop.wait()
    server.close()
    if args.stats:
        late = sorted(LATE) or [0.0]
        with open(args.stats, "w") as f:
            json.dump({"deliveries": len(LATE), "median_ms": late[len(late) // 2] * 1000,
                       "p99_ms": late[int(len(late) * 0.99)] * 1000, "max_ms": late[-1] * 1000}, f)
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rtt-ms", type=float, required=True, help="round-trip time to add, in milliseconds")
    ap.add_argument("--upstream", type=int, required=True, help="port on 127.0.0.1 to forward to")
    ap.add_argument("--port", type=int, default=0, help="port to listen on (0: a free one)")
    ap.add_argument("--port-file", help="write the port here once listening")
    ap.add_argument("--max-seconds", type=float, default=900, help="stop after this long (900)")
    ap.add_argument("--stats", help="when stopping, write how late the deliveries were here (JSON)")
    args = ap.parse_args(argv)
    if args.rtt_ms < 0:
        ap.error("--rtt-ms must not be negative")
    return args


if __name__ == "__main__":
    # select() takes its timeout in microseconds, epoll and poll in whole
    # milliseconds rounded up: with those every delivery would be up to 1 ms
    # late. A benchmark has a few dozen sockets, far below select's limit.
    loop = asyncio.SelectorEventLoop(selectors.SelectSelector())
    try:
        loop.run_until_complete(main(parse(sys.argv[1:])))
    finally:
        loop.close()
