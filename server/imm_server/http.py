"""HTTP: the request handler (framing, sizes, TLS, the control routes, the
API path with its faults) and the threaded server that holds everything."""

import gzip
import http
import re
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time
import traceback
import urllib.parse
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import actions, control
from .control import CannedReplies
from .faults import CONNECTION_FAULTS, FaultQueue, fault_reply
from .notify import Notifier
from .replies import (API_VERSION, HTTP_ERROR_CODES, JSON_TYPE, ApiError, Reply, error_body, error_reply,
                      json_bytes, missing_parameter, new_request_id, parse_json)
from .requestlog import RequestLog, logged_params, redacted_headers
from .signing import ApiRequest, NonceCache, parse_query, signature_scheme, verify_request
from .state import DEFAULT_BINDING_START_DELAY, State
from .tasks import DEFAULT_TASK_DELAY, TaskBoard
from .validation import Description, validate

MAX_BODY_BYTES = 10 * 1024 * 1024
IDLE_TIMEOUT_SECONDS = 120       # drop keep-alive connections a client forgot about
HANDSHAKE_TIMEOUT_SECONDS = 10   # a client that never finishes TLS must not hold a thread forever


def action_reply(req, server, request_id):
    """The real answer: version and action routing, a canned reply if one is
    queued, else validation against the description and the action."""
    version = req.headers.get("x-acs-version") or req.params.get("Version")
    if version != API_VERSION:
        raise ApiError(400, "InvalidVersion", f"Specified parameter Version {version!r} is not valid.")
    action = req.headers.get("x-acs-action") or req.params.get("Action")
    if not action:
        raise missing_parameter("Action")
    desc = server.description
    if action not in desc.actions:
        raise ApiError(404, "InvalidAction.NotFound",
                       f"Specified api {action} is not found, please check your url and method.")
    canned = server.replies.take(action, req.params)
    if canned is not None:
        body = canned.raise_or_body()
        return Reply(canned.status, json_bytes({"RequestId": request_id, **body}), request_id)
    params = validate(desc, action, req.params)
    result = actions.answer(server, action, params, req.params)
    return Reply(200, json_bytes({"RequestId": request_id, **result}), request_id)


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
                    reply = action_reply(req, server, request_id)
                    if rule and rule.mode == "odd_values" and reply.status == 200:
                        depth = int(rule.option("depth", 0))
                        deep = b'"Deep":' + b"[" * depth + b"]" * depth + b"," if depth > 0 else b""
                        # integers past 2^53 (Exact: 2^53 + 1) and past int64 (Huge, Low)
                        ints = b'"Exact":9007199254740993,"Huge":12345678901234567890,"Low":-9223372036854775809,'
                        reply.body = reply.body.replace(b'"URI":', b'"Odd":"\xff\xfe","Big":1e400,' + ints + deep
                                                        + b'"URI":', 1)
                        if rule.option("big_phase", 0):  # a column of the CLI's table and lines output
                            reply.body = re.sub(rb'"Phase":"[^"]*"', b'"Phase":12345678901234567890', reply.body,
                                                count=1)
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
                 binding_start_delay=DEFAULT_BINDING_START_DELAY, task_delay=DEFAULT_TASK_DELAY,
                 description=None, notify_signing=None):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.creds, self.ssl_context, self.quiet = creds, ssl_context, quiet
        self.description = description or Description.load()
        self.startup_data = data
        self.startup_start_delay, self.startup_task_delay = binding_start_delay, task_delay
        self.notifier = Notifier(notify_signing)
        self.board = TaskBoard(self.notifier, task_delay)
        self.state = None
        self.replace_state(data)
        self.faults = FaultQueue(faults)
        self.replies = CannedReplies()
        self.log = RequestLog()
        self.nonces = NonceCache()
        self.connections = 0
        self._conn_ids = {}
        self._conn_lock = threading.Lock()
        self.control_routes = control.routes(self)
        super().__init__(address, ImmHandler)

    def replace_state(self, data):
        state = State(data, self.state.start_delay if self.state else self.startup_start_delay)
        state.board = self.board       # CreateStory starts a task
        self.state = state

    def settings(self):
        return {"binding_start_delay": self.state.start_delay, "task_delay": self.board.delay}

    def reset(self):
        self.state = None
        self.replace_state(self.startup_data)
        with self.board.lock:
            self.board.tasks.items.clear()
            self.board.outcomes.clear()
            self.board.delay = self.startup_task_delay
        self.notifier.set_target(None)
        self.notifier.clear()
        self.faults.clear()
        self.replies.clear()
        self.log.clear()
        self.nonces.clear()
        return {"ok": True}

    def server_close(self):
        self.board.close()
        super().server_close()

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
