"""Tasks: every Create*Task action starts one (its TaskType from api/task-types.json),
Running at first, then Succeeded after the task delay (settings, --task-delay), or
Failed with a Code and Message when a task outcome queued through the control API
says so.  GetTask, ListTasks (filters and NextToken paging) and the Get*Result
actions read them.  When a task ends and its request had a Notification, or a
notification target is set (control.py), notify.py posts the task message."""

import hashlib
import json
import heapq
import itertools
import re
import threading
import time
import uuid
from datetime import datetime

from .replies import ApiError
from .state import Collection, not_found, required, rfc3339_nano

DEFAULT_TASK_DELAY = 0.2       # seconds a task stays Running
MAX_TASKS = 10000              # the oldest go beyond this, so memory stays bounded
TERMINAL = ("Succeeded", "Failed")


def event_id(seed):
    """An EventId shaped like the service's (e.g. 2F6-1Bz99Xi93EnRpNEyLudILJm****)."""
    digest = hashlib.sha256(seed.encode("utf-8")).hexdigest().upper()
    return f"{digest[:3]}-{digest[3:24]}"


class OutcomeRule:
    """A queued task outcome: the next task created (of TaskType, or matching the
    request's parameters) ends with this Status, Code and Message."""

    def __init__(self, obj):
        if not isinstance(obj, dict):
            raise ValueError("a task outcome must be an object")
        self.status = obj.get("Status", "Failed")
        if self.status not in TERMINAL:
            raise ValueError(f"Status must be one of {', '.join(TERMINAL)}")
        self.code = obj.get("Code", "" if self.status == "Succeeded" else "InternalError")
        self.message = obj.get("Message", "" if self.status == "Succeeded" else "The task failed.")
        self.task_type = obj.get("TaskType")
        self.delay = obj.get("delay")
        self.count = obj.get("count", 1)
        self.match = obj.get("match", {})
        for name, value in (("Code", self.code), ("Message", self.message)):
            if not isinstance(value, str):
                raise ValueError(f"{name} must be a string")
        if self.task_type is not None and not isinstance(self.task_type, str):
            raise ValueError("TaskType must be a string")
        if self.delay is not None and (isinstance(self.delay, bool) or not isinstance(self.delay, (int, float))
                                       or not 0 <= self.delay <= 3600):
            raise ValueError("delay must be a number of seconds from 0 to 3600")
        if isinstance(self.count, bool) or not isinstance(self.count, int) or (self.count < 1 and self.count != -1):
            raise ValueError("count must be a positive integer or -1")
        if not isinstance(self.match, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                       for k, v in self.match.items()):
            raise ValueError("match must be an object of parameter names and string values")

    def applies(self, task_type, raw_params):
        return ((self.task_type is None or self.task_type == task_type)
                and all(raw_params.get(k) == v for k, v in self.match.items()))

    def as_json(self):
        return {"Status": self.status, "Code": self.code, "Message": self.message, "TaskType": self.task_type,
                "delay": self.delay, "count": self.count, "match": self.match}


class TaskBoard:
    """The tasks, an outcome queue, and one clock thread that ends each task when
    it is due (so a notification goes out even if nobody polls)."""

    def __init__(self, notifier, delay=DEFAULT_TASK_DELAY):
        self.lock = threading.RLock()
        self.tasks = Collection("task", cap=MAX_TASKS)
        self.delay = delay
        self.outcomes = []
        self.notifier = notifier
        self._due = []                      # heap of (when, seq, scope, task id)
        self._seq = itertools.count()
        self._wake = threading.Condition(self.lock)
        self._closed = False
        threading.Thread(target=self._clock, name="imm-task-clock", daemon=True).start()

    def close(self):
        with self.lock:
            self._closed = True
            self._wake.notify()

    # -- the clock --

    def _clock(self):
        with self.lock:
            while not self._closed:
                now = time.monotonic()
                while self._due and self._due[0][0] <= now:
                    _, _, scope, tid = heapq.heappop(self._due)
                    task = self.tasks.find(scope, tid)
                    if task is not None:
                        self._finish(task)
                timeout = self._due[0][0] - now if self._due else None
                self._wake.wait(timeout)

    def _finish(self, task):
        """End a Running task as planned (lock held); notify outside the state."""
        if task["Status"] != "Running":
            return
        plan = task.pop("_plan")
        task.update(Status=plan["Status"], Code=plan["Code"], Message=plan["Message"], Progress=100,
                    EndTime=rfc3339_nano())
        self.notifier.task_ended(dict(task), task.get("_notification"))

    # -- actions --

    def take_outcome(self, task_type, raw_params):
        for rule in self.outcomes:
            if rule.applies(task_type, raw_params):
                if rule.count > 0:
                    rule.count -= 1
                    if rule.count == 0:
                        self.outcomes.remove(rule)
                return rule
        return None

    def create(self, action, task_type, params, raw_params):
        project = required(params, "ProjectName")
        with self.lock:
            rule = self.take_outcome(task_type, raw_params)
            tid = f"{task_type}-{uuid.uuid4()}"
            plan = {"Status": rule.status if rule else "Succeeded", "Code": rule.code if rule else "",
                    "Message": rule.message if rule else ""}
            delay = rule.delay if rule and rule.delay is not None else self.delay
            task = {"ProjectName": project, "TaskId": tid, "TaskType": task_type, "Status": "Running",
                    "Code": "", "Message": "", "Progress": 0, "StartTime": rfc3339_nano(), "EndTime": "",
                    "EventId": event_id(tid), "UserData": params.get("UserData", ""),
                    "Tags": params.get("Tags") or {}, "TaskRequestDefinition": _definition(action, raw_params),
                    "_plan": plan, "_notification": params.get("Notification"), "_started": time.time()}
            self.tasks.put(project, tid, task)
            if delay <= 0:
                self._finish(task)
            else:
                if len(self._due) >= 2 * MAX_TASKS:
                    # entries of tasks evicted from the collection: drop them, so a
                    # flood of long tasks cannot grow the heap past the tasks kept
                    self._due = [e for e in self._due if self.tasks.find(e[2], e[3]) is not None]
                    heapq.heapify(self._due)
                heapq.heappush(self._due, (time.monotonic() + delay, next(self._seq), project, tid))
                self._wake.notify()
            return {"TaskId": tid, "EventId": task["EventId"]}

    def view(self, task, with_definition=True):
        """The task as GetTask answers it; TaskRequestDefinition is the request
        only when RequestDefinition is true (else empty, so the field is there)."""
        out = {k: v for k, v in task.items() if not k.startswith("_")}
        if not with_definition:
            out["TaskRequestDefinition"] = ""
        return out

    def get(self, params):
        project, tid = required(params, "ProjectName"), required(params, "TaskId")
        task_type = required(params, "TaskType")
        with self.lock:
            task = self.tasks.find(project, tid)
            if task is None or task["TaskType"] != task_type:
                raise not_found("task", tid)
            return self.view(task, params.get("RequestDefinition") == "true")

    def force(self, payload):
        """/_imm/task-state: {TaskId, Status[, Code, Message]} ends (or restarts) a task now."""
        if not isinstance(payload, dict) or not isinstance(payload.get("TaskId"), str):
            raise ValueError("task-state needs a TaskId (string) and a Status")
        rule = OutcomeRule({k: v for k, v in payload.items() if k in ("Status", "Code", "Message")})
        with self.lock:
            for (scope, tid), (_, task) in self.tasks.items.items():
                if tid == payload["TaskId"]:
                    task["_plan"] = {"Status": rule.status, "Code": rule.code, "Message": rule.message}
                    if task["Status"] != "Running":
                        task["Status"] = "Running"
                    self._finish(task)
                    return self.view(task)
        raise ValueError("no such task")


def _definition(action, raw_params):
    """TaskRequestDefinition: the request as the service echoes it (JSON text)."""
    keep = {k: v for k, v in raw_params.items() if k not in ("Signature", "SecurityToken", "AccessKeyId")}
    return json.dumps({"Action": action, **keep}, sort_keys=True, separators=(",", ":"))


def parse_time(text):
    """An RFC 3339 time (the service's, with nanoseconds, or a client's) as an aware datetime."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", text or "")
    if not m:
        raise ValueError(f"not a time: {text!r}")
    return datetime.fromisoformat(m.group(1) + ("+00:00" if m.group(3) == "Z" else m.group(3)))


def _time_range(value, name):
    """{Start, End} of a TimeRange, as datetimes (either may be absent)."""
    out = []
    for key in ("Start", "End"):
        text = (value or {}).get(key)
        try:
            out.append(parse_time(text) if text else None)
        except ValueError:
            raise ApiError(400, f"InvalidParameter.{name}", f"The parameter {name}.{key} is not a time: {text!r}.")
    return out[0], out[1]


def _in_range(stamp, start, end):
    if start is None and end is None:
        return True
    if not stamp:
        return False
    when = parse_time(stamp)
    return (start is None or when >= start) and (end is None or when <= end)


def _tag_selector(text):
    """TagSelector: "key=value" pairs joined by ",", every one required ("cheap" subset)."""
    pairs = []
    for part in (text or "").split(","):
        if part.strip():
            key, sep, value = part.partition("=")
            if not sep:
                raise ApiError(400, "InvalidParameter.TagSelector",
                               f"The parameter TagSelector must be key=value pairs joined by commas, got {text!r}.")
            pairs.append((key.strip(), value.strip()))
    return pairs


def list_tasks(board, params):
    project = required(params, "ProjectName")
    types = params.get("TaskTypes") or []
    status = params.get("Status") or ""
    s_start, s_end = _time_range(params.get("StartTimeRange"), "StartTimeRange")
    e_start, e_end = _time_range(params.get("EndTimeRange"), "EndTimeRange")
    selector = _tag_selector(params.get("TagSelector"))
    with_definition = params.get("RequestDefinition") == "true"

    def keep(task):
        tags = task.get("Tags") or {}
        return ((not types or task["TaskType"] in types) and (not status or task["Status"] == status)
                and _in_range(task["StartTime"], s_start, s_end)
                and (e_start is None and e_end is None or _in_range(task["EndTime"], e_start, e_end))
                and all(isinstance(tags, dict) and str(tags.get(k)) == v for k, v in selector))

    with board.lock:
        page, token = board.tasks.page(project, params, keep, largest=100)
        tasks = [board.view(t, with_definition) for t in page]
    result = {"ProjectName": project, "Tasks": tasks, "MaxResults": len(tasks)}
    if token:
        result["NextToken"] = token
    return result


def result_of(board, params, extra):
    """Get*Result: the task, with the result fields the action adds."""
    task = board.get(params)
    task.pop("Progress", None)
    task.pop("Tags", None)
    task.pop("TaskRequestDefinition", None)
    task.update(extra(task))
    return task


def _moderation(task):
    return {"ModerationResult": {"Suggestion": "pass", "Categories": [], "Frames": {"TotalCount": 0,
                                                                                     "BlockFrames": []}}}


RESULT_ACTIONS = {
    "GetDecodeBlindWatermarkResult": lambda task: {"Content": ""},
    "GetImageModerationResult": _moderation,
    "GetVideoModerationResult": _moderation,
    "GetVideoLabelClassificationResult": lambda task: {"Labels": []},
}
