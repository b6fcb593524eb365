#!/usr/bin/env python3
"""A local stand-in for Alibaba Cloud IMM (API 2020-09-30): bindings, projects, datasets.

Why it exists: the imm client must be tested against signature checking, paging
and network failures without calling the real cloud.  This server checks request
signatures the way the service does (V3 ACS3-HMAC-SHA256 / ACS3-HMAC-SM3 and V2
HMAC-SHA1), serves bindings from a JSON file, runs the binding lifecycle, and can be
told to misbehave (throttle, reset, stall, truncate, ...) on demand.

Standard library only: it must run on a fresh Debian 12 that has nothing but python3.

    python3 tools/imm_server.py --port N [--host 127.0.0.1] [--tls CERTDIR]
            [--bindings-file F.json] [--access-key-id ID --access-key-secret S
            [--security-token T]] [--port-file PATH] [--fault MODE[:COUNT]]...
            [--binding-start-delay SECONDS] [--quiet]
    python3 tools/imm_server.py --check-vectors PATH/TO/signing.json   (or signing_body.json)

API: POST or GET /, signed (V3 Authorization header or V2 Signature parameter),
parameters from the query string and an x-www-form-urlencoded body.  Version
2020-09-30; the actions (see ACTIONS):
    ListBindings(ProjectName, DatasetName?, MaxResults?, NextToken?, Name?)
    CreateBinding(ProjectName, DatasetName, URI)    -> {Binding}; URI oss://bucket[/prefix/]
    GetBinding(ProjectName, DatasetName, URI)       -> {Binding}
    StopBinding(ProjectName, DatasetName, URI, Reason?)   ResumeBinding(...)   DeleteBinding(...)
    CreateProject(ProjectName, Description?, Tag?)  -> {Project}; Tag a JSON array of {Key, Value}
                                                       (the request model), Project.Tags of {TagKey, TagValue}
    ListProjects(MaxResults?, NextToken?, Prefix?, Tag?) -> {Projects, NextToken?}; Tag as above: only
                                                       projects that carry every tag given
    CreateDataset(ProjectName, DatasetName, Description?) -> {Dataset}
    ListDatasets(ProjectName, MaxResults?, NextToken?, Prefix?) -> {Datasets, NextToken?}
Binding lifecycle: CreateBinding makes a Ready binding that turns Running (Phase
FullScanning) --binding-start-delay seconds later, seen at the next GetBinding or
ListBindings; StopBinding -> Stopped (with Reason); ResumeBinding -> Running;
DeleteBinding removes it (GetBinding -> 404 ResourceNotFound).  Errors: 400
MissingParameter / InvalidParameter.*, 404 ResourceNotFound, 409 ResourceAlreadyExist.
Errors are JSON shaped like the service's: {"RequestId", "HostId", "Code", "Message",
"Recommend"}.  Every bad request gets a 4xx in that shape, before any action: a request
or header line over 64 KiB (414, 431), a body over MAX_BODY_BYTES (413, left unread), a
Content-Length or chunk size that is not plain digits, a short body, a Transfer-Encoding
other than chunked, HTTP/0.9 or 2.0, a malformed request line (400), an unknown method
(405); JSON with NaN, Infinity, numbers out of range or nesting too deep (400).  No reply
holds a non-finite number.  tools/fuzz_imm_server.py checks all of it.

Data file: {"Projects": [name or {ProjectName, Description, Tags, ...}],
"Datasets": [{ProjectName, DatasetName, ...}] (optional), "Bindings": [...]}; the
datasets of the bindings exist too.

Control API (unsigned, same port, never counted as API requests):
    GET    /_imm/health   {"ok": true}
    GET    /_imm/log      one record per API request, in arrival order:
                          seq, start/end (time.monotonic()), conn (TCP connection id),
                          method, action, params (no Signature), headers (lowercase;
                          authorization and x-acs-security-token shown as "***"),
                          signature ("v3-sha256" | "v3-sm3" | "v2" | null), status,
                          fault, gzip
    DELETE /_imm/log      clear the log (seq keeps counting)
    GET    /_imm/stats    {"connections": accepted TCP connections, "requests": API
                          requests}, both counted since startup, never reset
    GET    /_imm/faults   the queued fault rules
    POST   /_imm/faults   {"mode": M, "count": N, ...options} appends a rule; count 1 by
                          default, -1 for every request until cleared; rules apply FIFO;
                          "match": {Param: value} limits a rule to the requests with
                          those parameters (others pass it by and leave it queued)
    DELETE /_imm/faults   clear the rules
    POST   /_imm/data     replace the data set (same format as the bindings file)
    POST   /_imm/reset    startup data and settings back; faults, log and nonces cleared
    GET    /_imm/settings {"binding_start_delay": seconds}
    POST   /_imm/settings {"binding_start_delay": seconds} changes it (kept until reset)
    POST   /_imm/binding-state {ProjectName, DatasetName, URI, State[, Reason, Phase]}
                          forces a binding into a state (e.g. Failed), answers the binding
A control request that fails (bad JSON, a field of the wrong type) gets a 400 in the
service's shape, with "ok": false and "error" too.

Fault modes, with their numeric options:
    throttle [retry_after_ms]   unavailable   internal
    reset                       RST right after the request is read
    reset_after                 the action is carried out, then RST instead of the reply
    reset_mid_body              headers, half the body, RST
    slow [delay=1.0]            stall [delay=30]: silence, then close
    trickle [interval=0.5]      body one byte per interval (headers at once)
    truncated                   half the promised body, then FIN
    overrun                     Content-Length smaller than the body sent
    malformed   not_object   bindings_not_array   html502
    gzip_bomb [size=100 MiB]    big [size=5 MiB]
    odd_values [depth=0]        the real reply, its first binding given "Odd": the bytes
                                FF FE (not UTF-8), "Big": 1e400 (beyond a double) and,
                                with depth, "Deep": arrays nested that deep
Options are numbers from 0 to FAULT_OPTION_LIMITS (delay and interval 3600 s, size 1 GiB,
depth 100000).
reset and stall act before the signature is checked (no nonce is spent, as when
the network fails); all others act only on requests whose signature verified.
"""

import argparse
import base64
import bisect
import collections
import functools
import gzip
import hashlib
import hmac
import http
import itertools
import json
import math
import os
import re
import signal
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time
import traceback
import urllib.parse
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

API_VERSION = "2020-09-30"
DEFAULT_KEY_ID = "imm-local-id"
DEFAULT_SECRET = "imm-local-secret"
DEFAULT_DATA_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample_bindings.json")

TIME_WINDOW_SECONDS = 15 * 60
# A nonce must be remembered for as long as its signed timestamp is still accepted:
# the timestamp may be up to one window in the future, so two windows in all.
NONCE_TTL_SECONDS = 2 * TIME_WINDOW_SECONDS
MAX_NONCES = 100000    # about 15 MB; more requests than that in two windows evict the oldest
MAX_BODY_BYTES = 10 * 1024 * 1024
IDLE_TIMEOUT_SECONDS = 120       # drop keep-alive connections a client forgot about
HANDSHAKE_TIMEOUT_SECONDS = 10   # a client that never finishes TLS must not hold a thread forever
JSON_TYPE = "application/json;charset=utf-8"
REDACTED = "***"


# ---------------------------------------------------------------------------
# SM3 (GB/T 32905-2016).  OpenSSL 3 usually has it; this is the fallback for
# builds that do not, so the server still verifies ACS3-HMAC-SM3 requests.
# ---------------------------------------------------------------------------

_MASK32 = 0xFFFFFFFF


def _rotl(x, n):
    n %= 32
    return ((x << n) | (x >> (32 - n))) & _MASK32


def _sm3_compress(state, block):
    """One SM3 compression of a 64-byte block into the 8-word state."""
    w = list(struct.unpack(">16I", block))
    for j in range(16, 68):
        x = w[j - 16] ^ w[j - 9] ^ _rotl(w[j - 3], 15)
        w.append(x ^ _rotl(x, 15) ^ _rotl(x, 23) ^ _rotl(w[j - 13], 7) ^ w[j - 6])
    a, b, c, d, e, f, g, h = state
    for j in range(64):
        t = 0x79CC4519 if j < 16 else 0x7A879D8A
        a12 = _rotl(a, 12)
        ss1 = _rotl((a12 + e + _rotl(t, j)) & _MASK32, 7)
        ss2 = ss1 ^ a12
        if j < 16:
            ff, gg = a ^ b ^ c, e ^ f ^ g
        else:
            ff, gg = (a & b) | (a & c) | (b & c), (e & f) | (~e & g)
        tt1 = (ff + d + ss2 + (w[j] ^ w[j + 4])) & _MASK32
        tt2 = (gg + h + ss1 + w[j]) & _MASK32
        a, b, c, d = tt1, a, _rotl(b, 9), c
        e, f, g, h = tt2 ^ _rotl(tt2, 9) ^ _rotl(tt2, 17), e, _rotl(f, 19), g
    return [x ^ y for x, y in zip(state, (a, b, c, d, e, f, g, h))]


class SM3:
    """Pure-Python SM3 shaped like a hashlib object, so hmac.new(key, msg, SM3) works."""

    name = "sm3"
    digest_size = 32
    block_size = 64
    _IV = (0x7380166F, 0x4914B2B9, 0x172442D7, 0xDA8A0600,
           0xA96F30BC, 0x163138AA, 0xE38DEE4D, 0xB0FB0E4E)

    def __init__(self, data=b""):
        self._state = list(self._IV)
        self._pending = b""
        self._length = 0
        self.update(data)

    def update(self, data):
        data = bytes(data)
        self._length += len(data)
        buf = self._pending + data
        whole = len(buf) - len(buf) % 64
        for i in range(0, whole, 64):
            self._state = _sm3_compress(self._state, buf[i:i + 64])
        self._pending = buf[whole:]

    def copy(self):
        other = SM3()
        other._state, other._pending, other._length = list(self._state), self._pending, self._length
        return other

    def digest(self):
        # Same padding shape as SHA-256: 0x80, zeros to 56 mod 64, then the bit length.
        tail = self._pending + b"\x80" + b"\x00" * ((55 - self._length) % 64)
        tail += (self._length * 8).to_bytes(8, "big")
        state = self._state
        for i in range(0, len(tail), 64):
            state = _sm3_compress(state, tail[i:i + 64])
        return b"".join(word.to_bytes(4, "big") for word in state)

    def hexdigest(self):
        return self.digest().hex()


def _sm3_constructor():
    """OpenSSL's SM3 when this Python's OpenSSL has it (fast), else the pure-Python one."""
    try:
        hashlib.new("sm3")
    except ValueError:
        return SM3
    return lambda data=b"": hashlib.new("sm3", data)


# ---------------------------------------------------------------------------
# Signing.  The verifier and --check-vectors both use exactly these functions,
# so passing the vectors proves the verifier agrees with the official SDK.
# ---------------------------------------------------------------------------

V3_DIGESTS = {
    "ACS3-HMAC-SHA256": hashlib.sha256,
    "ACS3-HMAC-SM3": _sm3_constructor(),
}
V3_SCHEME_NAMES = {"ACS3-HMAC-SHA256": "v3-sha256", "ACS3-HMAC-SM3": "v3-sm3"}
V3_REQUIRED_SIGNED_HEADERS = ("host", "x-acs-action", "x-acs-version", "x-acs-date",
                              "x-acs-signature-nonce", "x-acs-content-sha256")
V2_REQUIRED_PARAMS = ("Format", "SignatureMethod", "SignatureVersion", "AccessKeyId",
                      "SignatureNonce", "Timestamp")


def percent_encode(text):
    """RFC 3986 encoding shared by both signature versions: UTF-8 bytes, uppercase hex,
    only A-Za-z0-9-_.~ left as is (quote always keeps those), so a space becomes %20."""
    return urllib.parse.quote(text, safe="")


def parse_query(raw):
    """Split a raw query string into decoded (key, value) pairs.

    '+' stays '+': ACS canonicalises with RFC 3986, where only %20 is a space, so
    unquote_plus would make the server sign something the client never signed."""
    pairs = []
    for piece in raw.split("&"):
        if piece:
            key, _, value = piece.partition("=")
            pairs.append((urllib.parse.unquote(key), urllib.parse.unquote(value)))
    return pairs


def canonical_query(pairs):
    # sorted by raw name (then value), as the official openapi-util sorts
    # (Object.keys(query).sort()), and only then encoded
    encoded = [(percent_encode(k), percent_encode(v)) for k, v in sorted(pairs)]
    return "&".join(f"{k}={v}" for k, v in encoded)


def hex_digest(algorithm, data):
    return V3_DIGESTS[algorithm](data).hexdigest()


def v3_canonical_request(method, path, raw_query, headers, signed_headers, content_hash):
    """headers: lowercase name -> value; signed_headers: lowercase, sorted."""
    canonical_headers = "".join(f"{name}:{headers.get(name, '').strip()}\n" for name in signed_headers)
    return "\n".join([method, path, canonical_query(parse_query(raw_query)),
                      canonical_headers, ";".join(signed_headers), content_hash])


def v3_string_to_sign(algorithm, canonical_request):
    return f"{algorithm}\n{hex_digest(algorithm, canonical_request.encode('utf-8'))}"


def v3_signature(algorithm, secret, string_to_sign):
    return hmac.new(secret.encode("utf-8"), string_to_sign.encode("utf-8"),
                    V3_DIGESTS[algorithm]).hexdigest()


def v3_authorization(algorithm, key_id, signed_headers, signature):
    return (f"{algorithm} Credential={key_id},SignedHeaders={';'.join(signed_headers)},"
            f"Signature={signature}")


def v2_string_to_sign(method, params):
    pairs = [(k, v) for k, v in params.items() if k != "Signature"]
    return f"{method}&{percent_encode('/')}&{percent_encode(canonical_query(pairs))}"


def v2_signature(secret, string_to_sign):
    mac = hmac.new((secret + "&").encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


# ---------------------------------------------------------------------------
# Errors and replies
# ---------------------------------------------------------------------------

class ApiError(Exception):
    """A service error: becomes a JSON body shaped like the real service's."""

    def __init__(self, status, code, message, headers=()):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, list(headers)


def missing_parameter(name):
    return ApiError(400, "MissingParameter",
                    f'The input parameter "{name}" that is mandatory for processing this request is not supplied.')


def incomplete_signature(detail):
    return ApiError(400, "IncompleteSignature",
                    f"The request signature does not conform to Aliyun standards. {detail}")


@dataclass
class Reply:
    status: int
    body: bytes
    request_id: Optional[str]          # None: the reply pretends to come from a proxy
    content_type: str = JSON_TYPE
    headers: list = field(default_factory=list)
    content_encoding: Optional[str] = None   # set when body is already encoded (gzip_bomb)


def new_request_id():
    return str(uuid.uuid4()).upper()


def json_bytes(obj):
    # allow_nan=False: NaN and Infinity are not JSON, so none may leave the server
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _not_json(text):
    raise ValueError(f"{text} is not JSON")


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


def parse_json(data):
    """JSON from a request: ValueError for anything that is not JSON, NaN,
    Infinity and numbers out of range included, and for nesting too deep for
    the parser (RecursionError)."""
    try:
        return json.loads(data, parse_constant=_not_json, parse_float=_finite_float)
    except RecursionError:
        raise ValueError("JSON nested too deeply")


def error_body(code, message, request_id, host):
    """A service error document: {RequestId, HostId, Code, Message, Recommend}."""
    return {
        "RequestId": request_id,
        "HostId": host,
        "Code": code,
        "Message": message,
        "Recommend": f"https://api.aliyun.com/troubleshoot?q={code}&product=imm&requestId={request_id}",
    }


def error_reply(err, request_id, host):
    return Reply(err.status, json_bytes(error_body(err.code, err.message, request_id, host)), request_id,
                 headers=err.headers)


# Codes of the errors the server answers before a request reaches the API or
# the control routes (framing, sizes, methods), by HTTP status.
HTTP_ERROR_CODES = {400: "BadRequest", 404: "NotFound", 405: "MethodNotAllowed", 413: "RequestEntityTooLarge",
                    414: "RequestURITooLong", 431: "RequestHeaderFieldsTooLarge", 500: "InternalError"}


# ---------------------------------------------------------------------------
# Request verification.  Order: auth scheme -> access key -> token ->
# signature -> time window -> nonce, all before any business logic.
# ---------------------------------------------------------------------------

@dataclass
class Credentials:
    key_id: str
    secret: str
    token: Optional[str] = None


@dataclass
class ApiRequest:
    method: str
    path: str
    raw_query: str
    headers: dict     # lowercase name -> value
    body: bytes
    params: dict      # query string merged over a form body, decoded

    @property
    def host(self):
        return self.headers.get("host", "")


@dataclass
class V3Auth:
    algorithm: str
    key_id: str
    signed_headers: list
    signature: str


class NonceCache:
    """Nonces of verified requests; a replay inside the time window is refused.

    Memory is bounded: a nonce is kept for NONCE_TTL_SECONDS, and at most cap
    of them; past the cap the oldest go first, so a flood of requests cannot
    grow the server without end."""

    def __init__(self, cap=MAX_NONCES, ttl=NONCE_TTL_SECONDS):
        self._lock = threading.Lock()
        self._seen = collections.OrderedDict()   # nonce -> when seen, oldest first
        self._cap, self._ttl = cap, ttl

    def add(self, nonce):
        """Remember nonce; False if it was already seen."""
        now = time.monotonic()
        with self._lock:
            seen = self._seen
            # the oldest first: only what has expired or is over the cap is dropped
            while seen:
                oldest, when = next(iter(seen.items()))
                if now - when < self._ttl and len(seen) < self._cap:
                    break
                seen.popitem(last=False)
            if nonce in seen:
                return False
            seen[nonce] = now
            return True

    def __len__(self):
        with self._lock:
            return len(self._seen)

    def clear(self):
        with self._lock:
            self._seen.clear()


def signature_scheme(req):
    """'v3-sha256' | 'v3-sm3' | 'v2' | None, for the log; no verification."""
    auth = req.headers.get("authorization")
    if auth is not None:
        return V3_SCHEME_NAMES.get(auth.strip().split(" ", 1)[0])
    return "v2" if "Signature" in req.params else None


def verify_request(req, creds, nonces, now):
    if "authorization" in req.headers:
        verify_v3(req, creds, nonces, now)
    elif "Signature" in req.params:
        verify_v2(req, creds, nonces, now)
    else:
        raise ApiError(400, "MissingParameter",
                       "The request is not signed: send an Authorization header (ACS3) "
                       "or a Signature parameter (V2).")


def parse_v3_authorization(value):
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm not in V3_DIGESTS:
        raise incomplete_signature(f"Unsupported Authorization scheme {algorithm!r}.")
    fields = {}
    for item in rest.split(","):
        name, sep, val = item.strip().partition("=")
        if sep:
            fields[name.strip()] = val.strip()
    missing = [n for n in ("Credential", "SignedHeaders", "Signature") if not fields.get(n)]
    if missing:
        raise incomplete_signature(f"Authorization lacks {', '.join(missing)}.")
    signed = sorted({h.strip().lower() for h in fields["SignedHeaders"].split(";") if h.strip()})
    return V3Auth(algorithm, fields["Credential"], signed, fields["Signature"])


def check_v3_signed_headers(req, auth):
    signed = set(auth.signed_headers)
    unsigned = [h for h in V3_REQUIRED_SIGNED_HEADERS if h not in signed]
    unsigned += sorted(h for h in req.headers if h.startswith("x-acs-") and h not in signed)
    if unsigned:
        raise incomplete_signature(f"SignedHeaders must include {', '.join(unsigned)}.")
    absent = [h for h in auth.signed_headers if h not in req.headers]
    if absent:
        raise incomplete_signature(f"Signed header {', '.join(absent)} is not in the request.")


def check_security_token(presented, creds):
    if creds.token is None:
        if presented:
            raise ApiError(400, "InvalidSecurityToken.Mismatch",
                           "Specified SecurityToken mismatch with the AccessKey.")
        return
    if not presented:
        raise ApiError(400, "InvalidSecurityToken.Malformed", "Specified SecurityToken is malformed.")
    if not hmac.compare_digest(presented.encode("utf-8"), creds.token.encode("utf-8")):
        raise ApiError(400, "InvalidSecurityToken.Mismatch",
                       "Specified SecurityToken mismatch with the AccessKey.")


def check_access_key(key_id, creds):
    if key_id != creds.key_id:
        raise ApiError(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")


def signature_mismatch(string_to_sign):
    return ApiError(400, "SignatureDoesNotMatch",
                    "Specified signature is not matched with our calculation. "
                    f"server string to sign is:{string_to_sign}")


_TIMESTAMP_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})Z$")


def parse_timestamp(value):
    """'YYYY-MM-DDTHH:MM:SSZ' as an aware UTC datetime, or None."""
    match = _TIMESTAMP_RE.match(value or "")
    try:
        return datetime(*map(int, match.groups()), tzinfo=timezone.utc) if match else None
    except ValueError:          # e.g. month 13: right shape, impossible date
        return None


def check_timestamp(value, now):
    when = parse_timestamp(value)
    if when is None:
        raise ApiError(400, "InvalidTimeStamp.Format",
                       f"Specified time stamp or date value is not well formatted: {value!r}.")
    if abs((now - when).total_seconds()) > TIME_WINDOW_SECONDS:
        raise ApiError(400, "InvalidTimeStamp.Expired",
                       "Specified time stamp or date value is expired.")


def check_nonce(nonces, nonce):
    if not nonces.add(nonce):
        raise ApiError(400, "SignatureNonceUsed", "Specified signature nonce was used already.")


def compute_v3(req, auth, secret):
    """(canonical request, string to sign, signature) for req as the server sees it."""
    canonical = v3_canonical_request(req.method, req.path, req.raw_query, req.headers,
                                     auth.signed_headers, req.headers.get("x-acs-content-sha256", "").strip())
    string_to_sign = v3_string_to_sign(auth.algorithm, canonical)
    return canonical, string_to_sign, v3_signature(auth.algorithm, secret, string_to_sign)


def verify_v3(req, creds, nonces, now):
    auth = parse_v3_authorization(req.headers["authorization"])
    check_v3_signed_headers(req, auth)
    check_access_key(auth.key_id, creds)
    check_security_token(req.headers.get("x-acs-security-token"), creds)
    if creds.token is not None and req.headers.get("x-acs-accesskey-id") != creds.key_id:
        raise ApiError(400, "InvalidSecurityToken.Mismatch",
                       "x-acs-accesskey-id must name the AccessKey the SecurityToken belongs to.")
    _, string_to_sign, signature = compute_v3(req, auth, creds.secret)
    # as bytes: compare_digest refuses str with non-ASCII characters (TypeError)
    if not hmac.compare_digest(signature.encode(), auth.signature.lower().encode("utf-8")):
        raise signature_mismatch(string_to_sign)
    # The header is signed, so check it only now: a mismatch here means the client
    # hashed a different body than it sent, not that someone tampered with the header.
    if req.headers["x-acs-content-sha256"].strip().lower() != hex_digest(auth.algorithm, req.body):
        raise ApiError(400, "SignatureDoesNotMatch",
                       f"The x-acs-content-sha256 header does not match the {auth.algorithm} "
                       "hash of the request body.")
    check_timestamp(req.headers["x-acs-date"].strip(), now)
    check_nonce(nonces, req.headers["x-acs-signature-nonce"].strip())


def verify_v2(req, creds, nonces, now):
    params = req.params
    for name in V2_REQUIRED_PARAMS:
        if not params.get(name):
            raise missing_parameter(name)
    if params["Format"].upper() != "JSON":
        raise ApiError(400, "InvalidParameter.Format", "This server only answers Format=JSON.")
    if params["SignatureMethod"] != "HMAC-SHA1":
        raise incomplete_signature("SignatureMethod must be HMAC-SHA1.")
    if params["SignatureVersion"] != "1.0":
        raise incomplete_signature("SignatureVersion must be 1.0.")
    check_access_key(params["AccessKeyId"], creds)
    check_security_token(params.get("SecurityToken"), creds)
    string_to_sign = v2_string_to_sign(req.method, params)
    if not hmac.compare_digest(v2_signature(creds.secret, string_to_sign).encode(),
                               params["Signature"].encode("utf-8")):
        raise signature_mismatch(string_to_sign)
    check_timestamp(params["Timestamp"], now)
    check_nonce(nonces, params["SignatureNonce"])


# ---------------------------------------------------------------------------
# Bindings data and ListBindings
# ---------------------------------------------------------------------------

def binding_key(binding):
    """Page order of a project's bindings; NextToken names a position in it."""
    return (binding.get("DatasetName") or "", binding.get("URI") or "")


def _as_list(value):
    # Lua's cjson encodes an empty table as {}, so a test loading an empty list
    # from Lua sends an empty object; take it for the empty list it meant.
    return [] if value == {} else value


class BindingData:
    """An immutable, validated data set.  Replacing it swaps one reference, which
    is atomic, so a request reads a consistent data set without locking."""

    def __init__(self, document):
        if not isinstance(document, dict) or not isinstance(_as_list(document.get("Bindings")), list):
            raise ValueError('data must be an object with a "Bindings" array')
        projects = _as_list(document.get("Projects", []))
        if not isinstance(projects, list) or not all(
                isinstance(p, str) or (isinstance(p, dict) and isinstance(p.get("ProjectName"), str))
                for p in projects):
            raise ValueError('"Projects" must be an array of names or of objects with a ProjectName')
        datasets = _as_list(document.get("Datasets", []))
        if not isinstance(datasets, list) or not all(
                isinstance(d, dict) and isinstance(d.get("ProjectName"), str) and isinstance(d.get("DatasetName"), str)
                for d in datasets):
            raise ValueError('"Datasets" must be an array of objects with a ProjectName and a DatasetName')
        # project name -> the project's record as given (a bare name gives an empty one)
        self.project_records = {}
        for p in projects:
            record = {"ProjectName": p} if isinstance(p, str) else dict(p)
            self.project_records[record["ProjectName"]] = record
        self.dataset_records = [dict(d) for d in datasets]
        projects = list(self.project_records)
        by_project = collections.defaultdict(list)
        for i, binding in enumerate(_as_list(document["Bindings"])):
            if not isinstance(binding, dict) or not isinstance(binding.get("ProjectName"), str):
                raise ValueError(f"Bindings[{i}] must be an object with a string ProjectName")
            if not all(isinstance(binding.get(k, ""), (str, type(None))) for k in ("DatasetName", "URI")):
                raise ValueError(f"Bindings[{i}]: DatasetName and URI must be strings")
            by_project[binding["ProjectName"]].append(binding)
        self.projects = set(projects) | set(by_project) | {d["ProjectName"] for d in self.dataset_records}
        self.by_project = {p: sorted(items, key=binding_key) for p, items in by_project.items()}

    @classmethod
    def from_file(cls, path):
        with open(path, encoding="utf-8") as f:
            return cls(json.load(f))


def parse_max_results(value):
    if value is None or value == "":
        return 100
    if not re.fullmatch(r"[0-9]{1,4}", value) or int(value) > 200:
        raise ApiError(400, "InvalidParameter.MaxResults",
                       f"The parameter MaxResults must be an integer from 0 to 200, got {value!r}.")
    return int(value) or 100


def parse_next_token(value, project):
    """NextToken is '<ProjectName>:<DatasetName>:<URI>' of the last item returned;
    URIs contain ':' themselves, so split at most twice."""
    if not value:
        return None
    parts = value.split(":", 2)
    if len(parts) != 3 or parts[0] != project or not parts[2]:
        raise ApiError(400, "InvalidParameter.NextToken", f"The specified NextToken {value!r} is not valid.")
    return (parts[1], parts[2])


def list_bindings(data, params):
    """The ListBindings result (without RequestId) for params, or ApiError."""
    project = params.get("ProjectName", "")
    if not project:
        raise missing_parameter("ProjectName")
    limit = parse_max_results(params.get("MaxResults"))
    after = parse_next_token(params.get("NextToken"), project)
    if project not in data.projects:
        raise ApiError(404, "ResourceNotFound", f"The specified project {project} does not exist.")
    dataset, name = params.get("DatasetName"), params.get("Name")
    # Simplification: the real service matches Name against the binding itself;
    # here Name keeps bindings whose URI contains it, which is enough to test filtering.
    items = [b for b in data.by_project.get(project, [])
             if (not dataset or b.get("DatasetName") == dataset) and (not name or name in (b.get("URI") or ""))]
    start = bisect.bisect_right(items, after, key=binding_key) if after else 0
    page = items[start:start + limit]
    result = {"Bindings": page}
    if start + len(page) < len(items):
        last = page[-1]
        result["NextToken"] = f"{project}:{last.get('DatasetName') or ''}:{last.get('URI') or ''}"
    return result


def synthetic_bindings_result(project, size):
    """A ListBindings result of about size bytes, for the 'big' fault."""
    def item(i):
        return {"ProjectName": project, "DatasetName": "big-dataset", "URI": f"oss://big-bucket/{i:08d}/",
                "State": "Ready", "Phase": "IncrementalScanning", "Reason": "",
                "CreateTime": "2024-01-02T03:04:05.000000000+08:00",
                "UpdateTime": "2024-01-02T03:04:05.000000000+08:00"}
    # Every item has the same length (zero-padded index), so the count is exact arithmetic.
    per_item = len(json_bytes(item(0))) + 1
    return {"Bindings": [item(i) for i in range(max(1, size // per_item))]}


# ---------------------------------------------------------------------------
# The mutable state behind every action: projects, datasets and bindings, and
# the binding lifecycle.  Built afresh from a BindingData on start, reset and
# /_imm/data, so the startup data itself is never changed.
# ---------------------------------------------------------------------------

DEFAULT_BINDING_START_DELAY = 0.3   # seconds a new binding stays Ready before it is Running
BINDING_STATES = ("Ready", "Running", "Retrying", "Stopped", "Failed", "Deleted")
# oss://<bucket>[/<prefix>/]: a bucket name is 3-63 lowercase letters, digits and
# hyphens, starting and ending with a letter or digit; a prefix ends with "/".
OSS_URI_RE = re.compile(r"^oss://[a-z0-9][a-z0-9-]{1,61}[a-z0-9](/|/[^\r\n]*/)?$")
CST = timezone(timedelta(hours=8))


def rfc3339_nano(when=None):
    """The service's time format, e.g. 2024-03-18T07:21:35.123456000+08:00."""
    t = (when or datetime.now(timezone.utc)).astimezone(CST)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000+08:00"


def required(params, name):
    value = params.get(name, "")
    if not value:
        raise missing_parameter(name)
    return value


def parse_name_token(value):
    """ListProjects / ListDatasets NextToken: the name of the last item returned."""
    return value or None


def name_page(items, key, params):
    """A page of items (sorted by key) after NextToken, filtered by Prefix."""
    limit = parse_max_results(params.get("MaxResults"))
    after = parse_name_token(params.get("NextToken"))
    prefix = params.get("Prefix") or ""
    items = [i for i in items if i[key].startswith(prefix)]
    start = bisect.bisect_right(items, after, key=lambda i: i[key]) if after else 0
    page = items[start:start + limit]
    token = page[-1][key] if start + len(page) < len(items) else None
    return page, token


def parse_tags(value):
    """Tag: a JSON array of {"Key", "Value"} (the SDK's request model, sent as TagShrink);
    returned as the response's {"TagKey", "TagValue"}."""
    if not value:
        return []
    try:
        tags = parse_json(value)
    except ValueError:
        raise ApiError(400, "InvalidParameter.Tag", f"The parameter Tag must be a JSON array, got {value[:60]!r}.")
    if not isinstance(tags, list) or not all(
            isinstance(t, dict) and isinstance(t.get("Key"), str) and isinstance(t.get("Value", ""), str)
            for t in tags):
        raise ApiError(400, "InvalidParameter.Tag",
                       'The parameter Tag must be a JSON array of {"Key": ..., "Value": ...}.')
    return [{"TagKey": t["Key"], "TagValue": t.get("Value", "")} for t in tags]


class Store:
    """Projects, datasets and bindings behind one lock.  A binding made by
    CreateBinding starts Ready and turns Running once start_delay has passed; the
    change is applied when the binding is next read (GetBinding, ListBindings)."""

    def __init__(self, data, start_delay=DEFAULT_BINDING_START_DELAY):
        self.lock = threading.RLock()
        self.start_delay = start_delay
        stamp = rfc3339_nano()
        self.projects = {}
        for name in sorted(data.projects):
            record = {"ProjectName": name, "Description": "", "CreateTime": stamp, "UpdateTime": stamp,
                      "Tags": []}
            record.update(data.project_records.get(name, {}))
            self.projects[name] = record
        self.by_project = {p: [dict(b) for b in items] for p, items in data.by_project.items()}
        self.datasets = {}     # (project, dataset) -> record
        for d in data.dataset_records:
            self.datasets[(d["ProjectName"], d["DatasetName"])] = \
                {"Description": "", "CreateTime": stamp, "UpdateTime": stamp, **d}
        for p, items in self.by_project.items():
            for b in items:
                key = (p, b.get("DatasetName") or "")
                if key[1] and key not in self.datasets:
                    self.datasets[key] = {"ProjectName": p, "DatasetName": key[1], "Description": "",
                                          "CreateTime": stamp, "UpdateTime": stamp}
        self.starting = {}     # (project, dataset, uri) -> time.monotonic() when it turns Running

    # -- helpers (call with the lock held) --

    def _project(self, name):
        if name not in self.projects:
            raise ApiError(404, "ResourceNotFound", f"The specified project {name} does not exist.")
        return self.projects[name]

    def _dataset(self, project, name):
        self._project(project)
        if (project, name) not in self.datasets:
            raise ApiError(404, "ResourceNotFound", f"The specified dataset {name} does not exist.")
        return self.datasets[(project, name)]

    def _find(self, project, dataset, uri):
        for b in self.by_project.get(project, []):
            if b.get("DatasetName") == dataset and b.get("URI") == uri:
                return b
        return None

    def _binding(self, params):
        project, dataset = required(params, "ProjectName"), required(params, "DatasetName")
        uri = required(params, "URI")
        self._dataset(project, dataset)
        b = self._find(project, dataset, uri)
        if b is None:
            raise ApiError(404, "ResourceNotFound", f"The specified binding {uri} of dataset {dataset} does not exist.")
        self._advance(b)
        return b

    def _advance(self, b):
        key = (b["ProjectName"], b.get("DatasetName"), b.get("URI"))
        due = self.starting.get(key)
        if due is not None and time.monotonic() >= due:
            del self.starting[key]
            if b.get("State") == "Ready":
                b.update(State="Running", Phase="FullScanning", UpdateTime=rfc3339_nano())

    # -- actions: each returns the result without RequestId, or raises ApiError --

    def list_bindings(self, params):
        with self.lock:
            project = params.get("ProjectName", "")
            for key in [k for k in self.starting if k[0] == project]:
                self._advance(self._find(*key))
            result = list_bindings(self, params)
            result["Bindings"] = [dict(b) for b in result["Bindings"]]
            return result

    def create_binding(self, params):
        project, dataset = required(params, "ProjectName"), required(params, "DatasetName")
        uri = required(params, "URI")
        if not OSS_URI_RE.match(uri):
            raise ApiError(400, "InvalidParameter.URI",
                           f"The parameter URI must look like oss://bucket or oss://bucket/prefix/, got {uri!r}.")
        with self.lock:
            self._dataset(project, dataset)
            if self._find(project, dataset, uri) is not None:
                raise ApiError(409, "ResourceAlreadyExist", f"The binding {uri} of dataset {dataset} already exists.")
            stamp = rfc3339_nano()
            b = {"ProjectName": project, "DatasetName": dataset, "URI": uri, "State": "Ready", "Phase": "",
                 "Reason": "", "CreateTime": stamp, "UpdateTime": stamp}
            bisect.insort(self.by_project.setdefault(project, []), b, key=binding_key)
            self.starting[(project, dataset, uri)] = time.monotonic() + self.start_delay
            return {"Binding": dict(b)}

    def get_binding(self, params):
        with self.lock:
            return {"Binding": dict(self._binding(params))}

    def stop_binding(self, params):
        with self.lock:
            b = self._binding(params)
            self.starting.pop((b["ProjectName"], b["DatasetName"], b["URI"]), None)
            b.update(State="Stopped", Reason=params.get("Reason", ""), UpdateTime=rfc3339_nano())
            return {}

    def resume_binding(self, params):
        with self.lock:
            b = self._binding(params)
            b.update(State="Running", Phase=b.get("Phase") or "FullScanning", Reason="",
                     UpdateTime=rfc3339_nano())
            return {}

    def delete_binding(self, params):
        with self.lock:
            b = self._binding(params)
            self.by_project[b["ProjectName"]].remove(b)
            self.starting.pop((b["ProjectName"], b["DatasetName"], b["URI"]), None)
            return {}

    def create_project(self, params):
        name = required(params, "ProjectName")
        tags = parse_tags(params.get("Tag"))
        with self.lock:
            if name in self.projects:
                raise ApiError(409, "ResourceAlreadyExist", f"The project {name} already exists.")
            stamp = rfc3339_nano()
            self.projects[name] = {"ProjectName": name, "Description": params.get("Description", ""),
                                   "CreateTime": stamp, "UpdateTime": stamp, "Tags": tags}
            return {"Project": self._project_view(name)}

    def _project_view(self, name):
        view = dict(self.projects[name])
        view["DatasetCount"] = sum(1 for (p, _) in self.datasets if p == name)
        return view

    def list_projects(self, params):
        wanted = parse_tags(params.get("Tag"))
        with self.lock:
            views = [self._project_view(n) for n in sorted(self.projects)]
            views = [v for v in views if all(t in v.get("Tags", []) for t in wanted)]
            page, token = name_page(views, "ProjectName", params)
        return {"Projects": page, **({"NextToken": token} if token else {})}

    def create_dataset(self, params):
        project, name = required(params, "ProjectName"), required(params, "DatasetName")
        with self.lock:
            self._project(project)
            if (project, name) in self.datasets:
                raise ApiError(409, "ResourceAlreadyExist", f"The dataset {name} already exists.")
            stamp = rfc3339_nano()
            record = {"ProjectName": project, "DatasetName": name, "Description": params.get("Description", ""),
                      "CreateTime": stamp, "UpdateTime": stamp}
            self.datasets[(project, name)] = record
            return {"Dataset": dict(record)}

    def list_datasets(self, params):
        project = required(params, "ProjectName")
        with self.lock:
            self._project(project)
            items = sorted((dict(d) for (p, _), d in self.datasets.items() if p == project),
                           key=lambda d: d["DatasetName"])
        page, token = name_page(items, "DatasetName", params)
        return {"Datasets": page, **({"NextToken": token} if token else {})}

    # -- control --

    def force_state(self, payload):
        """/_imm/binding-state: {ProjectName, DatasetName, URI, State[, Reason, Phase]}."""
        if (not isinstance(payload, dict) or payload.get("State") not in BINDING_STATES
                or not all(isinstance(payload.get(k), str) for k in ("ProjectName", "DatasetName", "URI"))):
            raise ValueError(f"binding-state needs ProjectName, DatasetName and URI (strings) and a State, "
                             f"one of: {', '.join(BINDING_STATES)}")
        with self.lock:
            b = self._find(payload.get("ProjectName"), payload.get("DatasetName"), payload.get("URI"))
            if b is None:
                raise ValueError("no such binding")
            self.starting.pop((b["ProjectName"], b["DatasetName"], b["URI"]), None)
            b.update(State=payload["State"], UpdateTime=rfc3339_nano())
            for k in ("Reason", "Phase"):
                if isinstance(payload.get(k), str):
                    b[k] = payload[k]
            return dict(b)


# action name -> the Store method that answers it
ACTIONS = {
    "ListBindings": Store.list_bindings,
    "CreateBinding": Store.create_binding,
    "GetBinding": Store.get_binding,
    "StopBinding": Store.stop_binding,
    "ResumeBinding": Store.resume_binding,
    "DeleteBinding": Store.delete_binding,
    "CreateProject": Store.create_project,
    "ListProjects": Store.list_projects,
    "CreateDataset": Store.create_dataset,
    "ListDatasets": Store.list_datasets,
}


# ---------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------

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


def action_reply(req, store, request_id):
    """The real answer: version and action routing, then the action (ACTIONS)."""
    version = req.headers.get("x-acs-version") or req.params.get("Version")
    if version != API_VERSION:
        raise ApiError(400, "InvalidVersion", f"Specified parameter Version {version!r} is not valid.")
    action = req.headers.get("x-acs-action") or req.params.get("Action")
    if not action:
        raise missing_parameter("Action")
    answer = ACTIONS.get(action)
    if answer is None:
        raise ApiError(404, "InvalidAction.NotFound",
                       f"Specified api {action} is not found, please check your url and method.")
    return Reply(200, json_bytes({"RequestId": request_id, **answer(store, req.params)}), request_id)


# ---------------------------------------------------------------------------
# Request log
# ---------------------------------------------------------------------------

class RequestLog:
    """One record per API request, in arrival order.  seq keeps increasing across
    clears, so records fetched before and after a clear never share a number."""

    def __init__(self):
        self._lock = threading.Lock()
        self._records = []
        self._seq = itertools.count(1)
        self.total = 0

    def begin(self, **fields):
        with self._lock:
            record = {"seq": next(self._seq), "start": time.monotonic(), "end": None, **fields,
                      "status": None, "fault": None, "gzip": False}
            self._records.append(record)
            self.total += 1
            return record

    def update(self, record, **fields):
        with self._lock:
            record.update(fields)

    def finish(self, record):
        with self._lock:
            record["end"] = time.monotonic()

    def snapshot(self):
        with self._lock:
            return [dict(r) for r in self._records]

    def clear(self):
        with self._lock:
            self._records.clear()


def redacted_headers(headers):
    return {k: (REDACTED if k in ("authorization", "x-acs-security-token") else v) for k, v in headers.items()}


def logged_params(params):
    return {k: (REDACTED if k == "SecurityToken" else v) for k, v in params.items() if k != "Signature"}


# ---------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------

class BadRequest(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class ImmHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "imm-local/1.0"
    timeout = IDLE_TIMEOUT_SECONDS
    # Each reply goes out in at most a few writes; without Nagle a trickled or
    # truncated body leaves the server when written, which is what faults need.
    disable_nagle_algorithm = True

    # -- connection lifecycle -------------------------------------------------

    def setup(self):
        self.conn_id = self.server.take_conn_id(self.request)
        if self.server.ssl_context is not None:
            # Handshake here, in the connection's own thread, so a slow client
            # cannot block the accept loop.
            self.request.settimeout(HANDSHAKE_TIMEOUT_SECONDS)
            self.request = self.server.ssl_context.wrap_socket(self.request, server_side=True)
        super().setup()

    def finish(self):
        super().finish()
        # socketserver closes the socket it accepted; a TLS wrapper is ours to close.
        if self.server.ssl_context is not None:
            self.server.shutdown_request(self.request)

    def abort_connection(self):
        """Close with SO_LINGER 0, so the peer gets a RST instead of a FIN."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()            # drop the makefile reference so close() really closes
        self.connection.close()
        self.close_connection = True

    def version_string(self):
        return self.server_version     # the default appends sys_version, leaving a trailing space

    def log_request(self, code="-", size="-"):
        pass   # one line per API request is written by log_api instead

    def log_message(self, fmt, *args):
        if not self.server.quiet:
            sys.stderr.write(f"imm_server: {self.address_string()} {fmt % args}\n")

    # -- dispatch -------------------------------------------------------------

    def do_GET(self):
        self.dispatch()

    do_POST = do_DELETE = do_PUT = do_GET

    def dispatch(self):
        path, _, raw_query = self.path.partition("?")
        self.head_sent = False
        try:
            body = self.read_body()
        except BadRequest as err:
            self.close_connection = True
            self.write_error(err.status, str(err))
            return
        try:
            if path.startswith("/_imm/"):
                self.serve_control(path, body)
            else:
                self.serve_api(path, raw_query, body)
        except Exception as err:      # a bug in this server: still an answer, and the traceback
            sys.stderr.write(f"imm_server: {type(err).__name__} answering {self.command} {path}\n")
            traceback.print_exc()
            self.close_connection = True
            if not self.head_sent:
                self.write_error(500, f"the local server failed: {type(err).__name__}")

    def read_body(self):
        """The request body, at most MAX_BODY_BYTES, or BadRequest.  Only plain
        digits make a Content-Length or a chunk size (int() would also take a
        sign, "_" and other scripts' digits, and a size of -1 reads to EOF)."""
        encoding = self.headers.get("Transfer-Encoding")
        if encoding is not None:
            if encoding.strip().lower() != "chunked":
                raise BadRequest(400, f"unsupported Transfer-Encoding {encoding[:40]!r}: only chunked")
            return self.read_chunked_body()
        lengths = self.headers.get_all("Content-Length") or ["0"]
        if len(set(v.strip() for v in lengths)) != 1 or not re.fullmatch(r"[0-9]{1,20}", lengths[0].strip()):
            raise BadRequest(400, "bad Content-Length")
        length = int(lengths[0])
        if length > MAX_BODY_BYTES:
            raise BadRequest(413, f"request body too large (over {MAX_BODY_BYTES} bytes)")
        body = self.rfile.read(length)
        if len(body) < length:
            raise BadRequest(400, f"the body ended after {len(body)} of {length} bytes")
        return body

    def read_chunked_body(self):
        parts, total = [], 0
        while True:
            line = self.rfile.readline(1024)
            m = re.fullmatch(rb"([0-9A-Fa-f]{1,16})[ \t]*(;[^\r\n]*)?\r?\n", line)
            if not m:
                raise BadRequest(400, "bad chunk size")
            size = int(m.group(1), 16)
            if size == 0:
                break
            total += size
            if total > MAX_BODY_BYTES:
                raise BadRequest(413, f"request body too large (over {MAX_BODY_BYTES} bytes)")
            parts.append(self.rfile.read(size))
            if len(parts[-1]) < size or self.rfile.readline(3) not in (b"\r\n", b"\n"):
                raise BadRequest(400, "a chunk is cut short or not followed by CRLF")
        for _ in range(100):                         # trailers, up to the empty line
            line = self.rfile.readline(8192)
            if not line.strip():
                return b"".join(parts)
        raise BadRequest(400, "too many trailer lines")

    def request_headers(self):
        headers = {}
        for name, value in self.headers.items():
            name = name.lower()
            headers[name] = f"{headers[name]},{value}" if name in headers else value
        return headers

    # -- control API ----------------------------------------------------------

    def serve_control(self, path, body):
        handler = self.server.control_routes.get((self.command, path))
        if handler is None:
            self.write_error(404, f"no control endpoint {self.command} {path}")
            return
        try:
            payload = parse_json(body or b"null") if self.command == "POST" else None
            result = json_bytes(handler(payload))
        except (ValueError, TypeError) as err:   # JSON errors; fields of the wrong type
            self.write_error(400, str(err))
            return
        self.write_simple(200, result)

    def write_simple(self, status, body):
        self.write_head(status, [("Content-Type", JSON_TYPE)], len(body))
        self.wfile.write(body)

    def write_error(self, status, message):
        """An error before the API or from the control routes: the service's
        shape, with "ok": false and "error" as the control API always had."""
        request_id = new_request_id()
        host = self.headers.get("Host", "") if self.headers is not None else ""
        doc = error_body(HTTP_ERROR_CODES.get(status, "BadRequest"), message, request_id, host)
        self.write_simple(status, json_bytes({**doc, "ok": False, "error": message}))

    # -- what http.server refuses itself --------------------------------------

    def parse_request(self):
        # RFC 9112 2.2: empty lines before a request line are ignored (http.server
        # would hang up without a word)
        for _ in range(4):
            if self.raw_requestline not in (b"\r\n", b"\n"):
                break
            self.raw_requestline = self.rfile.readline(65537)
        if len(self.raw_requestline) > 65536:
            self.send_error(414)
            return False
        if not super().parse_request():
            return False
        if self.request_version == "HTTP/0.9":      # its reply would have no status line
            self.send_error(400, "HTTP/0.9 requests are not served")
            return False
        return True

    def send_error(self, code, message=None, explain=None):
        """http.server's refusals (a bad request line or version, a line over
        64 KiB, too many headers, an unknown method) as JSON in the service's
        shape, and always 4xx: 501 (method) is 405, 505 (version) is 400.  Its
        HTML page would not be JSON, and before the version is read it wrote
        the page without a status line."""
        code = {501: 405, 505: 400}.get(int(code), int(code))
        if getattr(self, "request_version", "") in ("HTTP/0.9", ""):
            self.request_version = "HTTP/1.0"      # so that a status line and headers go out
        self.close_connection = True
        request_id = new_request_id()
        text = message or http.HTTPStatus(code).phrase
        body = json_bytes(error_body(HTTP_ERROR_CODES.get(code, "BadRequest"), text, request_id, ""))
        self.send_response(code)
        self.send_header("Content-Type", JSON_TYPE)
        self.send_header("Connection", "close")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if getattr(self, "command", None) != "HEAD":
            self.wfile.write(body)

    # -- API ------------------------------------------------------------------

    def serve_api(self, path, raw_query, body):
        headers = self.request_headers()
        params = {}
        if headers.get("content-type", "").lower().startswith("application/x-www-form-urlencoded"):
            # A form body follows HTML form rules ('+' is a space), unlike the query string.
            params.update(urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        params.update(parse_query(raw_query))
        req = ApiRequest(self.command, path, raw_query, headers, body, params)
        record = self.server.log.begin(
            conn=self.conn_id, method=self.command,
            action=headers.get("x-acs-action") or params.get("Action"),
            params=logged_params(params), headers=redacted_headers(headers),
            signature=signature_scheme(req))
        try:
            self.answer_api(req, record)
        except (ConnectionError, TimeoutError, ssl.SSLError) as err:
            # The client went away mid-reply (expected with trickle, stall, ...).
            self.close_connection = True
            self.end_record(record, f"client-gone={type(err).__name__}")
        finally:
            self.end_record(record)

    def end_record(self, record, note=None):
        """Close the request's log record, once.  Called before the reply's last bytes
        go out, so a client that reads /_imm/log as soon as it has its reply finds the
        record complete."""
        if record["end"] is None:
            self.server.log.finish(record)
            self.log_api(record, note)

    def answer_api(self, req, record):
        server = self.server
        request_id = new_request_id()
        rule = server.faults.take(CONNECTION_FAULTS, req.params)
        if rule is None:
            try:
                if req.method not in ("GET", "POST") or req.path != "/":
                    raise ApiError(404, "InvalidAction.NotFound",
                                   "Specified api is not found, please check your url and method.")
                verify_request(req, server.creds, server.nonces, datetime.now(timezone.utc))
                rule = server.faults.take(None, req.params)
                reply = fault_reply(rule, req, request_id) if rule else None
                if reply is None:
                    reply = action_reply(req, server.store, request_id)
                    if rule and rule.mode == "odd_values" and reply.status == 200:
                        depth = int(rule.option("depth", 0))
                        deep = b'"Deep":' + b"[" * depth + b"]" * depth + b"," if depth > 0 else b""
                        reply.body = reply.body.replace(b'"URI":', b'"Odd":"\xff\xfe","Big":1e400,' + deep + b'"URI":', 1)
            except ApiError as err:
                reply = error_reply(err, request_id, req.host)
        server.log.update(record, fault=rule.mode if rule else None)
        # A reset or stall rule may also reach the head between the two takes.
        if rule is not None and rule.mode in CONNECTION_FAULTS:
            self.apply_connection_fault(rule, record)
        else:
            self.deliver(reply, rule, record)

    def apply_connection_fault(self, rule, record):
        if rule.mode == "reset":
            self.end_record(record)
            self.abort_connection()
        else:   # stall: say nothing, then hang up cleanly (socketserver closes after we return)
            time.sleep(float(rule.option("delay", 30.0)))
            self.close_connection = True

    def encode_body(self, reply):
        """(body, headers, gzipped): gzip when the client accepts it."""
        headers = [("Content-Type", reply.content_type)]
        if reply.request_id is not None:
            headers.append(("x-acs-request-id", reply.request_id))
        headers += reply.headers
        body, encoding = reply.body, reply.content_encoding
        if encoding is None and "gzip" in self.headers.get("Accept-Encoding", "").lower():
            body, encoding = gzip.compress(body, mtime=0), "gzip"
        if encoding is not None:
            headers.append(("Content-Encoding", encoding))
        return body, headers, encoding == "gzip"

    def deliver(self, reply, rule, record):
        """Send reply; rule (slow, trickle, truncated, ...) may change how.  Every
        path ends the log record before the bytes that let the client finish."""
        mode = rule.mode if rule else None
        if mode == "reset_after":
            # The action has been carried out; the client never hears about it.
            self.end_record(record)
            self.abort_connection()
            return
        body, headers, gzipped = self.encode_body(reply)
        self.server.log.update(record, status=reply.status, gzip=gzipped)
        if mode == "slow":
            time.sleep(float(rule.option("delay", 1.0)))
        half = len(body) // 2
        self.write_head(reply.status, headers, half if mode == "overrun" else len(body))
        if mode == "trickle":
            # Headers go out at once; only the body trickles, so a client's
            # low-speed or total timeout fires while it reads the body.
            interval = float(rule.option("interval", 0.5))
            for i in range(len(body) - 1):
                self.wfile.write(body[i:i + 1])
                time.sleep(interval)
            self.end_record(record)
            self.wfile.write(body[-1:])
        elif mode in ("truncated", "reset_mid_body"):
            self.wfile.write(body[:half])
            self.end_record(record)
            if mode == "reset_mid_body":
                self.abort_connection()
            else:
                self.close_connection = True     # FIN after half the promised body
        else:
            self.end_record(record)
            self.wfile.write(body)
            if mode == "overrun":
                # The excess bytes would be read as the next response; hang up instead.
                self.close_connection = True

    def write_head(self, status, headers, content_length):
        self.head_sent = True
        self.send_response(status)            # also sends Server and Date
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(content_length))
        if self.close_connection:             # set by a client's "Connection: close"
            self.send_header("Connection", "close")
        self.end_headers()

    def log_api(self, record, note=None):
        if self.server.quiet:
            return
        words = [f"imm_server: #{record['seq']}", f"conn={record['conn']}", record["method"],
                 record["action"] or "-", record["signature"] or "unsigned", "->",
                 str(record["status"] or "no-reply")]
        words += [f"fault={record['fault']}"] if record["fault"] else []
        words += ["gzip"] if record["gzip"] else []
        words += [note] if note else []
        words.append(f"{(record['end'] - record['start']) * 1000:.1f}ms")
        sys.stderr.write(" ".join(words) + "\n")
        sys.stderr.flush()


class ImmServer(ThreadingHTTPServer):
    daemon_threads = True          # a stalled connection must not keep the process alive
    allow_reuse_address = True
    request_queue_size = 128       # concurrency tests open many connections at once

    def __init__(self, address, creds, data, ssl_context=None, faults=(), quiet=False,
                 binding_start_delay=DEFAULT_BINDING_START_DELAY):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.creds, self.ssl_context, self.quiet = creds, ssl_context, quiet
        self.startup_data = data
        self.startup_start_delay = binding_start_delay
        self.store = Store(data, binding_start_delay)
        self.faults = FaultQueue(faults)
        self.log = RequestLog()
        self.nonces = NonceCache()
        self.connections = 0
        self._conn_ids = {}
        self._conn_lock = threading.Lock()
        self.control_routes = {
            ("GET", "/_imm/health"): lambda _: {"ok": True},
            ("GET", "/_imm/log"): lambda _: self.log.snapshot(),
            ("DELETE", "/_imm/log"): self.clear_log,
            ("GET", "/_imm/stats"): lambda _: {"connections": self.connections, "requests": self.log.total},
            ("GET", "/_imm/faults"): lambda _: self.faults.snapshot(),
            ("POST", "/_imm/faults"): self.add_fault,
            ("DELETE", "/_imm/faults"): self.clear_faults,
            ("POST", "/_imm/data"): self.replace_data,
            ("GET", "/_imm/settings"): lambda _: self.settings(),
            ("POST", "/_imm/settings"): self.change_settings,
            ("POST", "/_imm/binding-state"): lambda payload: self.store.force_state(payload),
            ("POST", "/_imm/reset"): self.reset,
        }
        super().__init__(address, ImmHandler)

    def server_bind(self):
        # HTTPServer.server_bind would call socket.getfqdn(), a reverse DNS lookup
        # that can hang for seconds on a machine without DNS; tests need a fast start.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    # -- connection ids -------------------------------------------------------

    def process_request(self, request, client_address):
        # Runs in the accept loop, so ids increase in the order connections are accepted.
        with self._conn_lock:
            self.connections += 1
            self._conn_ids[request] = self.connections
        super().process_request(request, client_address)

    def take_conn_id(self, request):
        with self._conn_lock:
            return self._conn_ids.pop(request)

    def handle_error(self, request, client_address):
        with self._conn_lock:
            self._conn_ids.pop(request, None)
        err = sys.exc_info()[1]
        if not isinstance(err, OSError):      # a bug in this server: show the traceback
            super().handle_error(request, client_address)
        elif not self.quiet:
            # One line, no traceback: failed TLS handshakes and clients that hang
            # up are normal in negative tests.
            sys.stderr.write(f"imm_server: connection from {client_address[0]}: {type(err).__name__}: {err}\n")

    # -- control API (routes in __init__) ---------------------------------------

    def clear_log(self, _payload):
        self.log.clear()
        return {"ok": True}

    def clear_faults(self, _payload):
        self.faults.clear()
        return {"ok": True}

    def add_fault(self, payload):
        self.faults.add(parse_fault_rule(payload))
        return {"ok": True, "faults": self.faults.snapshot()}

    def replace_data(self, payload):
        data = BindingData(payload)
        self.store = Store(data, self.store.start_delay)
        return {"ok": True, "bindings": sum(map(len, data.by_project.values())),
                "projects": sorted(data.projects)}

    def settings(self):
        return {"binding_start_delay": self.store.start_delay}

    def change_settings(self, payload):
        if not isinstance(payload, dict) or set(payload) - {"binding_start_delay"}:
            raise ValueError("settings: only binding_start_delay can be set")
        delay = payload.get("binding_start_delay", self.store.start_delay)
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay <= 3600:
            raise ValueError("binding_start_delay must be a number of seconds from 0 to 3600")
        self.store.start_delay = float(delay)
        return {"ok": True, **self.settings()}

    def reset(self, _payload):
        self.store = Store(self.startup_data, self.startup_start_delay)
        self.faults.clear()
        self.log.clear()
        self.nonces.clear()
        return {"ok": True}


# ---------------------------------------------------------------------------
# --check-vectors
# ---------------------------------------------------------------------------

def compare(problems, what, expected, got):
    if expected != got:
        problems.append(f"{what}:\n    expected {expected!r}\n    got      {got!r}")


def check_v3_vector(case, key_id, secret):
    problems = []
    headers = {k.lower(): v for k, v in case["headers"].items()}
    raw_query = "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in case["query"].items())
    # "body": a form body (signing_body.json); its parameters count as the server's would
    body = case.get("body", "").encode("utf-8")
    params = dict(parse_query(raw_query))
    if "body" in case:
        params = dict(urllib.parse.parse_qsl(case["body"], keep_blank_values=True), **params)
    req = ApiRequest(case["method"], case["path"], raw_query, dict(headers, authorization=case["authorization"]),
                     body, params)
    auth = parse_v3_authorization(case["authorization"])
    canonical, string_to_sign, signature = compute_v3(req, auth, secret)
    compare(problems, "canonical_request", case["canonical_request"], canonical)
    compare(problems, "string_to_sign", case["string_to_sign"], string_to_sign)
    compare(problems, "authorization", case["authorization"],
            v3_authorization(auth.algorithm, key_id, auth.signed_headers, signature))
    compare(problems, "body hash", headers["x-acs-content-sha256"], hex_digest(auth.algorithm, body))
    # And the whole verifier, as a live request would meet it.
    creds = Credentials(key_id, secret, headers.get("x-acs-security-token"))
    try:
        # The vectors are dated: verify "at" their own time so the window check passes.
        verify_request(req, creds, NonceCache(), parse_timestamp(headers["x-acs-date"]))
    except ApiError as err:
        problems.append(f"verifier refused it: {err.code}: {err.message}")
    return problems


def check_v2_vector(case, key_id, secret):
    problems = []
    string_to_sign = v2_string_to_sign(case["method"], case["params"])
    signature = v2_signature(secret, string_to_sign)
    compare(problems, "string_to_sign", case["string_to_sign"], string_to_sign)
    compare(problems, "signature", case["signature"], signature)
    params = dict(case["params"], Signature=case["signature"])
    body, headers = b"", {}
    if "body" in case:
        # The body parameters are signed with the rest; the server reads them from the body.
        compare(problems, "body parameters", case.get("form", {}),
                dict(urllib.parse.parse_qsl(case["body"], keep_blank_values=True)))
        body, headers = case["body"].encode("utf-8"), {"content-type": "application/x-www-form-urlencoded"}
    req = ApiRequest(case["method"], "/", "", headers, body, params)
    creds = Credentials(key_id, secret, params.get("SecurityToken"))
    try:
        verify_request(req, creds, NonceCache(), parse_timestamp(params["Timestamp"]))
    except ApiError as err:
        problems.append(f"verifier refused it: {err.code}: {err.message}")
    return problems


def check_pure_sm3_vector(case, secret):
    """The pure-Python fallback must agree too, even where OpenSSL's SM3 is in use."""
    problems = []
    digest = SM3(case["canonical_request"].encode("utf-8")).hexdigest()
    compare(problems, "string_to_sign", case["string_to_sign"], f"{case['algorithm']}\n{digest}")
    mac = hmac.new(secret.encode(), case["string_to_sign"].encode(), SM3).hexdigest()
    compare(problems, "signature", case["authorization"].rsplit("Signature=", 1)[1], mac)
    return problems


def check_vectors(path):
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    key_id, secret = doc["access_key_id"], doc["access_key_secret"]
    checks = [(f"v3/{c['name']}", lambda c=c: check_v3_vector(c, key_id, secret)) for c in doc.get("v3", [])]
    checks += [(f"v2/{c['name']}", lambda c=c: check_v2_vector(c, key_id, secret)) for c in doc.get("v2", [])]
    checks += [(f"v3/{c['name']} (pure-Python SM3)", lambda c=c: check_pure_sm3_vector(c, secret))
               for c in doc.get("v3", []) if c["algorithm"] == "ACS3-HMAC-SM3"]
    failed = 0
    for name, check in checks:
        problems = check()
        if problems:
            failed += 1
            print(f"FAIL {name}")
            for problem in problems:
                print(f"  {problem}")
    print(f"{len(checks) - failed} passed, {failed} failed")
    return 1 if failed else 0


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

class _Stop(BaseException):
    """Raised by the signal handler to leave serve_forever cleanly.  A BaseException,
    like KeyboardInterrupt, because socketserver swallows any Exception raised while
    it is accepting a connection, and then the server would keep running."""


def _raise_stop(_signum, _frame):
    raise _Stop()


def parse_args(argv):
    p = argparse.ArgumentParser(description="Local IMM (2020-09-30) ListBindings server for tests.")
    p.add_argument("--port", type=int, help="port to listen on; 0 picks a free one")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--tls", metavar="CERTDIR", help="serve HTTPS with CERTDIR/server.crt and server.key")
    p.add_argument("--bindings-file", default=DEFAULT_DATA_FILE)
    p.add_argument("--access-key-id", default=DEFAULT_KEY_ID)
    p.add_argument("--access-key-secret", default=DEFAULT_SECRET)
    p.add_argument("--security-token", default=None)
    p.add_argument("--port-file", help="write the actual port here once listening")
    p.add_argument("--fault", action="append", default=[], type=parse_fault_arg, metavar="MODE[:COUNT]",
                   help=f"preload a fault rule; modes: {', '.join(FAULT_MODES)}")
    p.add_argument("--binding-start-delay", type=float, default=DEFAULT_BINDING_START_DELAY, metavar="SECONDS",
                   help="how long a new binding stays Ready before it is Running (default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no per-request log lines")
    p.add_argument("--check-vectors", metavar="FILE", help="check the signer against a vectors file and exit")
    args = p.parse_args(argv)
    if args.check_vectors is None and args.port is None:
        p.error("--port is required (or use --check-vectors)")
    if args.binding_start_delay < 0:
        p.error("--binding-start-delay must not be negative")
    return args


def write_port_file(path, port):
    # Write then rename, so a reader polling for the file never sees it half-written.
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(f"{port}\n")
    os.replace(tmp, path)


def make_ssl_context(certdir):
    cert, key = os.path.join(certdir, "server.crt"), os.path.join(certdir, "server.key")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(cert, key)
    except OSError as err:      # the bare error does not say which file
        raise ValueError(f"cannot load {cert} and {key} (make them with tools/gen_certs.sh): {err}")
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def main(argv=None):
    args = parse_args(argv)
    if args.check_vectors is not None:
        return check_vectors(args.check_vectors)
    try:
        data = BindingData.from_file(args.bindings_file)
        ssl_context = make_ssl_context(args.tls) if args.tls else None
        server = ImmServer((args.host, args.port),
                           Credentials(args.access_key_id, args.access_key_secret, args.security_token),
                           data, ssl_context, args.fault, args.quiet, args.binding_start_delay)
    except (OSError, ValueError) as err:
        print(f"imm_server: {err}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    try:
        port = server.server_address[1]
        if args.port_file:
            write_port_file(args.port_file, port)
        host = f"[{args.host}]" if ":" in args.host else args.host
        print(f"imm_server listening on {'https' if ssl_context else 'http'}://{host}:{port}", flush=True)
        server.serve_forever()
    except _Stop:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
