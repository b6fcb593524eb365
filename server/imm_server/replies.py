"""Errors and replies in the service's shape, and JSON in and out.

Every module raises ApiError for a service error; the handler (http.py) turns
it into the JSON document the real service sends."""

import math
import json
import uuid
from dataclasses import dataclass, field
from typing import Optional

API_VERSION = "2020-09-30"
JSON_TYPE = "application/json;charset=utf-8"
REDACTED = "***"



class ApiError(Exception):
    """A service error: becomes a JSON body shaped like the real service's."""

    def __init__(self, status, code, message, headers=()):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, list(headers)


def missing_parameter(name):
    return ApiError(400, "MissingParameter",
                    f'The input parameter "{name}" that is mandatory for processing this request is not supplied.')


def incomplete_signature(detail):
    return ApiError(400, "IncompleteSignature",
                    f"The request signature does not conform to Aliyun standards. {detail}")


@dataclass
class Reply:
    status: int
    body: bytes
    request_id: Optional[str]          # None: the reply pretends to come from a proxy
    content_type: str = JSON_TYPE
    headers: list = field(default_factory=list)
    content_encoding: Optional[str] = None   # set when body is already encoded (gzip_bomb)


def new_request_id():
    return str(uuid.uuid4()).upper()


def json_bytes(obj):
    # allow_nan=False: NaN and Infinity are not JSON, so none may leave the server
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _not_json(text):
    raise ValueError(f"{text} is not JSON")


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


def parse_json(data):
    """JSON from a request: ValueError for anything that is not JSON, NaN,
    Infinity and numbers out of range included, and for nesting too deep for
    the parser (RecursionError)."""
    try:
        return json.loads(data, parse_constant=_not_json, parse_float=_finite_float)
    except RecursionError:
        raise ValueError("JSON nested too deeply")


def error_body(code, message, request_id, host):
    """A service error document: {RequestId, HostId, Code, Message, Recommend}."""
    return {
        "RequestId": request_id,
        "HostId": host,
        "Code": code,
        "Message": message,
        "Recommend": f"https://api.aliyun.com/troubleshoot?q={code}&product=imm&requestId={request_id}",
    }


def error_reply(err, request_id, host):
    return Reply(err.status, json_bytes(error_body(err.code, err.message, request_id, host)), request_id,
                 headers=err.headers)


# Codes of the errors the server answers before a request reaches the API or
# the control routes (framing, sizes, methods), by HTTP status.
HTTP_ERROR_CODES = {400: "BadRequest", 404: "NotFound", 405: "MethodNotAllowed", 413: "RequestEntityTooLarge",
                    414: "RequestURITooLong", 431: "RequestHeaderFieldsTooLarge", 500: "InternalError"}


