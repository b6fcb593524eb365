"""The command line: python3 -m imm_server (with server/ on PYTHONPATH) or
python3 server/imm_server (the directory), or bin/imm-server.

    imm_server --port N [--host 127.0.0.1] [--tls CERTDIR] [--bindings-file F.json]
               [--access-key-id ID --access-key-secret S [--security-token T]]
               [--port-file PATH] [--fault MODE[:COUNT]]... [--binding-start-delay SECONDS]
               [--task-delay SECONDS] [--notify-key PEMFILE --notify-cert-url URL]
               [--api FILE] [--quiet]
    imm_server --check-vectors PATH/TO/signing.json   (or signing_body.json)
"""

import argparse
import os
import signal
import ssl
import sys

if __package__ in (None, ""):
    # Run as a directory (python3 server/imm_server): Python put the package's own
    # folder first on sys.path, where http.py would hide the standard library's
    # http.  Put its parent there instead and import the package properly.
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
    sys.path.insert(0, os.path.dirname(_here))
    __package__ = "imm_server"        # noqa: A001 - the relative imports below need it
    import imm_server                 # noqa: F401

from .faults import FAULT_MODES, parse_fault_arg
from .http import ImmServer
from .notify import parse_signing
from .signing import Credentials, check_vectors
from .state import DEFAULT_BINDING_START_DELAY, BindingData
from .tasks import DEFAULT_TASK_DELAY
from .validation import Description

DEFAULT_KEY_ID = "imm-local-id"
DEFAULT_SECRET = "imm-local-secret"
HERE = os.path.dirname(os.path.abspath(__file__))


def default_data_file():
    """sample_bindings.json beside the package (installed) or in a checkout's tools/."""
    for path in (os.path.join(HERE, "..", "sample_bindings.json"),
                 os.path.join(HERE, "..", "..", "tools", "sample_bindings.json")):
        if os.path.isfile(path):
            return os.path.normpath(path)
    raise ValueError(f"cannot find sample_bindings.json beside {HERE}; give --bindings-file")


class _Stop(BaseException):
    """Raised by the signal handler to leave serve_forever cleanly.  A BaseException,
    like KeyboardInterrupt, because socketserver swallows any Exception raised while
    it is accepting a connection, and then the server would keep running."""


def _raise_stop(_signum, _frame):
    raise _Stop()


def parse_args(argv):
    p = argparse.ArgumentParser(prog="imm_server",
                                description="A local IMM (2020-09-30) server for tests: all 105 actions.")
    p.add_argument("--port", type=int, help="port to listen on; 0 picks a free one")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--tls", metavar="CERTDIR", help="serve HTTPS with CERTDIR/server.crt and server.key")
    p.add_argument("--bindings-file", default=None, help="the startup data (default: sample_bindings.json)")
    p.add_argument("--access-key-id", default=DEFAULT_KEY_ID)
    p.add_argument("--access-key-secret", default=DEFAULT_SECRET)
    p.add_argument("--security-token", default=None)
    p.add_argument("--port-file", help="write the actual port here once listening")
    p.add_argument("--fault", action="append", default=[], type=parse_fault_arg, metavar="MODE[:COUNT]",
                   help=f"preload a fault rule; modes: {', '.join(FAULT_MODES)}")
    p.add_argument("--binding-start-delay", type=float, default=DEFAULT_BINDING_START_DELAY, metavar="SECONDS",
                   help="how long a new binding stays Ready before it is Running (default %(default)s)")
    p.add_argument("--task-delay", type=float, default=DEFAULT_TASK_DELAY, metavar="SECONDS",
                   help="how long a task stays Running before it ends (default %(default)s)")
    p.add_argument("--notify-key", metavar="PEMFILE",
                   help="sign task notifications as MNS does with this RSA private key (with --notify-cert-url)")
    p.add_argument("--notify-cert-url", metavar="URL",
                   help="the URL of the signing key's certificate, sent in x-mns-signing-cert-url")
    p.add_argument("--api", metavar="FILE", help="the API description (default: api/imm-2020-09-30.json)")
    p.add_argument("--quiet", action="store_true", help="no per-request log lines")
    p.add_argument("--check-vectors", metavar="FILE", help="check the signer against a vectors file and exit")
    args = p.parse_args(argv)
    if args.check_vectors is None and args.port is None:
        p.error("--port is required (or use --check-vectors)")
    if not 0 <= args.binding_start_delay <= 3600:
        p.error("--binding-start-delay must be from 0 to 3600 seconds")
    if not 0 <= args.task_delay <= 3600:
        p.error("--task-delay must be from 0 to 3600 seconds")
    if (args.notify_key is None) != (args.notify_cert_url is None):
        p.error("--notify-key and --notify-cert-url go together")
    return args


def notify_signing(args):
    if args.notify_key is None:
        return None
    with open(args.notify_key, encoding="ascii") as f:
        return parse_signing(f.read(), args.notify_cert_url)


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
        data = BindingData.from_file(args.bindings_file or default_data_file())
        ssl_context = make_ssl_context(args.tls) if args.tls else None
        server = ImmServer((args.host, args.port),
                           Credentials(args.access_key_id, args.access_key_secret, args.security_token),
                           data, ssl_context, args.fault, args.quiet, args.binding_start_delay,
                           args.task_delay, Description.load(args.api), notify_signing(args))
    except (OSError, ValueError, KeyError) as err:
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
