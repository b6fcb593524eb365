"""The server's state, kept where IMM keeps state: projects, datasets and
bindings, OSS bucket attachments, tasks, triggers, batches, stories, clusters
and file metadata.  One State behind one lock; the family modules (projects.py,
bindings.py, ...) hold the actions that read and change it.  Built afresh from
a BindingData on start, reset and /_imm/data, so the startup data itself is
never changed."""

import bisect
import collections
import itertools
import json
import re
import threading
import time
from datetime import datetime, timedelta, timezone

from .replies import ApiError, missing_parameter, parse_json


def binding_key(binding):
    """Page order of a project's bindings; NextToken names a position in it."""
    return (binding.get("DatasetName") or "", binding.get("URI") or "")


def _as_list(value):
    # Lua's cjson encodes an empty table as {}, so a test loading an empty list
    # from Lua sends an empty object; take it for the empty list it meant.
    return [] if value == {} else value


class BindingData:
    """An immutable, validated data set.  Replacing it swaps one reference, which
    is atomic, so a request reads a consistent data set without locking."""

    def __init__(self, document):
        if not isinstance(document, dict) or not isinstance(_as_list(document.get("Bindings")), list):
            raise ValueError('data must be an object with a "Bindings" array')
        projects = _as_list(document.get("Projects", []))
        if not isinstance(projects, list) or not all(
                isinstance(p, str) or (isinstance(p, dict) and isinstance(p.get("ProjectName"), str))
                for p in projects):
            raise ValueError('"Projects" must be an array of names or of objects with a ProjectName')
        datasets = _as_list(document.get("Datasets", []))
        if not isinstance(datasets, list) or not all(
                isinstance(d, dict) and isinstance(d.get("ProjectName"), str) and isinstance(d.get("DatasetName"), str)
                for d in datasets):
            raise ValueError('"Datasets" must be an array of objects with a ProjectName and a DatasetName')
        # project name -> the project's record as given (a bare name gives an empty one)
        self.project_records = {}
        for p in projects:
            record = {"ProjectName": p} if isinstance(p, str) else dict(p)
            self.project_records[record["ProjectName"]] = record
        self.dataset_records = [dict(d) for d in datasets]
        projects = list(self.project_records)
        by_project = collections.defaultdict(list)
        for i, binding in enumerate(_as_list(document["Bindings"])):
            if not isinstance(binding, dict) or not isinstance(binding.get("ProjectName"), str):
                raise ValueError(f"Bindings[{i}] must be an object with a string ProjectName")
            if not all(isinstance(binding.get(k, ""), (str, type(None))) for k in ("DatasetName", "URI")):
                raise ValueError(f"Bindings[{i}]: DatasetName and URI must be strings")
            by_project[binding["ProjectName"]].append(binding)
        self.projects = set(projects) | set(by_project) | {d["ProjectName"] for d in self.dataset_records}
        self.by_project = {p: sorted(items, key=binding_key) for p, items in by_project.items()}

    @classmethod
    def from_file(cls, path):
        with open(path, encoding="utf-8") as f:
            return cls(json.load(f))


def parse_max_results(value, largest=200):
    """MaxResults: 0 or absent is the default (100, or less where that is the largest)."""
    if value is None or value == "":
        return min(100, largest)
    if not re.fullmatch(r"[0-9]{1,4}", value) or int(value) > largest:
        raise ApiError(400, "InvalidParameter.MaxResults",
                       f"The parameter MaxResults must be an integer from 0 to {largest}, got {value!r}.")
    return int(value) or min(100, largest)


DEFAULT_BINDING_START_DELAY = 0.3   # seconds a new binding stays Ready before it is Running
BINDING_STATES = ("Ready", "Running", "Retrying", "Stopped", "Failed", "Deleted")
# oss://<bucket>[/<prefix>/]: a bucket name is 3-63 lowercase letters, digits and
# hyphens, starting and ending with a letter or digit; a prefix ends with "/".
OSS_URI_RE = re.compile(r"^oss://[a-z0-9][a-z0-9-]{1,61}[a-z0-9](/|/[^\r\n]*/)?$")
CST = timezone(timedelta(hours=8))


def rfc3339_nano(when=None):
    """The service's time format, e.g. 2024-03-18T07:21:35.123456000+08:00."""
    t = (when or datetime.now(timezone.utc)).astimezone(CST)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000+08:00"


def required(params, name):
    value = params.get(name, "")
    if not value:
        raise missing_parameter(name)
    return value


def parse_name_token(value):
    """ListProjects / ListDatasets NextToken: the name of the last item returned."""
    return value or None


def name_page(items, key, params):
    """A page of items (sorted by key) after NextToken, filtered by Prefix."""
    limit = parse_max_results(params.get("MaxResults"))
    after = parse_name_token(params.get("NextToken"))
    prefix = params.get("Prefix") or ""
    items = [i for i in items if i[key].startswith(prefix)]
    start = bisect.bisect_right(items, after, key=lambda i: i[key]) if after else 0
    page = items[start:start + limit]
    token = page[-1][key] if start + len(page) < len(items) else None
    return page, token


def parse_tags(value):
    """Tag: a JSON array of {"Key", "Value"} (the SDK's request model, sent as TagShrink),
    already parsed by validation.py; returned as the response's {"TagKey", "TagValue"}."""
    if not value:
        return []
    if isinstance(value, str):
        try:
            value = parse_json(value)
        except ValueError:
            raise ApiError(400, "InvalidParameter.Tag", f"The parameter Tag must be a JSON array, got {value[:60]!r}.")
    if not isinstance(value, list) or not all(
            isinstance(t, dict) and isinstance(t.get("Key"), str) and isinstance(t.get("Value", ""), str)
            for t in value):
        raise ApiError(400, "InvalidParameter.Tag",
                       'The parameter Tag must be a JSON array of {"Key": ..., "Value": ...}.')
    return [{"TagKey": t["Key"], "TagValue": t.get("Value", "")} for t in value]


def not_found(kind, name):
    return ApiError(404, "ResourceNotFound", f"The specified {kind} {name} does not exist.")


class Collection:
    """Records of one kind (triggers, batches, stories, ...), each under a scope
    (ProjectName, or ProjectName and DatasetName) and an id.  Listed in creation
    order; NextToken is the creation number of the last record returned, so a
    record deleted between pages never shifts the next page.  Bounded: past cap
    records the oldest go, so a long fuzz run cannot grow the server without end."""

    def __init__(self, kind, cap=10000):
        self.kind, self.cap = kind, cap
        self.items = collections.OrderedDict()     # (scope, id) -> (seq, record)
        self._seq = itertools.count(1)

    def put(self, scope, rid, record):
        key = (scope, rid)
        old = self.items.get(key)
        self.items[key] = (old[0] if old else next(self._seq), record)
        while len(self.items) > self.cap:
            self.items.popitem(last=False)
        return record

    def find(self, scope, rid):
        found = self.items.get((scope, rid))
        return found[1] if found else None

    def get(self, scope, rid):
        record = self.find(scope, rid)
        if record is None:
            raise not_found(self.kind, rid)
        return record

    def delete(self, scope, rid):
        self.get(scope, rid)
        del self.items[(scope, rid)]

    def scoped(self, scope):
        return [(seq, r) for (s, _), (seq, r) in self.items.items() if s == scope]

    def page(self, scope, params, keep=lambda r: True, largest=100):
        """(records, NextToken or None): MaxResults (1..largest, default largest... as
        documented per action), NextToken, Order (asc | desc, on creation order)."""
        limit = parse_max_results(params.get("MaxResults"), largest)
        descending = (params.get("Order") or "asc").lower() == "desc"
        token = params.get("NextToken") or ""
        if token and not re.fullmatch(r"[0-9]{1,18}", token):
            raise ApiError(400, "InvalidParameter.NextToken", f"The specified NextToken {token[:60]!r} is not valid.")
        rows = sorted(((seq, r) for seq, r in self.scoped(scope) if keep(r)), key=lambda x: x[0],
                      reverse=descending)
        if token:
            after = int(token)
            rows = [x for x in rows if (x[0] < after if descending else x[0] > after)]
        page = rows[:limit]
        more = len(rows) > limit
        return [dict(r) for _, r in page], (str(page[-1][0]) if more else None)


class State:
    """Everything the actions keep, behind one lock (tasks live in tasks.py's
    TaskBoard, which has its own).  A binding made by CreateBinding starts Ready
    and turns Running once start_delay has passed; the change is applied when
    the binding is next read (GetBinding, ListBindings)."""

    def __init__(self, data, start_delay=DEFAULT_BINDING_START_DELAY):
        self.lock = threading.RLock()
        self.start_delay = start_delay
        stamp = rfc3339_nano()
        self.projects = {}
        for name in sorted(data.projects):
            record = {"ProjectName": name, "Description": "", "CreateTime": stamp, "UpdateTime": stamp,
                      "Tags": []}
            record.update(data.project_records.get(name, {}))
            self.projects[name] = record
        self.by_project = {p: [dict(b) for b in items] for p, items in data.by_project.items()}
        self.datasets = {}     # (project, dataset) -> record
        for d in data.dataset_records:
            self.datasets[(d["ProjectName"], d["DatasetName"])] = \
                {"Description": "", "CreateTime": stamp, "UpdateTime": stamp, **d}
        for p, items in self.by_project.items():
            for b in items:
                key = (p, b.get("DatasetName") or "")
                if key[1] and key not in self.datasets:
                    self.datasets[key] = {"ProjectName": p, "DatasetName": key[1], "Description": "",
                                          "CreateTime": stamp, "UpdateTime": stamp}
        self.starting = {}     # (project, dataset, uri) -> time.monotonic() when it turns Running
        self.attachments = {}  # bucket -> {ProjectName, Description, CreateTime, UpdateTime}
        self.triggers = Collection("trigger")
        self.batches = Collection("batch")
        self.stories = Collection("story")
        self.figure_clusters = Collection("figure cluster")
        self.location_date_clusters = Collection("location date cluster")
        self.similar_image_clusters = Collection("similar image cluster")
        self.filemeta = None   # made on first use (filemeta.py)

    # -- helpers (call with the lock held) --

    def _project(self, name):
        if name not in self.projects:
            raise ApiError(404, "ResourceNotFound", f"The specified project {name} does not exist.")
        return self.projects[name]

    def _dataset(self, project, name):
        self._project(project)
        if (project, name) not in self.datasets:
            raise ApiError(404, "ResourceNotFound", f"The specified dataset {name} does not exist.")
        return self.datasets[(project, name)]

    def _find(self, project, dataset, uri):
        for b in self.by_project.get(project, []):
            if b.get("DatasetName") == dataset and b.get("URI") == uri:
                return b
        return None

    def _binding(self, params):
        project, dataset = required(params, "ProjectName"), required(params, "DatasetName")
        uri = required(params, "URI")
        self._dataset(project, dataset)
        b = self._find(project, dataset, uri)
        if b is None:
            raise ApiError(404, "ResourceNotFound", f"The specified binding {uri} of dataset {dataset} does not exist.")
        self._advance(b)
        return b

    def _advance(self, b):
        key = (b["ProjectName"], b.get("DatasetName"), b.get("URI"))
        due = self.starting.get(key)
        if due is not None and time.monotonic() >= due:
            del self.starting[key]
            if b.get("State") == "Ready":
                b.update(State="Running", Phase="FullScanning", UpdateTime=rfc3339_nano())

