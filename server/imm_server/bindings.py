"""Bindings (ListBindings, CreateBinding, GetBinding, DeleteBinding, and
StopBinding / ResumeBinding, which the 2020-09-30 SDK no longer has) and the
binding lifecycle: Ready, then Running (Phase FullScanning) start_delay seconds
later, seen at the next read; /_imm/binding-state forces any state."""

import bisect
import time

from .replies import ApiError, json_bytes, missing_parameter
from .state import (BINDING_STATES, OSS_URI_RE, binding_key, parse_max_results, required, rfc3339_nano)


def parse_next_token(value, project):
    """NextToken is '<ProjectName>:<DatasetName>:<URI>' of the last item returned;
    URIs contain ':' themselves, so split at most twice."""
    if not value:
        return None
    parts = value.split(":", 2)
    if len(parts) != 3 or parts[0] != project or not parts[2]:
        raise ApiError(400, "InvalidParameter.NextToken", f"The specified NextToken {value!r} is not valid.")
    return (parts[1], parts[2])


def _list_page(data, params):
    """The ListBindings result (without RequestId) for params, or ApiError."""
    project = params.get("ProjectName", "")
    if not project:
        raise missing_parameter("ProjectName")
    limit = parse_max_results(params.get("MaxResults"))
    after = parse_next_token(params.get("NextToken"), project)
    if project not in data.projects:
        raise ApiError(404, "ResourceNotFound", f"The specified project {project} does not exist.")
    dataset, name = params.get("DatasetName"), params.get("Name")
    # Simplification: the real service matches Name against the binding itself;
    # here Name keeps bindings whose URI contains it, which is enough to test filtering.
    items = [b for b in data.by_project.get(project, [])
             if (not dataset or b.get("DatasetName") == dataset) and (not name or name in (b.get("URI") or ""))]
    start = bisect.bisect_right(items, after, key=binding_key) if after else 0
    page = items[start:start + limit]
    result = {"Bindings": page}
    if start + len(page) < len(items):
        last = page[-1]
        result["NextToken"] = f"{project}:{last.get('DatasetName') or ''}:{last.get('URI') or ''}"
    return result


def list_bindings(st, params):
    with st.lock:
        project = params.get("ProjectName", "")
        for key in [k for k in st.starting if k[0] == project]:
            st._advance(st._find(*key))
        result = _list_page(st, params)
        result["Bindings"] = [dict(b) for b in result["Bindings"]]
        return result


def create_binding(st, params):
    project, dataset = required(params, "ProjectName"), required(params, "DatasetName")
    uri = required(params, "URI")
    if not OSS_URI_RE.match(uri):
        raise ApiError(400, "InvalidParameter.URI",
                       f"The parameter URI must look like oss://bucket or oss://bucket/prefix/, got {uri!r}.")
    with st.lock:
        st._dataset(project, dataset)
        if st._find(project, dataset, uri) is not None:
            raise ApiError(409, "ResourceAlreadyExist", f"The binding {uri} of dataset {dataset} already exists.")
        stamp = rfc3339_nano()
        b = {"ProjectName": project, "DatasetName": dataset, "URI": uri, "State": "Ready", "Phase": "",
             "Reason": "", "CreateTime": stamp, "UpdateTime": stamp}
        bisect.insort(st.by_project.setdefault(project, []), b, key=binding_key)
        st.starting[(project, dataset, uri)] = time.monotonic() + st.start_delay
        return {"Binding": dict(b)}


def get_binding(st, params):
    with st.lock:
        return {"Binding": dict(st._binding(params))}


def stop_binding(st, params):
    with st.lock:
        b = st._binding(params)
        st.starting.pop((b["ProjectName"], b["DatasetName"], b["URI"]), None)
        b.update(State="Stopped", Reason=params.get("Reason", ""), UpdateTime=rfc3339_nano())
        return {}


def resume_binding(st, params):
    with st.lock:
        b = st._binding(params)
        b.update(State="Running", Phase=b.get("Phase") or "FullScanning", Reason="",
                 UpdateTime=rfc3339_nano())
        return {}


def delete_binding(st, params):
    with st.lock:
        b = st._binding(params)
        st.by_project[b["ProjectName"]].remove(b)
        st.starting.pop((b["ProjectName"], b["DatasetName"], b["URI"]), None)
        return {}

def force_state(st, payload):
    """/_imm/binding-state: {ProjectName, DatasetName, URI, State[, Reason, Phase]}."""
    if (not isinstance(payload, dict) or payload.get("State") not in BINDING_STATES
            or not all(isinstance(payload.get(k), str) for k in ("ProjectName", "DatasetName", "URI"))):
        raise ValueError(f"binding-state needs ProjectName, DatasetName and URI (strings) and a State, "
                         f"one of: {', '.join(BINDING_STATES)}")
    with st.lock:
        b = st._find(payload.get("ProjectName"), payload.get("DatasetName"), payload.get("URI"))
        if b is None:
            raise ValueError("no such binding")
        st.starting.pop((b["ProjectName"], b["DatasetName"], b["URI"]), None)
        b.update(State=payload["State"], UpdateTime=rfc3339_nano())
        for k in ("Reason", "Phase"):
            if isinstance(payload.get(k), str):
                b[k] = payload[k]
        return dict(b)


def synthetic_bindings_result(project, size):
    """A ListBindings result of about size bytes, for the 'big' fault."""
    def item(i):
        return {"ProjectName": project, "DatasetName": "big-dataset", "URI": f"oss://big-bucket/{i:08d}/",
                "State": "Ready", "Phase": "IncrementalScanning", "Reason": "",
                "CreateTime": "2024-01-02T03:04:05.000000000+08:00",
                "UpdateTime": "2024-01-02T03:04:05.000000000+08:00"}
    # Every item has the same length (zero-padded index), so the count is exact arithmetic.
    per_item = len(json_bytes(item(0))) + 1
    return {"Bindings": [item(i) for i in range(max(1, size // per_item))]}




ACTIONS = {
    "ListBindings": list_bindings,
    "CreateBinding": create_binding,
    "GetBinding": get_binding,
    "StopBinding": stop_binding,
    "ResumeBinding": resume_binding,
    "DeleteBinding": delete_binding,
}
