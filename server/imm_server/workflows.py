"""What triggers and batches share: both are a workflow (Input, Actions,
Notification, Tags) with a State, created, read, listed, updated, suspended,
resumed and deleted alike.  triggers.py and batches.py name the differences."""

import hashlib

from .replies import ApiError
from .state import required, rfc3339_nano

STATES = ("Ready", "Running", "Suspended", "Succeeded", "Failed")


def new_id(prefix, project, seed):
    digest = hashlib.sha256(f"{project}/{seed}".encode("utf-8")).hexdigest()
    return f"{prefix}-{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


class Workflows:
    """The actions of one workflow kind over one Collection of the State."""

    def __init__(self, kind, collection_name, list_field, record_field, id_prefix):
        self.kind, self.collection_name = kind, collection_name
        self.list_field, self.record_field, self.id_prefix = list_field, record_field, id_prefix
        self._count = 0

    def _coll(self, st):
        return getattr(st, self.collection_name)

    def create(self, st, params):
        project = required(params, "ProjectName")
        with st.lock:
            st._project(project)
            self._count += 1
            rid = new_id(self.id_prefix, project, f"{self._count}/{rfc3339_nano()}")
            stamp = rfc3339_nano()
            record = {"Id": rid, "Input": params.get("Input"), "Actions": params.get("Actions") or [],
                      "Notification": params.get("Notification") or {}, "Tags": params.get("Tags") or {},
                      "ServiceRole": params.get("ServiceRole", ""), "State": "Running",
                      "CreateTime": stamp, "UpdateTime": stamp}
            self._coll(st).put(project, rid, record)
            return {"Id": rid}

    def get(self, st, params):
        project, rid = required(params, "ProjectName"), required(params, "Id")
        with st.lock:
            return {self.record_field: dict(self._coll(st).get(project, rid))}

    def list(self, st, params):
        project = required(params, "ProjectName")
        state = params.get("State") or ""
        selector = [tuple(p.split("=", 1)) for p in (params.get("TagSelector") or "").split(",") if "=" in p]
        if state and state not in STATES:
            raise ApiError(400, "InvalidParameter.State", f"The parameter State must be one of {', '.join(STATES)}.")

        def keep(record):
            tags = record.get("Tags") or {}
            return (not state or record["State"] == state) and all(
                isinstance(tags, dict) and str(tags.get(k.strip())) == v.strip() for k, v in selector)

        with st.lock:
            page, token = self._coll(st).page(project, params, keep, largest=100)
        return {self.list_field: page, **({"NextToken": token} if token else {})}

    def update(self, st, params):
        project, rid = required(params, "ProjectName"), required(params, "Id")
        with st.lock:
            record = self._coll(st).get(project, rid)
            for name in ("Input", "Actions", "Tags"):
                if params.get(name) is not None:
                    record[name] = params[name]
            record["UpdateTime"] = rfc3339_nano()
            return {}

    def _move(self, st, params, to, allowed):
        project, rid = required(params, "ProjectName"), required(params, "Id")
        with st.lock:
            record = self._coll(st).get(project, rid)
            if record["State"] not in allowed:
                raise ApiError(400, "InvalidState",
                               f"The {self.kind} {rid} is {record['State']}; it cannot become {to}.")
            record.update(State=to, UpdateTime=rfc3339_nano())
            return {}

    def suspend(self, st, params):
        return self._move(st, params, "Suspended", ("Ready", "Running", "Suspended"))

    def resume(self, st, params):
        return self._move(st, params, "Running", ("Suspended", "Running", "Ready"))

    def delete(self, st, params):
        project, rid = required(params, "ProjectName"), required(params, "Id")
        with st.lock:
            self._coll(st).delete(project, rid)
            return {}

    def actions(self, noun, plural):
        return {f"Create{noun}": self.create, f"Get{noun}": self.get, f"List{plural}": self.list,
                f"Update{noun}": self.update, f"Suspend{noun}": self.suspend, f"Resume{noun}": self.resume,
                f"Delete{noun}": self.delete}
