"""Task notifications: when a task ends, the IMM task message (docs/testing.md,
"Notifications") is POSTed to the target set with POST /_imm/notify-target, in
an MNS HTTP push envelope (JSON) or alone.  Sent from one worker thread, so the
task clock never waits on a slow receiver; the last deliveries are kept for
GET /_imm/notifications.  Only http:// URLs on loopback: the server never
reaches beyond the machine.

Unsigned unless given an RSA private key and the URL its certificate is served
at: then each push is signed as MNS signs it (RSA-SHA1 over MNS's string to
sign, in Authorization; the certificate URL in base64 in x-mns-signing-cert-url),
so a receiver that verifies MNS signatures (imm.notification.mns_handler) can
be tested end to end.  Python's standard library has no RSA: the PKCS#1 v1.5
signature is the few lines below (RFC 8017, 8.2.1 and 9.2)."""

import base64
import binascii
import collections
import hashlib
import json
import re
import queue
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

from .replies import json_bytes

LOOPBACK = ("127.0.0.1", "::1", "localhost")
ENVELOPES = ("mns", "raw")
MAX_PENDING = 1000
KEEP = 1000


# -- RSA signing (RSASSA-PKCS1-v1_5 with SHA-1) --

# DER of DigestInfo's AlgorithmIdentifier for SHA-1 and the digest's OCTET STRING header
SHA1_DIGEST_INFO = bytes.fromhex("3021300906052b0e03021a05000414")
RSA_ENCRYPTION_OID = bytes.fromhex("2a864886f70d010101")
PEM_KEY = re.compile(r"-----BEGIN (RSA )?PRIVATE KEY-----(.*?)-----END \1?PRIVATE KEY-----", re.S)


def _der(data, i):
    """The DER element at data[i]: (tag, content, index after it)."""
    if i + 2 > len(data):
        raise ValueError("truncated")
    tag, length, i = data[i], data[i + 1], i + 2
    if length & 0x80:                  # long form: the next (length & 0x7f) bytes
        n = length & 0x7F
        if not 1 <= n <= 4 or i + n > len(data):
            raise ValueError("bad length")
        length, i = int.from_bytes(data[i:i + n], "big"), i + n
    if i + length > len(data):
        raise ValueError("truncated")
    return tag, data[i:i + length], i + length


def _der_items(data, tag=0x30):
    """The elements inside a SEQUENCE (the whole of data)."""
    t, body, end = _der(data, 0)
    if t != tag or end != len(data):
        raise ValueError("not a SEQUENCE")
    items, i = [], 0
    while i < len(body):
        t, content, i = _der(body, i)
        items.append((t, content))
    return items


def _rsa_private_key(der):
    """(n, d) of a PKCS#1 RSAPrivateKey: SEQUENCE {version, n, e, d, p, q, ...}."""
    items = _der_items(der)
    if len(items) < 4 or any(t != 0x02 for t, _ in items[:4]):
        raise ValueError("not an RSAPrivateKey")
    n, d = (int.from_bytes(items[i][1], "big") for i in (1, 3))
    return n, d


def load_private_key(pem):
    """An RSA private key in PEM, PKCS#1 ("RSA PRIVATE KEY") or unencrypted PKCS#8
    ("PRIVATE KEY"), as (n, d); ValueError for anything else."""
    m = PEM_KEY.search(pem) if isinstance(pem, str) else None
    if not m:
        raise ValueError("signing_key: a PEM RSA private key (BEGIN PRIVATE KEY or BEGIN RSA PRIVATE KEY)")
    try:
        der = base64.b64decode("".join(m.group(2).split()), validate=True)
        if m.group(1):
            n, d = _rsa_private_key(der)
        else:
            # PrivateKeyInfo: SEQUENCE {version, SEQUENCE {OID, params}, OCTET STRING key}
            items = _der_items(der)
            if len(items) < 3 or items[2][0] != 0x04 or RSA_ENCRYPTION_OID not in items[1][1]:
                raise ValueError("not an RSA PrivateKeyInfo")
            n, d = _rsa_private_key(items[2][1])
    except (ValueError, binascii.Error) as err:
        raise ValueError(f"signing_key: not a usable RSA private key ({err})")
    if n.bit_length() < 1024 or not 0 < d < n:
        raise ValueError("signing_key: an RSA key of at least 1024 bits")
    return n, d


def rsa_sha1_sign(key, data):
    """RSASSA-PKCS1-v1_5 signature of data (bytes) with SHA-1, as openssl dgst -sha1 -sign."""
    n, d = key
    k = (n.bit_length() + 7) // 8
    t = SHA1_DIGEST_INFO + hashlib.sha1(data).digest()
    em = b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t
    return pow(int.from_bytes(em, "big"), d, n).to_bytes(k, "big")


def parse_signing(pem, cert_url):
    """The signing of pushes: the key (PEM text) and the URL of its certificate,
    which goes in x-mns-signing-cert-url (never fetched by this server)."""
    if not isinstance(cert_url, str) or not re.match(r"https?://[^/?#\s]+/\S*$", cert_url):
        raise ValueError("cert_url: the http(s):// URL the receiver fetches the signing certificate from")
    return {"key": load_private_key(pem), "cert_url": cert_url}


def string_to_sign(headers, resource):
    """MNS's: POST, Content-MD5, Content-Type, Date, each x-mns-* header as
    name:value sorted by name, then the path and query."""
    mns = sorted((k.lower(), v) for k, v in headers.items() if k.lower().startswith("x-mns-"))
    return "\n".join(["POST", headers["Content-MD5"], headers["Content-Type"], headers["Date"]]) + "\n" \
        + "".join(f"{k}:{v}\n" for k, v in mns) + resource


def parse_target(payload):
    """{"url": "http://127.0.0.1:PORT/path", "envelope": "mns" | "raw", "all": bool,
    "topic": name, "signing_key": PEM, "cert_url": URL} -> the target, or
    ValueError.  null (or {}) clears it."""
    if payload in (None, {}):
        return None
    if not isinstance(payload, dict) or set(payload) - {"url", "envelope", "all", "topic", "signing_key", "cert_url"}:
        raise ValueError("notify-target: an object with url and optionally envelope, all, topic, "
                         "signing_key and cert_url")
    url = payload.get("url")
    parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme != "http" or parts.hostname not in LOOPBACK:
        raise ValueError("notify-target: url must be an http:// URL on loopback (127.0.0.1, ::1, localhost)")
    try:
        parts.port
    except ValueError:
        raise ValueError("notify-target: url has a bad port")
    envelope = payload.get("envelope", "mns")
    if envelope not in ENVELOPES:
        raise ValueError(f"notify-target: envelope must be one of {', '.join(ENVELOPES)}")
    if not isinstance(payload.get("all", False), bool):
        raise ValueError("notify-target: all must be true or false")
    topic = payload.get("topic", "imm-local")
    if not isinstance(topic, str) or not topic:
        raise ValueError("notify-target: topic must be a non-empty string")
    target = {"url": url, "envelope": envelope, "all": payload.get("all", False), "topic": topic}
    if "signing_key" in payload or "cert_url" in payload:
        if "signing_key" not in payload or "cert_url" not in payload:
            raise ValueError("notify-target: signing_key and cert_url go together")
        target["signing"] = parse_signing(payload["signing_key"], payload["cert_url"])
    return target


def public(target):
    """The target as the control API shows it: the certificate URL, never the key."""
    if target is None:
        return None
    out = {k: v for k, v in target.items() if k != "signing"}
    out["cert_url"] = target["signing"]["cert_url"] if target.get("signing") else None
    return out


def task_message(task):
    """The message IMM sends when a task ends."""
    keys = ("ProjectName", "TaskId", "TaskType", "Status", "Code", "Message", "UserData", "StartTime",
            "EndTime", "EventId", "Tags")
    return {"RequestId": str(uuid.uuid4()).upper(), **{k: task.get(k, "") for k in keys}}


def mns_envelope(message_text, topic):
    """MNS's HTTP push body in its JSON format (NotifyContentFormat=JSON)."""
    return {"TopicOwner": "imm-local", "TopicName": topic, "Subscriber": "imm-local",
            "SubscriptionName": "imm-local-subscription", "MessageId": uuid.uuid4().hex.upper(),
            "MessageMD5": hashlib.md5(message_text.encode("utf-8")).hexdigest().upper(),
            "Message": message_text, "PublishTime": int(time.time() * 1000)}


def push_headers(body, target):
    """The headers of MNS's HTTP push; signed when the target has a signing key."""
    headers = {"Content-Type": "application/json;charset=utf-8",
               # MNS's Content-MD5 is base64 of the hex digest, not of the raw one
               "Content-MD5": base64.b64encode(hashlib.md5(body).hexdigest().encode("ascii")).decode("ascii"),
               "Date": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime()),
               "x-mns-version": "2015-06-06", "x-mns-request-id": uuid.uuid4().hex.upper()}
    signing = target.get("signing")
    if signing:
        headers["x-mns-signing-cert-url"] = base64.b64encode(signing["cert_url"].encode("utf-8")).decode("ascii")
        parts = urllib.parse.urlsplit(target["url"])
        resource = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        sig = rsa_sha1_sign(signing["key"], string_to_sign(headers, resource).encode("utf-8"))
        headers["Authorization"] = base64.b64encode(sig).decode("ascii")
    return headers


class Notifier:
    def __init__(self, signing=None):
        self.target = None
        self.signing = signing              # from the command line: signs targets without their own
        self.sent = collections.deque(maxlen=KEEP)
        self._queue = queue.Queue(MAX_PENDING)
        self._lock = threading.Lock()
        threading.Thread(target=self._worker, name="imm-notify", daemon=True).start()

    def set_target(self, payload):
        target = parse_target(payload)
        if target is not None and "signing" not in target and self.signing:
            target["signing"] = self.signing
        self.target = target
        return {"ok": True, "target": public(target)}

    def task_ended(self, task, notification):
        """Called by the task clock (its lock held): queue only, never send here."""
        target = self.target
        if target is None or not (notification or target["all"]):
            return
        try:
            self._queue.put_nowait((target, task_message(task)))
        except queue.Full:          # a receiver that never answers must not grow the server
            with self._lock:
                self.sent.append({"TaskId": task.get("TaskId"), "error": "queue full: dropped"})

    def snapshot(self):
        with self._lock:
            return list(self.sent)

    def clear(self):
        with self._lock:
            self.sent.clear()

    def _worker(self):
        while True:
            target, message = self._queue.get()
            text = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
            if target["envelope"] == "mns":
                body = json_bytes(mns_envelope(text, target["topic"]))
            else:
                body = text.encode("utf-8")
            headers = push_headers(body, target)
            record = {"TaskId": message["TaskId"], "url": target["url"], "envelope": target["envelope"],
                      "message": message}
            try:
                req = urllib.request.Request(target["url"], data=body, headers=headers, method="POST")
                opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # loopback: no proxy
                with opener.open(req, timeout=5) as resp:
                    record["status"] = resp.status
            except urllib.error.HTTPError as err:
                record["status"] = err.code
            except (OSError, ValueError) as err:
                record["error"] = f"{type(err).__name__}: {err}"
            with self._lock:
                self.sent.append(record)
