"""Request signatures, verified as the service does: V3 (ACS3-HMAC-SHA256 and
ACS3-HMAC-SM3) and V2 (HMAC-SHA1), the time window and the nonce cache; and
--check-vectors, which runs the official SDK's vectors through these very
functions, so passing them proves the verifier agrees with the official SDK."""

import base64
import collections
import hashlib
import hmac
import json
import re
import struct
import threading
import time
import urllib.parse
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Optional

from .replies import ApiError, incomplete_signature, missing_parameter

TIME_WINDOW_SECONDS = 15 * 60
# A nonce must be remembered for as long as its signed timestamp is still accepted:
# the timestamp may be up to one window in the future, so two windows in all.
NONCE_TTL_SECONDS = 2 * TIME_WINDOW_SECONDS
MAX_NONCES = 100000    # about 15 MB; more requests than that in two windows evict the oldest


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


