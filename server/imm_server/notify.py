"""Task notifications: when a task ends, the IMM task message (docs/testing.md,
"Notifications") is POSTed to the target set with POST /_imm/notify-target, in
an MNS HTTP push envelope (JSON) or alone.  Sent from one worker thread, so the
task clock never waits on a slow receiver; the last deliveries are kept for
GET /_imm/notifications.  Only http:// URLs on loopback: the server never
reaches beyond the machine."""

import collections
import hashlib
import json
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


def parse_target(payload):
    """{"url": "http://127.0.0.1:PORT/path", "envelope": "mns" | "raw", "all": bool,
    "topic": name} -> the target, or ValueError.  null (or {}) clears it."""
    if payload in (None, {}):
        return None
    if not isinstance(payload, dict) or set(payload) - {"url", "envelope", "all", "topic"}:
        raise ValueError("notify-target: an object with url and optionally envelope, all, topic")
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
    return {"url": url, "envelope": envelope, "all": payload.get("all", False), "topic": topic}


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


class Notifier:
    def __init__(self):
        self.target = None
        self.sent = collections.deque(maxlen=KEEP)
        self._queue = queue.Queue(MAX_PENDING)
        self._lock = threading.Lock()
        threading.Thread(target=self._worker, name="imm-notify", daemon=True).start()

    def set_target(self, payload):
        self.target = parse_target(payload)
        return {"ok": True, "target": self.target}

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
                headers = {"Content-Type": "application/json;charset=utf-8", "x-mns-version": "2015-06-06",
                           "x-mns-request-id": uuid.uuid4().hex.upper(),
                           "x-mns-date": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())}
            else:
                body, headers = text.encode("utf-8"), {"Content-Type": "application/json;charset=utf-8"}
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
