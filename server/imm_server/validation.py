"""Every API request checked against the API description (api/imm-2020-09-30.json,
read as data at start-up, never copied into code), as the service checks it:
a required parameter absent or empty is 400 MissingParameter; a number or
boolean that is not one, or a JSON-encoded
parameter that is not JSON or not of the described shape is 400
InvalidParameter.<Name>; a parameter the action does not have is ignored.  What passes is handed to the action with each JSON
parameter parsed into Python objects and each scalar as the string it came as."""

import json
import os

from .replies import ApiError, missing_parameter, parse_json

HERE = os.path.dirname(os.path.abspath(__file__))
DESCRIPTION_NAME = "imm-2020-09-30.json"
TASK_TYPES_NAME = "task-types.json"

# Actions the server answers beyond the description: the 2020-09-30 SDK dropped
# them, imm still sends them (lua/imm/operations.lua).
EXTRA_ACTIONS = {
    "StopBinding": {"params": [{"name": n, "encoding": "scalar", "type": "string", "required": r}
                               for n, r in (("ProjectName", True), ("DatasetName", True), ("URI", True),
                                            ("Reason", False))],
                    "response": {"fields": ["RequestId"], "paging": None}},
}
EXTRA_ACTIONS["ResumeBinding"] = {"params": EXTRA_ACTIONS["StopBinding"]["params"][:3],
                                  "response": {"fields": ["RequestId"], "paging": None}}


def find_data_file(name):
    """api/NAME beside the package (installed: imm/server/api/) or at the top of
    a checkout (server/imm_server/../../api/)."""
    for base in (os.path.join(HERE, ".."), os.path.join(HERE, "..", "..")):
        path = os.path.normpath(os.path.join(base, "api", name))
        if os.path.isfile(path):
            return path
    raise ValueError(f"cannot find api/{name} beside {HERE}")


class Description:
    """The API description: actions (name -> params, response fields) and models."""

    def __init__(self, doc, task_types):
        self.actions = dict(doc["actions"])
        for name, action in EXTRA_ACTIONS.items():
            self.actions.setdefault(name, action)
        self.models = doc.get("models", {})
        self.params = {name: {p["name"]: p for p in a["params"]} for name, a in self.actions.items()}
        # task-types.json: {"task_types": {Action: {"type": T} | T}} or a flat {Action: T}
        table = task_types.get("task_types", task_types)
        self.task_types = {a: (t["type"] if isinstance(t, dict) else t) for a, t in table.items()
                           if isinstance(t, (dict, str))}

    @classmethod
    def load(cls, path=None, task_types_path=None):
        with open(path or find_data_file(DESCRIPTION_NAME), encoding="utf-8") as f:
            doc = json.load(f)
        with open(task_types_path or find_data_file(TASK_TYPES_NAME), encoding="utf-8") as f:
            task_types = json.load(f)
        return cls(doc, task_types)

    def response_fields(self, action):
        return self.actions[action]["response"]["fields"]

    def paging(self, action):
        return self.actions[action]["response"].get("paging")


def invalid(name, why):
    return ApiError(400, f"InvalidParameter.{name}", f"The parameter {name} {why}.")


def _kind(value):
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


def check_value(desc, value, typ, where, depth=0):
    """None if value has the described type, else why not (with the JSON path)."""
    if depth > 64:
        return f"{where} is nested too deeply"
    if typ == "any":
        return None
    if typ == "string":
        return None if isinstance(value, str) else f"{where} must be a string, not {_kind(value)}"
    if typ == "number":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else f"{where} must be a number, not {_kind(value)}"
    if typ == "boolean":
        return None if isinstance(value, bool) else f"{where} must be a boolean, not {_kind(value)}"
    if "array" in typ:
        if not isinstance(value, list):
            return f"{where} must be an array, not {_kind(value)}"
        for i, item in enumerate(value):
            why = check_value(desc, item, typ["array"], f"{where}[{i}]", depth + 1)
            if why:
                return why
        return None
    if "map" in typ:
        if not isinstance(value, dict):
            return f"{where} must be an object, not {_kind(value)}"
        for key, item in value.items():
            why = check_value(desc, item, typ["map"], f"{where}.{key}", depth + 1)
            if why:
                return why
        return None
    model = desc.models.get(typ.get("model"), {"fields": []})
    if not isinstance(value, dict):
        return f"{where} must be an object, not {_kind(value)}"
    fields = {f["name"]: f for f in model["fields"]}
    for name, field in fields.items():
        if field.get("required") and value.get(name) in (None, ""):
            return f"{where}.{name} is required"
    for key, item in value.items():
        # unknown fields of a model pass: the service ignores them, and the SDK
        # models of newer versions add fields
        if key in fields and item is not None:
            why = check_value(desc, item, fields[key]["type"], f"{where}.{key}", depth + 1)
            if why:
                return why
    return None


def _scalar_ok(text, typ):
    if typ == "number":
        try:
            number = float(text)
        except ValueError:
            return False
        return number == number and abs(number) != float("inf")
    if typ == "boolean":
        return text in ("true", "false")
    return True


def validate(desc, action, params):
    """The action's parameters checked and parsed, or ApiError (400)."""
    known = desc.params[action]
    # A parameter the action does not have is ignored, as the service ignores it
    # (a newer SDK may send one this description does not know).
    out = {}
    for name, spec in known.items():
        value = params.get(name)
        if value is None or value == "":
            if spec.get("required"):
                raise missing_parameter(name)
            continue
        if spec.get("encoding") == "json":
            try:
                parsed = parse_json(value)
            except ValueError:
                raise invalid(name, f"must be a JSON text, got {value[:60]!r}")
            why = check_value(desc, parsed, spec["type"], name)
            if why:
                raise ApiError(400, f"InvalidParameter.{name}", f"The parameter {why}.")
            out[name] = parsed
        else:
            if not _scalar_ok(value, spec.get("type")):
                raise invalid(name, f"must be a {spec.get('type')}, got {value[:60]!r}")
            out[name] = value
    return out
