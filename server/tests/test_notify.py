"""notify.py's MNS push signature (RSASSA-PKCS1-v1_5 with SHA-1, in Python's
standard library) against openssl, and a signed push as a receiver sees it.

    python3 -m unittest discover -s server/tests -p 'test_notify.py'
"""

import base64
import email.utils
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from imm_server import notify  # noqa: E402

CERT_URL = "https://127.0.0.1:8443/mns/x509_public_certificate.pem"


def openssl(*args, data=None):
    return subprocess.run(["openssl", *args], input=data, capture_output=True, check=False)


class Keys:
    """An RSA key in PKCS#8 and in PKCS#1 PEM, its public key, made by openssl."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="imm-notify-")
        self.pkcs8 = os.path.join(self.dir, "key8.pem")
        self.pkcs1 = os.path.join(self.dir, "key1.pem")
        self.pub = os.path.join(self.dir, "pub.pem")
        assert openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                       "-out", self.pkcs8).returncode == 0
        assert openssl("pkey", "-in", self.pkcs8, "-traditional", "-out", self.pkcs1).returncode == 0
        assert openssl("pkey", "-in", self.pkcs8, "-pubout", "-out", self.pub).returncode == 0

    def read(self, path):
        with open(path, encoding="ascii") as f:
            return f.read()

    def verifies(self, data, sig):
        """openssl dgst -sha1 -verify: does sig sign data?"""
        d, s = os.path.join(self.dir, "data"), os.path.join(self.dir, "sig")
        with open(d, "wb") as f:
            f.write(data)
        with open(s, "wb") as f:
            f.write(sig)
        return openssl("dgst", "-sha1", "-verify", self.pub, "-signature", s, d).returncode == 0

    def openssl_sign(self, data):
        d = os.path.join(self.dir, "data")
        with open(d, "wb") as f:
            f.write(data)
        out = openssl("dgst", "-sha1", "-sign", self.pkcs8, d)
        assert out.returncode == 0, out.stderr
        return out.stdout


KEYS = None


def setUpModule():
    global KEYS
    KEYS = Keys()


def tearDownModule():
    shutil.rmtree(KEYS.dir, ignore_errors=True)


class SignTest(unittest.TestCase):
    def test_pkcs8_and_pkcs1_sign_as_openssl_does(self):
        for path in (KEYS.pkcs8, KEYS.pkcs1):
            key = notify.load_private_key(KEYS.read(path))
            for data in (b"", b"POST\n\n\n\n/x", "caf\u00e9 \u4e2d".encode("utf-8") * 300):
                sig = notify.rsa_sha1_sign(key, data)
                self.assertEqual(len(sig), 256)
                self.assertTrue(KEYS.verifies(data, sig), path)
                # PKCS#1 v1.5 is deterministic: the very bytes openssl makes
                self.assertEqual(sig, KEYS.openssl_sign(data))
            self.assertFalse(KEYS.verifies(b"other", notify.rsa_sha1_sign(key, b"data")))

    def test_bad_keys_are_refused(self):
        pub = KEYS.read(KEYS.pub)
        for pem in ("", "not a key", pub, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                    "-----BEGIN PRIVATE KEY-----\n!!\n-----END PRIVATE KEY-----\n", 5):
            with self.assertRaises(ValueError):
                notify.load_private_key(pem)

    def test_target_takes_a_key_and_cert_url_together(self):
        pem = KEYS.read(KEYS.pkcs8)
        t = notify.parse_target({"url": "http://127.0.0.1:9/mns", "signing_key": pem, "cert_url": CERT_URL})
        shown = json.dumps(notify.public(t))
        self.assertEqual(notify.public(t)["cert_url"], CERT_URL)
        self.assertNotIn(str(t["signing"]["key"][1]), shown, "the key is never shown back")
        for extra in ({"signing_key": pem}, {"cert_url": CERT_URL},
                      {"signing_key": "nope", "cert_url": CERT_URL},
                      {"signing_key": pem, "cert_url": "ftp://x/c.pem"}, {"signing_key": pem, "cert_url": 5}):
            with self.assertRaises(ValueError):
                notify.parse_target({"url": "http://127.0.0.1:9/mns", **extra})


class Receiver(http.server.BaseHTTPRequestHandler):
    got = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.got.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_):
        pass


class PushTest(unittest.TestCase):
    def push(self, target):
        srv = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
        threading.Thread(target=srv.handle_request, daemon=True).start()
        Receiver.got = []
        n = notify.Notifier()
        n.set_target({"url": f"http://127.0.0.1:{srv.server_address[1]}/mns/notifications?topic=t", **target})
        n.task_ended({"TaskId": "MediaConvert-1", "TaskType": "MediaConvert", "Status": "Failed",
                      "Code": "InvalidFile", "Message": "bad"}, {"MNS": {"TopicName": "t"}})
        for _ in range(200):
            sent = n.snapshot()
            if sent:
                break
            threading.Event().wait(0.025)
        srv.server_close()
        self.assertEqual(sent[0].get("status"), 204, sent)
        return Receiver.got[0]

    def test_a_signed_push_verifies_as_mns_documents_it(self):
        path, h, body = self.push({"signing_key": KEYS.read(KEYS.pkcs1), "cert_url": CERT_URL})
        self.assertEqual(base64.b64decode(h["x-mns-signing-cert-url"]).decode(), CERT_URL)
        self.assertEqual(h["content-md5"], base64.b64encode(hashlib.md5(body).hexdigest().encode()).decode())
        self.assertIsNotNone(email.utils.parsedate_to_datetime(h["date"]))
        self.assertEqual(h["x-mns-version"], "2015-06-06")
        # MNS's string to sign, built here from what was received
        mns = sorted(k for k in h if k.startswith("x-mns-"))
        sts = "POST\n" + h["content-md5"] + "\n" + h["content-type"] + "\n" + h["date"] + "\n" \
            + "".join(f"{k}:{h[k]}\n" for k in mns) + path
        self.assertEqual(path, "/mns/notifications?topic=t")
        self.assertTrue(KEYS.verifies(sts.encode(), base64.b64decode(h["authorization"])))
        self.assertFalse(KEYS.verifies(sts.replace("POST", "PUT").encode(), base64.b64decode(h["authorization"])))
        self.assertEqual(json.loads(json.loads(body)["Message"])["Code"], "InvalidFile")

    def test_unsigned_by_default(self):
        _, h, body = self.push({})
        self.assertNotIn("authorization", h)
        self.assertNotIn("x-mns-signing-cert-url", h)
        self.assertEqual(h["content-md5"], base64.b64encode(hashlib.md5(body).hexdigest().encode()).decode())

    def test_the_command_line_key_signs_every_target(self):
        n = notify.Notifier(signing=notify.parse_signing(KEYS.read(KEYS.pkcs8), CERT_URL))
        t = n.set_target({"url": "http://127.0.0.1:9/mns"})
        self.assertEqual(t["target"]["cert_url"], CERT_URL)


if __name__ == "__main__":
    unittest.main()
