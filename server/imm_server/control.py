"""The control API (/_imm/..., unsigned, same port, never counted as API
requests): health, the request log and stats, faults, canned replies, task
outcomes and the task delay, notification targets, data and settings, reset.
Every route takes the JSON payload (None for GET and DELETE) and returns a
JSON-able result, or raises ValueError/TypeError, which the handler answers
with a 400 in the service's error shape."""

import threading

from . import bindings, figures, notify
from .faults import parse_fault_rule
from .replies import ApiError
from .state import BindingData
from .tasks import OutcomeRule


class CannedReply:
    """A reply queued for an action: {"action", "status", "body"} or
    {"action", "error": {"code", "message", "status"}}, with "count" (1, or -1
    for every request until cleared) and "match" ({Param: value})."""

    def __init__(self, obj, desc):
        if not isinstance(obj, dict) or not isinstance(obj.get("action"), str):
            raise ValueError("a canned reply needs action (a string)")
        if obj["action"] not in desc.actions:
            raise ValueError(f"no action {obj['action'][:60]!r} in the API description")
        extra = set(obj) - {"action", "status", "body", "error", "count", "match"}
        if extra:
            raise ValueError(f"a canned reply has no field {sorted(extra)[0]!r}")
        self.action = obj["action"]
        self.count = obj.get("count", 1)
        if isinstance(self.count, bool) or not isinstance(self.count, int) or (self.count < 1 and self.count != -1):
            raise ValueError("count must be a positive integer or -1")
        self.match = obj.get("match", {})
        if not isinstance(self.match, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                       for k, v in self.match.items()):
            raise ValueError("match must be an object of parameter names and string values")
        self.error = obj.get("error")
        if self.error is not None:
            if not isinstance(self.error, dict) or not isinstance(self.error.get("code"), str) \
                    or not isinstance(self.error.get("message", ""), str):
                raise ValueError("error must be an object with code (and message) strings")
            default_status = 400
        else:
            if "body" in obj and not isinstance(obj["body"], dict):
                raise ValueError("body must be a JSON object")
            default_status = 200
        status = obj.get("status", (self.error or {}).get("status", default_status))
        if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
            raise ValueError("status must be an HTTP status from 200 to 599")
        self.status = status
        self.body = obj.get("body", {})

    def applies(self, action, params):
        return action == self.action and all(params.get(k) == v for k, v in self.match.items())

    def as_json(self):
        out = {"action": self.action, "status": self.status, "count": self.count}
        out.update({"error": self.error} if self.error is not None else {"body": self.body})
        return {**out, **({"match": self.match} if self.match else {})}

    def raise_or_body(self):
        if self.error is not None:
            raise ApiError(self.status, self.error["code"], self.error.get("message", ""))
        return self.body


class CannedReplies:
    def __init__(self):
        self._lock = threading.Lock()
        self._queue = []

    def add(self, reply):
        with self._lock:
            self._queue.append(reply)

    def clear(self):
        with self._lock:
            self._queue.clear()

    def snapshot(self):
        with self._lock:
            return [r.as_json() for r in self._queue]

    def take(self, action, params):
        """The first queued reply for action whose match applies, used once."""
        with self._lock:
            for reply in self._queue:
                if reply.applies(action, params):
                    if reply.count > 0:
                        reply.count -= 1
                        if reply.count == 0:
                            self._queue.remove(reply)
                    return reply
        return None


def _ok(**extra):
    return {"ok": True, **extra}


def routes(server):
    """(method, path) -> handler(payload) for the server."""

    def clear_log(_):
        server.log.clear()
        return _ok()

    def add_fault(payload):
        server.faults.add(parse_fault_rule(payload))
        return _ok(faults=server.faults.snapshot())

    def clear_faults(_):
        server.faults.clear()
        return _ok()

    def replace_data(payload):
        data = BindingData(payload)
        server.replace_state(data)
        return _ok(bindings=sum(map(len, data.by_project.values())), projects=sorted(data.projects))

    def change_settings(payload):
        if not isinstance(payload, dict) or set(payload) - {"binding_start_delay", "task_delay"}:
            raise ValueError("settings: only binding_start_delay and task_delay can be set")
        for name in payload:
            value = payload[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 3600:
                raise ValueError(f"{name} must be a number of seconds from 0 to 3600")
        if "binding_start_delay" in payload:
            server.state.start_delay = float(payload["binding_start_delay"])
        if "task_delay" in payload:
            server.board.delay = float(payload["task_delay"])
        return _ok(**server.settings())

    def add_reply(payload):
        server.replies.add(CannedReply(payload, server.description))
        return _ok(replies=server.replies.snapshot())

    def clear_replies(_):
        server.replies.clear()
        return _ok()

    def add_outcome(payload):
        rule = OutcomeRule(payload)
        with server.board.lock:
            server.board.outcomes.append(rule)
            return _ok(outcomes=[r.as_json() for r in server.board.outcomes])

    def list_outcomes(_):
        with server.board.lock:
            return [r.as_json() for r in server.board.outcomes]

    def clear_outcomes(_):
        with server.board.lock:
            server.board.outcomes.clear()
        return _ok()

    def clear_notifications(_):
        server.notifier.clear()
        return _ok()

    return {
        ("GET", "/_imm/health"): lambda _: {"ok": True},
        ("GET", "/_imm/log"): lambda _: server.log.snapshot(),
        ("DELETE", "/_imm/log"): clear_log,
        ("GET", "/_imm/stats"): lambda _: {"connections": server.connections, "requests": server.log.total},
        ("GET", "/_imm/faults"): lambda _: server.faults.snapshot(),
        ("POST", "/_imm/faults"): add_fault,
        ("DELETE", "/_imm/faults"): clear_faults,
        ("POST", "/_imm/data"): replace_data,
        ("POST", "/_imm/records"): lambda payload: figures.add_records(server.state, payload),
        ("GET", "/_imm/settings"): lambda _: server.settings(),
        ("POST", "/_imm/settings"): change_settings,
        ("POST", "/_imm/binding-state"): lambda payload: bindings.force_state(server.state, payload),
        ("GET", "/_imm/replies"): lambda _: server.replies.snapshot(),
        ("POST", "/_imm/replies"): add_reply,
        ("DELETE", "/_imm/replies"): clear_replies,
        ("GET", "/_imm/task-outcomes"): list_outcomes,
        ("POST", "/_imm/task-outcomes"): add_outcome,
        ("DELETE", "/_imm/task-outcomes"): clear_outcomes,
        ("POST", "/_imm/task-state"): lambda payload: server.board.force(payload),
        ("GET", "/_imm/notify-target"): lambda _: {"target": notify.public(server.notifier.target)},
        ("POST", "/_imm/notify-target"): server.notifier.set_target,
        ("GET", "/_imm/notifications"): lambda _: server.notifier.snapshot(),
        ("DELETE", "/_imm/notifications"): clear_notifications,
        ("POST", "/_imm/reset"): lambda _: server.reset(),
    }
