#!/usr/bin/env python3
"""A local stand-in for the parts of Alibaba Cloud that hand out credentials.

Why it exists: imm's credential providers must be tested against STS, the ECS
instance metadata service and a credentials URI without calling the real
cloud.  One process on one loopback port plays all three:

  STS (API 2015-04-01)    POST /?Action=AssumeRole...         V2 signature checked
                          POST /?Action=AssumeRoleWithOIDC    token in the form body
  ECS metadata (IMDS)     PUT  /latest/api/token              IMDSv2 session token
                          GET  /latest/meta-data/ram/security-credentials/[ROLE]
  credentials URI         GET  /credentials
  CloudSSO portal         POST /cloud-credentials             Bearer access token checked

Standard library only.

    python3 tools/fake_cloud.py --port N [--host 127.0.0.1] [--port-file PATH] [--quiet]

STS checks what the service checks for AssumeRole: the V2 signature (HMAC-SHA1
over the sorted, RFC 3986-encoded parameters) with the configured source key
or with temporary keys it issued itself, the security token that goes with
the key, Format/SignatureMethod/
SignatureVersion/Version, a timestamp within 15 minutes, a nonce never seen
before, RoleArn, RoleSessionName, DurationSeconds >= 900 and a Policy that is
JSON.  AssumeRoleWithOIDC is anonymous: it checks RoleArn, OIDCProviderArn and
that OIDCToken (which must arrive in the body, not the URL) equals the
configured token.

The metadata service answers IMDSv2 and v1 ("imds": "both"), v2 only ("v2":
a GET without a token gets 403) or v1 only ("v1": the token PUT gets 404).
The PUT needs x-aliyun-ecs-metadata-token-ttl-seconds in 1..21600; a GET with
an unknown token gets 401.

The CloudSSO portal's CreateCloudCredential (as aliyun-cli calls it) needs
"authorization: Bearer <sso_token>" and a JSON body with AccountId and
AccessConfigurationId; it answers {"CloudCredential": {...}, "RequestId"}, or
401 {"ErrorCode", "ErrorMessage"} for another token.

Control API (same port, never logged):
    GET  /_fake/health    {"ok": true}
    GET  /_fake/log       one record per request: seq, target (sts|imds|uri),
                          method, path, action, params (no Signature; OIDCToken
                          shown, it is test data), token_in_query, headers
                          (lowercase; the metadata token and authorization shown as "***"),
                          signature ("ok" | "bad" | null; sso: the bearer token), status, fault, start, end
    POST /_fake/config    merge a JSON object into the configuration (see DEFAULTS)
    POST /_fake/faults    {"target": "sts"|"imds"|"uri"|"any", "mode": M, "count": N, ...}
                          appends a rule; count 1 by default, -1 forever; FIFO
    POST /_fake/reset     configuration, faults, log, nonces and tokens back to the start

Fault modes: error [status=500, code=InternalError]   malformed (a 200 that is not
JSON)   slow [delay=1.0]   bad_expiration   missing_secret   code (Code "Failed")
reset (close the connection without a reply)   echo (STS: a 400 error whose Code, RequestId,
HostId, Message and Recommend repeat the SecurityToken or OIDCToken received, as a hostile or
careless endpoint might).
"""

import argparse
import base64
import calendar
import copy
import hashlib
import hmac
import json
import os
import signal
import socket
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULTS = {
    # the key that signs AssumeRole
    "source": {"access_key_id": "fake-source-id", "access_key_secret": "fake-source-secret",
               "security_token": None},
    # what AssumeRoleWithOIDC accepts
    "oidc_token": "fake-oidc-token",
    # the bearer token the CloudSSO portal accepts
    "sso_token": "fake-sso-access-token",
    # fixed credentials to hand out; null fields are generated (STS.fake-N, ...)
    "issue": {"access_key_id": None, "access_key_secret": None, "security_token": None},
    # lifetime of what is handed out, in seconds; null: DurationSeconds for STS,
    # 21600 for IMDS, 3600 for the URI
    "expires_in": None,
    "role_name": "EcsRamRoleTest",     # null: no role attached
    "imds": "both",                    # both | v2 | v1
}

CREDS_PATH = "/latest/meta-data/ram/security-credentials/"


def percent_encode(text):
    return urllib.parse.quote(text, safe="")


def parse_pairs(raw):
    pairs = []
    for piece in raw.split("&"):
        if piece:
            key, _, value = piece.partition("=")
            pairs.append((urllib.parse.unquote(key), urllib.parse.unquote(value)))
    return pairs


def v2_string_to_sign(method, params):
    pairs = sorted((percent_encode(k), percent_encode(v)) for k, v in params.items() if k != "Signature")
    canonical = "&".join(f"{k}={v}" for k, v in pairs)
    return f"{method}&{percent_encode('/')}&{percent_encode(canonical)}"


def v2_signature(secret, string_to_sign):
    mac = hmac.new((secret + "&").encode(), string_to_sign.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def parse_iso(value):
    try:
        return calendar.timegm(time.strptime(value, "%Y-%m-%dT%H:%M:%SZ"))
    except (TypeError, ValueError):
        return None


class ApiError(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Reply:
    def __init__(self, status, body, content_type="application/json"):
        self.status, self.body, self.content_type = status, body, content_type


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        # a request still stalled from before a reset is left out of the new log
        self.generation = getattr(self, "generation", 0) + 1
        self.config = copy.deepcopy(DEFAULTS)
        self.faults = []
        self.log = []
        self.seq = 0
        self.issued = 0
        self.nonces = set()
        self.tokens = set()
        self.issued_keys = {}

    def merge(self, patch):
        for key, value in patch.items():
            if isinstance(value, dict) and isinstance(self.config.get(key), dict):
                self.config[key].update(value)
            else:
                self.config[key] = value

    def take_fault(self, target):
        for rule in self.faults:
            if rule.get("target", "any") in (target, "any"):
                count = rule.get("count", 1)
                if count > 0:
                    rule["count"] = count - 1
                    if rule["count"] == 0:
                        self.faults.remove(rule)
                return dict(rule)
        return None

    def new_credentials(self, default_lifetime, generation):
        # A request stalled from before a reset (a slow fault the client gave up on) must not take a
        # number from the new generation: a test counting on fake-token-1 would see fake-token-2.
        if generation == self.generation:
            self.issued += 1
            n = self.issued
        else:
            self.stale = getattr(self, "stale", 0) + 1
            n = f"stale-{self.stale}"
        fixed = self.config["issue"]
        lifetime = self.config["expires_in"] or default_lifetime
        creds = {
            "AccessKeyId": fixed.get("access_key_id") or f"STS.fake-{n}",
            "AccessKeySecret": fixed.get("access_key_secret") or f"fake-secret-{n}",
            "SecurityToken": fixed.get("security_token") or f"fake-token-{n}",
            "Expiration": iso(time.time() + lifetime),
        }
        self.issued_keys[creds["AccessKeyId"]] = (creds["AccessKeySecret"], creds["SecurityToken"])
        return creds


def json_reply(status, obj):
    return Reply(status, json.dumps(obj).encode())


def error_reply(err):
    return json_reply(err.status, {"RequestId": str(uuid.uuid4()).upper(), "HostId": "sts.aliyuncs.com",
                                   "Code": err.code, "Message": err.message})


def apply_credential_fault(fault, creds):
    """Faults that damage an otherwise good credentials object."""
    if not fault:
        return creds
    mode = fault.get("mode")
    if mode == "bad_expiration":
        creds["Expiration"] = "next tuesday"
    elif mode == "missing_secret":
        del creds["AccessKeySecret"]
    return creds


# ---------------------------------------------------------------------------
# STS
# ---------------------------------------------------------------------------

def check_assume_role(state, method, params):
    cfg = state.config
    src = cfg["source"]
    for name in ("Format", "SignatureMethod", "SignatureVersion", "SignatureNonce", "Timestamp",
                 "AccessKeyId", "Signature"):
        if not params.get(name):
            raise ApiError(400, "MissingParameter", f"The input parameter {name} that is mandatory "
                                                    "for processing this request is not supplied.")
    if params["Format"].upper() != "JSON":
        raise ApiError(400, "InvalidParameter.Format", "Format must be JSON.")
    if params["SignatureMethod"] != "HMAC-SHA1" or params["SignatureVersion"] != "1.0":
        raise ApiError(400, "IncompleteSignature", "SignatureMethod must be HMAC-SHA1, SignatureVersion 1.0.")
    key_id = params["AccessKeyId"]
    if key_id == src["access_key_id"]:
        secret, token = src["access_key_secret"], src.get("security_token")
    elif key_id in state.issued_keys:      # temporary keys this STS handed out
        secret, token = state.issued_keys[key_id]
    else:
        raise ApiError(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
    if (params.get("SecurityToken") or None) != (token or None):
        raise ApiError(400, "InvalidSecurityToken.Mismatch", "The security token does not match.")
    sts = v2_string_to_sign(method, params)
    if not hmac.compare_digest(v2_signature(secret, sts).encode(),
                               params["Signature"].encode()):
        return "bad"
    ts = parse_iso(params["Timestamp"])
    if ts is None or abs(ts - time.time()) > 900:
        raise ApiError(400, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.")
    with state.lock:
        if params["SignatureNonce"] in state.nonces:
            raise ApiError(400, "SignatureNonceUsed", "Specified signature nonce was used already.")
        state.nonces.add(params["SignatureNonce"])
    return "ok"


def check_role_params(params, needed):
    for name in needed:
        if not params.get(name):
            raise ApiError(400, "MissingParameter", f"The input parameter {name} that is mandatory "
                                                    "for processing this request is not supplied.")
    if not params["RoleArn"].startswith("acs:ram::"):
        raise ApiError(400, "InvalidParameter.RoleArn", "The parameter RoleArn is wrongly formed.")
    duration = params.get("DurationSeconds", "3600")
    try:
        duration = int(duration)
    except ValueError:
        raise ApiError(400, "InvalidParameter.DurationSeconds", "DurationSeconds is not an integer.")
    if duration < 900 or duration > 43200:
        raise ApiError(400, "InvalidParameter.DurationSeconds",
                       "The Min/Max value of DurationSeconds is 15min/12hr.")
    if params.get("Policy"):
        try:
            json.loads(params["Policy"])
        except ValueError:
            raise ApiError(400, "InvalidParameter.PolicyGrammar", "The policy is not valid JSON.")
    return duration


def sts_reply(state, creds, params):
    return json_reply(200, {
        "RequestId": str(uuid.uuid4()).upper(),
        "AssumedRoleUser": {"Arn": params["RoleArn"] + "/" + params.get("RoleSessionName", ""),
                            "AssumedRoleId": "3000000000000000:" + params.get("RoleSessionName", "")},
        "Credentials": creds,
    })


def handle_sts(state, req, record, fault):
    query, form = req["query"], req["form"]
    params = dict(query)
    params.update(form)
    action = params.get("Action")
    record["action"] = action
    record["token_in_query"] = "OIDCToken" in query
    record["params"] = {k: v for k, v in params.items() if k != "Signature"}
    if req["method"] != "POST":
        raise ApiError(400, "InvalidMethod", "Use POST.")
    if fault and fault.get("mode") == "echo":
        echoed = params.get("SecurityToken") or params.get("OIDCToken") or ""
        return json_reply(400, {"RequestId": echoed, "HostId": echoed, "Code": "Echo." + echoed,
                                "Message": "received " + echoed, "Recommend": "see " + echoed})
    if params.get("Version") != "2015-04-01":
        raise ApiError(400, "InvalidVersion", "Specified parameter Version is not valid.")
    if action == "AssumeRole":
        record["signature"] = check_assume_role(state, "POST", params)
        if record["signature"] != "ok":
            # like the service, echo the string to sign (with V2 it holds the token)
            raise ApiError(400, "SignatureDoesNotMatch",
                           "Specified signature is not matched with our calculation. "
                           f"server string to sign is:{v2_string_to_sign('POST', params)}")
        duration = check_role_params(params, ("RoleArn", "RoleSessionName"))
    elif action == "AssumeRoleWithOIDC":
        if "OIDCToken" in query:
            raise ApiError(400, "InvalidParameter.OIDCToken", "The OIDC token must be sent in the body.")
        duration = check_role_params(params, ("RoleArn", "OIDCProviderArn", "OIDCToken"))
        if params["OIDCToken"] != state.config["oidc_token"]:
            raise ApiError(400, "AuthenticationFail.OIDCToken.Invalid", "The OIDC token is not valid.")
    else:
        raise ApiError(400, "InvalidAction.NotFound", "Specified api is not found.")
    with state.lock:
        creds = state.new_credentials(duration, record["generation"])
    return sts_reply(state, apply_credential_fault(fault, creds), params)


# ---------------------------------------------------------------------------
# ECS metadata service
# ---------------------------------------------------------------------------

def handle_imds(state, req, record, fault):
    cfg = state.config
    headers = req["headers"]
    mode = cfg["imds"]
    if req["path"] == "/latest/api/token":
        if req["method"] != "PUT":
            return Reply(405, b"Method Not Allowed", "text/plain")
        if mode == "v1":
            return Reply(404, b"Not Found", "text/plain")
        ttl = headers.get("x-aliyun-ecs-metadata-token-ttl-seconds", "")
        if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
            return Reply(400, b"Bad Request", "text/plain")
        token = "imds-token-" + uuid.uuid4().hex
        with state.lock:
            state.tokens.add(token)
        return Reply(200, token.encode(), "text/plain")

    if req["method"] != "GET":
        return Reply(405, b"Method Not Allowed", "text/plain")
    token = headers.get("x-aliyun-ecs-metadata-token")
    record["imds_token"] = token is not None
    if token is not None:
        if token not in state.tokens:
            return Reply(401, b"Unauthorized", "text/plain")
    elif mode == "v2":
        return Reply(403, b"Forbidden", "text/plain")
    role = cfg["role_name"]
    rest = req["path"][len(CREDS_PATH):]
    if rest == "":
        if not role:
            return Reply(404, b"Not Found", "text/plain")
        return Reply(200, role.encode(), "text/plain")
    if rest != role:
        return Reply(404, b"Not Found", "text/plain")
    with state.lock:
        creds = state.new_credentials(21600, record["generation"])
    creds = apply_credential_fault(fault, creds)
    creds["LastUpdated"] = iso(time.time())
    creds["Code"] = "Failed" if fault and fault.get("mode") == "code" else "Success"
    return json_reply(200, creds)


# ---------------------------------------------------------------------------
# Credentials URI
# ---------------------------------------------------------------------------

def handle_uri(state, req, record, fault):
    if req["method"] != "GET":
        return Reply(405, b"Method Not Allowed", "text/plain")
    with state.lock:
        creds = state.new_credentials(3600, record["generation"])
    creds = apply_credential_fault(fault, creds)
    creds["Code"] = "Failed" if fault and fault.get("mode") == "code" else "Success"
    return json_reply(200, creds)


# ---------------------------------------------------------------------------
# CloudSSO portal: CreateCloudCredential
# ---------------------------------------------------------------------------

def handle_sso(state, req, record, fault, body):
    if req["method"] != "POST":
        return Reply(405, b"Method Not Allowed", "text/plain")
    try:
        params = json.loads(body or b"{}")
    except ValueError:
        params = None
    record["params"] = params
    auth = req["headers"].get("authorization", "")
    record["signature"] = "ok" if auth == "Bearer " + state.config["sso_token"] else "bad"
    if record["signature"] != "ok":
        return json_reply(401, {"ErrorCode": "InvalidAccessToken", "ErrorMessage": "the access token is not valid"})
    if not isinstance(params, dict) or not params.get("AccountId") or not params.get("AccessConfigurationId"):
        return json_reply(400, {"ErrorCode": "MissingParameter", "ErrorMessage": "AccountId, AccessConfigurationId"})
    with state.lock:
        creds = state.new_credentials(3600, record["generation"])
    creds = apply_credential_fault(fault, creds)
    return json_reply(200, {"CloudCredential": creds, "RequestId": str(uuid.uuid4()).upper()})


def target_of(path):
    if path == "/latest/api/token" or path.startswith(CREDS_PATH):
        return "imds"
    if path.startswith("/credentials"):
        return "uri"
    if path == "/cloud-credentials":
        return "sso"
    if path == "/":
        return "sts"
    return None


# ---------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake_cloud"

    def log_message(self, fmt, *args):
        if not self.server.quiet:
            sys.stderr.write("fake_cloud: " + (fmt % args) + "\n")

    def do_GET(self):
        self.dispatch()

    def do_POST(self):
        self.dispatch()

    def do_PUT(self):
        self.dispatch()

    def send(self, reply):
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def control(self, path, body):
        state = self.server.state
        with state.lock:
            if path == "/_fake/health":
                return json_reply(200, {"ok": True})
            if path == "/_fake/log":
                return json_reply(200, state.log)
            if path == "/_fake/reset":
                state.reset()
                return json_reply(200, {"ok": True})
            if path == "/_fake/config":
                state.merge(json.loads(body or b"{}"))
                return json_reply(200, state.config)
            if path == "/_fake/faults":
                state.faults.append(json.loads(body or b"{}"))
                return json_reply(200, state.faults)
        return json_reply(404, {"Code": "NotFound", "Message": "no such control path"})

    def dispatch(self):
        start = time.monotonic()
        url = urllib.parse.urlsplit(self.path)
        body = self.read_body()
        if url.path.startswith("/_fake/"):
            self.send(self.control(url.path, body))
            return
        state = self.server.state
        headers = {k.lower(): v for k, v in self.headers.items()}
        query = dict(parse_pairs(url.query))
        form = {}
        if headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            form = dict(parse_pairs(body.decode("utf-8", "replace")))
        target = target_of(url.path)
        shown = {k: ("***" if k in ("x-aliyun-ecs-metadata-token", "authorization") else v) for k, v in headers.items()}
        record = {"target": target, "method": self.command, "path": url.path, "headers": shown,
                  "signature": None, "start": start}
        with state.lock:
            state.seq += 1
            record["seq"] = state.seq
            generation = state.generation
            fault = state.take_fault(target) if target else None
        record["fault"] = fault and fault.get("mode")
        record["generation"] = generation
        req = {"method": self.command, "path": url.path, "query": query, "form": form, "headers": headers}
        try:
            if fault and fault.get("mode") == "reset":
                self.log_record(record, 0, start)
                self.close_connection = True
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                self.connection.close()
                return
            if fault and fault.get("mode") == "slow":
                time.sleep(float(fault.get("delay", 1.0)))
            if fault and fault.get("mode") == "error":
                raise ApiError(int(fault.get("status", 500)), fault.get("code", "InternalError"),
                               "The request processing has failed due to some unknown error.")
            if fault and fault.get("mode") == "malformed":
                reply = Reply(200, b'{"Credentials": {"AccessKeyId": ', "application/json")
            elif target == "sts":
                reply = handle_sts(state, req, record, fault)
            elif target == "imds":
                reply = handle_imds(state, req, record, fault)
            elif target == "uri":
                reply = handle_uri(state, req, record, fault)
            elif target == "sso":
                reply = handle_sso(state, req, record, fault, body)
            else:
                reply = Reply(404, b"Not Found", "text/plain")
        except ApiError as err:
            reply = error_reply(err)
        self.log_record(record, reply.status, start)
        self.send(reply)

    def log_record(self, record, status, start):
        record["status"] = status
        record["end"] = time.monotonic()
        with self.server.state.lock:
            if record.pop("generation", None) == self.server.state.generation:
                self.server.state.log.append(record)


class FakeCloud(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, quiet):
        self.state = State()
        self.quiet = quiet
        super().__init__(address, Handler)


class _Stop(Exception):
    pass


def _raise_stop(signum, frame):
    raise _Stop()


def write_port_file(path, port):
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(f"{port}\n")
    os.replace(tmp, path)


def main(argv=None):
    p = argparse.ArgumentParser(description="fake STS, ECS metadata service and credentials URI")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--port-file")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    try:
        server = FakeCloud((args.host, args.port), args.quiet)
    except OSError as err:
        print(f"fake_cloud: {err}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    try:
        port = server.server_address[1]
        if args.port_file:
            write_port_file(args.port_file, port)
        print(f"fake_cloud listening on http://{args.host}:{port}", flush=True)
        server.serve_forever()
    except _Stop:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
