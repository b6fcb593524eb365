"""Faults: the rules that make the server misbehave on purpose (throttle, reset,
stall, trickle, truncated, gzip bombs, ...), queued with --fault or
POST /_imm/faults and applied FIFO."""

import argparse
import collections
import functools
import threading
import zlib
from dataclasses import dataclass, field

from .bindings import synthetic_bindings_result
from .replies import ApiError, Reply, error_reply, json_bytes

FAULT_MODES = ("throttle", "unavailable", "internal", "reset", "reset_after", "reset_mid_body", "slow", "stall",
               "trickle", "truncated", "overrun", "malformed", "not_object", "bindings_not_array",
               "html502", "gzip_bomb", "big", "odd_values")
# Decided as soon as the request is read, before verification, because on the real
# network these happen before the service sees the request (so no nonce is spent).
CONNECTION_FAULTS = ("reset", "stall")
# The largest value of each fault option (seconds, ms, bytes); other options: as size.
FAULT_OPTION_LIMITS = {"delay": 3600, "interval": 3600, "retry_after_ms": 3600 * 1000, "size": 1 << 30,
                       "depth": 100000}

HTML_502 = (b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
            b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
            b"</body>\r\n</html>\r\n")


@dataclass
class FaultRule:
    mode: str
    count: int = 1             # -1: every request until cleared
    options: dict = field(default_factory=dict)
    match: dict = field(default_factory=dict)   # applies only to requests with these parameters

    def matches(self, params):
        return all(params.get(k) == v for k, v in self.match.items())

    def option(self, name, default):
        return self.options.get(name, default)

    def as_json(self):
        extra = {"match": dict(self.match)} if self.match else {}
        return {"mode": self.mode, "count": self.count, **self.options, **extra}


def parse_fault_rule(obj):
    if not isinstance(obj, dict) or obj.get("mode") not in FAULT_MODES:
        raise ValueError(f"a fault rule needs mode, one of: {', '.join(FAULT_MODES)}")
    count = obj.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or (count < 1 and count != -1):
        raise ValueError("count must be a positive integer or -1")
    match = obj.get("match", {})
    if not isinstance(match, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in match.items()):
        raise ValueError("match must be an object of parameter names and string values")
    options = {k: v for k, v in obj.items() if k not in ("mode", "count", "match")}
    for name, value in options.items():
        # finite and bounded: a sleep of 1e300 s raises, a size of 1e15 bytes
        # would be built in memory, and GET /_imm/faults must stay JSON
        limit = FAULT_OPTION_LIMITS.get(name, FAULT_OPTION_LIMITS["size"])
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= limit:
            raise ValueError(f"fault option {name} must be a number from 0 to {limit}")
    return FaultRule(obj["mode"], count, options, dict(match))


def parse_fault_arg(text):
    """--fault MODE[:COUNT]"""
    mode, _, count = text.partition(":")
    try:
        return parse_fault_rule({"mode": mode, "count": int(count) if count else 1})
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text}: {err}")


class FaultQueue:
    """Rules apply FIFO: the head rule applies until its count runs out."""

    def __init__(self, rules=()):
        self._lock = threading.Lock()
        self._rules = collections.deque(rules)

    def add(self, rule):
        with self._lock:
            self._rules.append(rule)

    def clear(self):
        with self._lock:
            self._rules.clear()

    def snapshot(self):
        with self._lock:
            return [r.as_json() for r in self._rules]

    def take(self, modes=None, params=None):
        """Use up one application of the head rule, if its mode is in modes (any if None)
        and the request's params match the rule's match (a request that does not match
        leaves the rule at the head)."""
        with self._lock:
            if not self._rules or (modes is not None and self._rules[0].mode not in modes):
                return None
            head = self._rules[0]
            if head.match and not head.matches(params or {}):
                return None
            if head.count > 0:
                head.count -= 1
                if head.count == 0:
                    self._rules.popleft()
            return FaultRule(head.mode, head.count, dict(head.options), dict(head.match))


@functools.lru_cache(maxsize=4)
def gzip_bomb(size):
    """A gzip stream that inflates to size spaces.  Compressed in 1 MiB chunks, so the
    inflated data is never in memory; the result (~1/1000 of size) is cached."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)   # wbits 31: gzip framing
    chunk = b" " * (1 << 20)
    parts, remaining = [], size
    while remaining > 0:
        n = min(remaining, len(chunk))
        parts.append(compressor.compress(chunk[:n]))
        remaining -= n
    parts.append(compressor.flush())
    return b"".join(parts)


def fault_reply(rule, req, request_id):
    """The reply a fault replaces the real one with; None for faults that only change
    how the real reply is delivered (slow, trickle, truncated, ...)."""
    mode = rule.mode
    if mode == "throttle":
        headers = []
        if "retry_after_ms" in rule.options:
            headers.append(("x-acs-retry-after", str(int(rule.options["retry_after_ms"]))))
        err = ApiError(429, "Throttling.User", "Request was denied due to user flow control.", headers)
    elif mode == "unavailable":
        err = ApiError(503, "ServiceUnavailable", "The request has failed due to a temporary failure of the server.")
    elif mode == "internal":
        err = ApiError(500, "InternalError",
                       "The request processing has failed due to some unknown error, exception or failure.")
    elif mode == "malformed":
        return Reply(200, f'{{"RequestId":"{request_id}","Bindings":[{{"ProjectName":'.encode(), request_id)
    elif mode == "not_object":
        return Reply(200, b"[1,2,3]", request_id)
    elif mode == "bindings_not_array":
        return Reply(200, json_bytes({"RequestId": request_id, "Bindings": "oops"}), request_id)
    elif mode == "html502":
        return Reply(502, HTML_502, None, content_type="text/html")
    elif mode == "gzip_bomb":
        return Reply(200, gzip_bomb(int(rule.option("size", 100 * 1024 * 1024))), request_id,
                     content_encoding="gzip")
    elif mode == "big":
        result = synthetic_bindings_result(req.params.get("ProjectName") or "immtest",
                                           int(rule.option("size", 5 * 1024 * 1024)))
        return Reply(200, json_bytes({"RequestId": request_id, **result}), request_id)
    else:
        return None
    return error_reply(err, request_id, req.host)
