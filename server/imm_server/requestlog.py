"""The request log (GET /_imm/log): one record per API request, secrets redacted."""

import itertools
import threading
import time

from .replies import REDACTED


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


