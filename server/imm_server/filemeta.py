"""File metadata for the local IMM server: IndexFileMeta, BatchIndexFileMeta,
UpdateFileMeta, GetFileMeta, BatchGetFileMeta, DeleteFileMeta, SimpleQuery and
FuzzyQuery (API 2020-09-30).

Pure standard library and no I/O: the server validates a request against the
API description, parses its JSON parameters, and calls
``FileMetaStore.handle(action, params)``, which answers the response body
without RequestId or raises ``FileMetaError``.  What is supported, and where it
differs from the service, is in FILEMETA.md beside this file.

    store = FileMetaStore(dataset_exists=lambda project, dataset: ...)
    try:
        body = store.handle("SimpleQuery", {"ProjectName": "p", "DatasetName": "d",
                                            "Query": {...}, "MaxResults": "10"})
    except FileMetaError as e:
        ...   # e.status, e.code, e.message: the service's error shape
    store.reset()   # the control API's reset

Where to look:
    FileMetaError                  the error value (code, message, status)
    make_file / UPDATABLE_FIELDS   a stored file: the request's fields and the derived ones
    compile_query                  the SimpleQuery evaluator (a query tree -> a predicate)
    SortSpec, page                 Sort/Order, and keyset paging with NextToken
    aggregate                      the aggregations
    FileMetaStore                  the actions
"""

import base64
import binascii
import copy
import datetime
import functools
import hashlib
import json
import math
import re
import threading
import time

__all__ = ["FileMetaError", "FileMetaStore", "ACTIONS"]

ACTIONS = ("IndexFileMeta", "BatchIndexFileMeta", "UpdateFileMeta", "GetFileMeta",
           "BatchGetFileMeta", "DeleteFileMeta", "SimpleQuery", "FuzzyQuery")

# The service's documented limits.
MAX_BATCH = 100              # files per BatchIndexFileMeta, URIs per BatchGetFileMeta
MAX_VALUE_DEPTH = 20         # ours: nesting of a file's values, so nothing below recurses without bound
MAX_SUBQUERIES = 100         # SubQueries of one node
MAX_QUERY_DEPTH = 5          # levels of SubQueries below the top node
MAX_SORT_FIELDS = 5
MAX_FILES_PAGE = 100         # SimpleQuery without Aggregations
MAX_GROUPS = 2000            # SimpleQuery with Aggregations (groups returned)
MAX_FUZZY_PAGE = 200
DEFAULT_PAGE = 100


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------

class FileMetaError(Exception):
    """A service error for the server to send in the service's shape."""

    def __init__(self, code, message, status=400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status

    def __repr__(self):
        return f"FileMetaError({self.code!r}, {self.message!r}, {self.status})"


def _missing(name):
    return FileMetaError("MissingParameter",
                         f'The input parameter "{name}" that is mandatory for processing this request is not supplied.')


def _invalid(name, detail):
    return FileMetaError(f"InvalidParameter.{name}", f"The parameter {name} is not valid: {detail}")


def _not_found(what):
    return FileMetaError("ResourceNotFound", f"The specified {what} does not exist.", 404)


# ---------------------------------------------------------------------------
# Scalar parameters (they arrive as the strings they were sent as)
# ---------------------------------------------------------------------------

def _required_string(params, name):
    value = params.get(name)
    if value is None or value == "":
        raise _missing(name)
    if not isinstance(value, str):
        raise _invalid(name, "it must be a string")
    return value


def _max_results(params, largest):
    value = params.get("MaxResults")
    if value is None or value == "":
        return DEFAULT_PAGE
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not re.fullmatch(r"[0-9]{1,6}", text) or int(text) > largest:
        raise _invalid("MaxResults", f"an integer from 0 to {largest} is expected, got {value!r}")
    return int(text) or DEFAULT_PAGE


def _boolean(params, name):
    value = params.get(name)
    if value is None or value == "":
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise _invalid(name, f"true or false is expected, got {value!r}")


def _with_fields(params):
    value = params.get("WithFields")
    if value is None or value == [] or value == {}:   # {}: an empty Lua table sent by cjson
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _invalid("WithFields", "an array of field names is expected")
    return value


def _project_fields(record, fields):
    # A deep copy: the server may change a reply (its faults do) and must not change the store.
    if fields is None:
        return copy.deepcopy(record)
    return {name: copy.deepcopy(record[name]) for name in fields if name in record}


URI_RE = re.compile(r"(oss|pds)://[^/\s]+/\S.*", re.S)


def _check_uri(name, uri):
    if not isinstance(uri, str) or not URI_RE.fullmatch(uri):
        raise _invalid(name, f"a URI such as oss://bucket/object is expected, got {uri!r}")
    return uri


# ---------------------------------------------------------------------------
# Files: what the request gives, plus deterministic derived values
# ---------------------------------------------------------------------------

# Kept small on purpose: mimetypes would read the system's tables (I/O, and
# answers that differ between machines).
CONTENT_TYPES = {
    "jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif",
    "webp": "image/webp", "bmp": "image/bmp", "heic": "image/heic", "tif": "image/tiff",
    "tiff": "image/tiff", "mp4": "video/mp4", "mov": "video/quicktime", "avi": "video/x-msvideo",
    "mkv": "video/x-matroska", "mp3": "audio/mpeg", "wav": "audio/wav", "flac": "audio/flac",
    "aac": "audio/aac", "pdf": "application/pdf", "txt": "text/plain",
    "doc": "application/msword", "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xls": "application/vnd.ms-excel", "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "ppt": "application/vnd.ms-powerpoint",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "zip": "application/zip", "gz": "application/gzip", "rar": "application/vnd.rar",
    "7z": "application/x-7z-compressed", "tar": "application/x-tar",
}
ARCHIVE_TYPES = {"application/zip", "application/gzip", "application/vnd.rar",
                 "application/x-7z-compressed", "application/x-tar"}

# UpdateFileMeta changes only these, as the service documents.
UPDATABLE_FIELDS = ("CustomLabels", "CustomId", "Figures")

# Set by the store; a request cannot override them.
SYSTEM_FIELDS = ("ProjectName", "DatasetName", "ObjectType", "ObjectId", "CreateTime", "UpdateTime")


def _digest(*parts):
    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()


def _content_type(uri):
    name = uri.rsplit("/", 1)[-1]
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return CONTENT_TYPES.get(ext, "application/octet-stream")


def _media_type(content_type):
    major = content_type.split("/", 1)[0]
    if major in ("image", "video", "audio"):
        return major
    if content_type in ARCHIVE_TYPES:
        return "archive"
    if content_type == "application/octet-stream":
        return "other"
    return "document"


def rfc3339nano(seconds):
    """The service's time format: 2021-06-29T14:50:13.011643661+08:00."""
    tz = datetime.timezone(datetime.timedelta(hours=8))
    whole = math.floor(seconds)
    nanos = int(round((seconds - whole) * 1e9))
    if nanos >= 1000000000:
        whole, nanos = whole + 1, nanos - 1000000000
    stamp = datetime.datetime.fromtimestamp(whole, tz)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}+08:00"


ARRAY_FIELDS = ("Labels", "Figures", "Addresses")


def _depth(value):
    """How deep arrays and objects nest in value, counted without recursion
    (the value may nest as deep as the server's JSON parser allowed)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            level += 1
            deepest = max(deepest, level)
            if level <= MAX_VALUE_DEPTH:
                stack.extend((v, level) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def _check_input_file(file, name):
    """The request's file, checked; an array field sent as {} becomes [] (an
    empty Lua table, as lua-cjson encodes it)."""
    if not isinstance(file, dict):
        raise _invalid(name, "an object (the InputFile model) is expected")
    if file.get("URI") is None or file.get("URI") == "":
        raise _missing(f"{name}.URI")
    _check_uri(name, file["URI"])
    if _depth(file) > MAX_VALUE_DEPTH:
        raise _invalid(name, f"values nest more than {MAX_VALUE_DEPTH} levels deep")
    file = dict(file)
    if "CustomLabels" in file and not isinstance(file["CustomLabels"], dict):
        raise _invalid(name, "CustomLabels must be an object")
    for key in ARRAY_FIELDS:
        if file.get(key) == {}:
            file[key] = []
        if key in file and not (isinstance(file[key], list) and all(isinstance(e, dict) for e in file[key])):
            raise _invalid(name, f"{key} must be an array of objects")
    if "Size" in file and (isinstance(file["Size"], bool) or not isinstance(file["Size"], (int, float))
                           or file["Size"] < 0):
        raise _invalid(name, "Size must be a non-negative number")
    return file


def make_file(project, dataset, given, now, previous=None):
    """The stored record of a file indexed with the fields `given`."""
    uri = given["URI"]
    seed = _digest(project, dataset, uri)
    content_type = given.get("ContentType") or _content_type(uri)
    created = previous["CreateTime"] if previous else now
    record = {
        "URI": uri,
        "Filename": uri.rsplit("/", 1)[-1],
        "ContentType": content_type,
        "MediaType": _media_type(content_type),
        "Size": int(seed[:6], 16) % 10000000,
        "ETag": '"' + seed[:32].upper() + '"',
        "FileHash": '"' + seed[32:64].upper() + '"',
        "FileModifiedTime": created,
        "ObjectACL": "default",
    }
    if uri.startswith("oss://"):
        record["OSSURI"] = uri
        record["OSSObjectType"] = "Normal"
        record["OSSStorageClass"] = "Standard"
    record.update({k: copy.deepcopy(v) for k, v in given.items() if k not in SYSTEM_FIELDS})
    record.update({"ProjectName": project, "DatasetName": dataset, "ObjectType": "file",
                   "ObjectId": _digest("object", project, dataset, uri),
                   "CreateTime": created, "UpdateTime": now})
    return record


# ---------------------------------------------------------------------------
# Field values
# ---------------------------------------------------------------------------

def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def field_values(obj, path):
    """The values at a dotted path, arrays flattened: Labels.LabelName gives every
    label's name; CustomLabels.k the label k (a key that holds dots too)."""
    out = []
    _collect(obj, path.split("."), out)
    return out


def _collect(obj, parts, out):
    if isinstance(obj, list):
        for element in obj:
            _collect(element, parts, out)
    elif not parts:
        if obj is not None:
            out.append(obj)
    elif isinstance(obj, dict):
        if parts[0] in obj:
            _collect(obj[parts[0]], parts[1:], out)
        elif len(parts) > 1 and ".".join(parts) in obj:
            _collect(obj[".".join(parts)], [], out)


def _to_number(text):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


# ---------------------------------------------------------------------------
# The SimpleQuery evaluator: a query tree compiled into a predicate
# ---------------------------------------------------------------------------

COMPARISONS = ("eq", "gt", "gte", "lt", "lte")
LEAF_OPERATIONS = COMPARISONS + ("prefix", "match-phrase", "exist")
LOGICAL_OPERATIONS = ("and", "or", "not")
OPERATIONS = LEAF_OPERATIONS + LOGICAL_OPERATIONS + ("nested",)

_CMP = {"eq": lambda c: c == 0, "gt": lambda c: c > 0, "gte": lambda c: c >= 0,
        "lt": lambda c: c < 0, "lte": lambda c: c <= 0}


def _compare_value(stored, text):
    """stored <=> the query's Value (a string): -1, 0, 1, or None when they do not
    compare (a number against text that is not a number, a bool, an object)."""
    if _is_number(stored):
        number = _to_number(text)
        if number is None:
            return None
        return (stored > number) - (stored < number)
    if isinstance(stored, bool):
        return 0 if text.lower() == ("true" if stored else "false") else None
    if isinstance(stored, str):
        return (stored > text) - (stored < text)
    return None


_WORD_RE = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[^\W_]+")


def _words(text):
    # CJK characters are words of their own, as the service's analyzer splits them.
    return _WORD_RE.findall(text.lower())


def _match_phrase(stored, text):
    if not isinstance(stored, str):
        return False
    want, have = _words(text), _words(stored)
    if not want:
        return False
    return any(have[i:i + len(want)] == want for i in range(len(have) - len(want) + 1))


def _leaf_predicate(field, operation, value):
    if operation == "exist":
        return lambda obj: any(v != {} and v != "" for v in field_values(obj, field))
    if operation == "prefix":
        return lambda obj: any(isinstance(v, str) and v.startswith(value) for v in field_values(obj, field))
    if operation == "match-phrase":
        return lambda obj: any(_match_phrase(v, value) for v in field_values(obj, field))
    test = _CMP[operation]

    def compare(obj):
        for v in field_values(obj, field):
            c = _compare_value(v, value)
            if c is not None and test(c):
                return True
        return False
    return compare


def _leaf_fields(node, depth=0):
    # Runs before the tree is checked: anything malformed, or too deep, is
    # skipped here and refused by compile_query.
    if not isinstance(node, dict) or depth > MAX_QUERY_DEPTH:
        return
    if node.get("Operation") in LEAF_OPERATIONS:
        yield node.get("Field")
    subs = node.get("SubQueries")
    for sub in subs if isinstance(subs, list) else ():
        yield from _leaf_fields(sub, depth + 1)


def compile_query(node, depth=0, prefix=""):
    """A predicate for the SimpleQuery tree `node` (None: every file), or
    FileMetaError(InvalidParameter.Query).  `prefix` is the array field of an
    enclosing nested node: leaves below it name fields inside one element."""
    if node is None or node == {}:
        return lambda obj: True
    if not isinstance(node, dict):
        raise _invalid("Query", "an object (the SimpleQuery model) is expected")
    operation = node.get("Operation")
    if not isinstance(operation, str) or not operation:
        raise _invalid("Query", "every node needs an Operation")
    if operation not in OPERATIONS:
        raise _invalid("Query", f"unknown Operation {operation!r}; supported: {', '.join(OPERATIONS)}")
    subs = node.get("SubQueries")
    if subs is None or subs == {}:
        subs = []
    if not isinstance(subs, list):
        raise _invalid("Query", "SubQueries must be an array")

    if operation in LEAF_OPERATIONS:
        if subs:
            raise _invalid("Query", f"SubQueries are only for and, or, not and nested, not {operation}")
        field = node.get("Field")
        if not isinstance(field, str) or not field:
            raise _invalid("Query", f"the {operation} operation needs a Field")
        value = node.get("Value")
        if operation != "exist" and not isinstance(value, str):
            raise _invalid("Query", f"the {operation} operation on {field} needs a Value, as a string")
        if prefix:
            if not field.startswith(prefix + "."):
                raise _invalid("Query", f"under nested {prefix}, a Field must start with {prefix}.")
            field = field[len(prefix) + 1:]
        return _leaf_predicate(field, operation, value)

    if not subs:
        raise _invalid("Query", f"the {operation} operation needs SubQueries")
    if len(subs) > MAX_SUBQUERIES:
        raise _invalid("Query", f"at most {MAX_SUBQUERIES} SubQueries in one node")
    if depth >= MAX_QUERY_DEPTH:
        raise _invalid("Query", f"SubQueries nest at most {MAX_QUERY_DEPTH} levels deep")

    if operation == "nested":
        if prefix:
            raise _invalid("Query", "a nested operation cannot be inside another")
        if any(not isinstance(s, dict) or s.get("Operation") not in LOGICAL_OPERATIONS for s in subs):
            raise _invalid("Query", "the SubQueries of nested must be and, or or not")
        array = node.get("Field")
        if not array:
            # The service's own examples leave Field out: the array is the one
            # every leaf names (Figures.Age, Figures.Gender -> Figures).
            heads = {f.split(".", 1)[0] for f in _leaf_fields(node) if isinstance(f, str) and "." in f}
            if len(heads) != 1:
                raise _invalid("Query", "the leaves under nested must all name fields of one array")
            array = heads.pop()
        if not isinstance(array, str):
            raise _invalid("Query", "Field must be a string")
        inner = [compile_query(s, depth + 1, array) for s in subs]
        # One element must satisfy every subquery: that is what nested is for.
        return lambda obj: any(isinstance(e, dict) and all(p(e) for p in inner)
                               for e in field_values(obj, array))

    inner = [compile_query(s, depth + 1, prefix) for s in subs]
    if operation == "and":
        return lambda obj: all(p(obj) for p in inner)
    if operation == "or":
        return lambda obj: any(p(obj) for p in inner)
    return lambda obj: not any(p(obj) for p in inner)   # not: none of them


# ---------------------------------------------------------------------------
# Sorting and paging
# ---------------------------------------------------------------------------

def _type_rank(v):
    return 0 if isinstance(v, bool) else 1 if _is_number(v) else 2


def _sortable(values):
    return [v for v in values if isinstance(v, (bool, int, float, str))]


def _cmp_values(a, b):
    ka, kb = (_type_rank(a), a), (_type_rank(b), b)
    return (ka > kb) - (ka < kb)


class SortSpec:
    """Sort and Order: fields compared in turn, missing values last whatever the
    order, the URI (ascending) last of all, so the order is total and stable."""

    def __init__(self, params):
        sort, order = params.get("Sort"), params.get("Order")
        fields = [] if sort in (None, "") else (sort.split(",") if isinstance(sort, str) else None)
        if fields is None or any(not f.strip() for f in fields):
            raise _invalid("Sort", f"comma-separated field names are expected, got {sort!r}")
        if len(fields) > MAX_SORT_FIELDS:
            raise _invalid("Sort", f"at most {MAX_SORT_FIELDS} fields")
        self.fields = [f.strip() for f in fields]
        if order in (None, ""):
            # The documented default is desc; an Order shorter than Sort leaves
            # the rest asc (both as the service's documentation says).
            self.orders = ["desc"] * len(self.fields)
        else:
            orders = [o.strip().lower() for o in order.split(",")] if isinstance(order, str) else None
            if orders is None or any(o not in ("asc", "desc") for o in orders):
                raise _invalid("Order", f"asc or desc (comma-separated) is expected, got {order!r}")
            if len(orders) > len(self.fields):
                raise _invalid("Order", "more orders than Sort fields")
            self.orders = orders + ["asc"] * (len(self.fields) - len(orders))

    def signature(self):
        return [self.fields, self.orders]

    def key(self, record):
        """The JSON-able sort key of a record: one value (or None) per field, then the URI.
        An array field sorts by its smallest value ascending, its largest descending."""
        out = []
        for field, order in zip(self.fields, self.orders):
            values = _sortable(field_values(record, field))
            if not values:
                out.append(None)
            else:
                pick = functools.cmp_to_key(_cmp_values)
                out.append(min(values, key=pick) if order == "asc" else max(values, key=pick))
        out.append(record["URI"])
        return out

    def compare(self, ka, kb):
        for a, b, order in zip(ka, kb, self.orders):
            if a is None or b is None:
                c = (a is None) - (b is None)       # missing last, in both orders
            else:
                c = _cmp_values(a, b)
                if order == "desc":
                    c = -c
            if c:
                return c
        return (ka[-1] > kb[-1]) - (ka[-1] < kb[-1])


def _encode_token(spec, key):
    raw = json.dumps([spec.signature(), key], separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(raw.encode("utf-8")).decode("ascii").rstrip("=")


def _decode_token(spec, token):
    if not isinstance(token, str):
        raise _invalid("NextToken", "a string is expected")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        signature, key = json.loads(raw.decode("utf-8"))
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise _invalid("NextToken", f"{token[:60]!r} is not a token this server gave") from None
    if (signature != spec.signature() or not isinstance(key, list) or len(key) != len(spec.fields) + 1
            or not isinstance(key[-1], str)
            or not all(v is None or isinstance(v, (bool, int, float, str)) for v in key)):
        raise _invalid("NextToken", "the token does not belong to this Sort and Order")
    return key


def page(records, spec, token, limit):
    """One page of `records` in `spec`'s order: those after `token`'s position,
    and the NextToken for the rest (None on the last page).  The token holds
    the last record's sort key (keyset paging), so files indexed or deleted
    between pages never make another file repeat or go missing."""
    keyed = sorted(((spec.key(r), r) for r in records),
                   key=functools.cmp_to_key(lambda x, y: spec.compare(x[0], y[0])))
    if token:
        after = _decode_token(spec, token)
        keyed = [kr for kr in keyed if spec.compare(kr[0], after) > 0]
    chosen = keyed[:limit]
    next_token = _encode_token(spec, chosen[-1][0]) if len(keyed) > limit else None
    return [r for _, r in chosen], next_token


# ---------------------------------------------------------------------------
# Aggregations
# ---------------------------------------------------------------------------

AGGREGATIONS = ("count", "sum", "average", "max", "min", "distinct", "group")


def _group_text(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer() and abs(v) < 2 ** 53:
        return str(int(v))
    return str(v)


def _check_aggregations(value):
    if not isinstance(value, list) or not value:
        raise _invalid("Aggregations", "a non-empty array of {Field, Operation} is expected")
    for item in value:
        if not isinstance(item, dict):
            raise _invalid("Aggregations", "each aggregation is an object {Field, Operation}")
        field, operation = item.get("Field"), item.get("Operation")
        if not isinstance(field, str) or not field:
            raise _invalid("Aggregations", "each aggregation needs a Field")
        if operation not in AGGREGATIONS:
            raise _invalid("Aggregations", f"unknown Operation {operation!r}; supported: {', '.join(AGGREGATIONS)}")
    return value


def aggregate(records, field, operation, max_groups):
    """One entry of the response's Aggregations over all the matching records.
    count: the field's values (each element of an array counts); distinct: how
    many different values; sum/average/max/min: over its numeric values;
    group: Groups of {Value, Count}, largest Count first."""
    values = [v for r in records for v in field_values(r, field)
              if isinstance(v, (bool, int, float, str))]
    result = {"Field": field, "Operation": operation}
    if operation == "count":
        result["Value"] = len(values)
    elif operation == "distinct":
        result["Value"] = len({(_type_rank(v), v) for v in values})
    elif operation == "group":
        counts = {}
        for v in values:
            text = _group_text(v)
            counts[text] = counts.get(text, 0) + 1
        ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:max_groups]
        result["Groups"] = [{"Value": text, "Count": n} for text, n in ordered]
    else:
        numbers = [v for v in values if _is_number(v)]
        if operation == "sum":
            result["Value"] = sum(numbers)
        elif numbers:
            result["Value"] = (sum(numbers) / len(numbers) if operation == "average"
                               else max(numbers) if operation == "max" else min(numbers))
        # average/max/min of no numbers: no Value, as the service leaves it out
    return result


# ---------------------------------------------------------------------------
# FuzzyQuery's text
# ---------------------------------------------------------------------------

# Identifiers, hashes and times are not text a person searches for.
NOT_TEXT = {"ProjectName", "DatasetName", "ObjectType", "ObjectId", "OwnerId", "ETag", "FileHash",
            "CreateTime", "UpdateTime", "FileModifiedTime", "FileCreateTime", "FileAccessTime",
            "ProduceTime", "ObjectACL", "OSSObjectType", "OSSStorageClass", "OSSCRC64", "ContentMd5"}


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, list):
        for element in obj:
            yield from _strings(element)
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _strings(value)


def _texts(record):
    """The strings FuzzyQuery searches: every string of the record but those of
    NOT_TEXT, and the custom labels' keys as well as their values."""
    for key, value in record.items():
        if key in NOT_TEXT:
            continue
        if key == "CustomLabels" and isinstance(value, dict):
            yield from value.keys()
        yield from _strings(value)


def fuzzy_match(record, text):
    needle = text.lower()
    return any(needle in t.lower() for t in _texts(record) if t)


# ---------------------------------------------------------------------------
# The store and its actions
# ---------------------------------------------------------------------------

class FileMetaStore:
    """Indexed file metadata, keyed by (project, dataset, URI).

    dataset_exists(project, dataset) -> bool is the server's (called without the
    store's lock held): a request on a dataset it does not know fails with 404
    ResourceNotFound.  clock() gives the
    seconds since the epoch for CreateTime and UpdateTime.

    IndexFileMeta is asynchronous in IMM (it answers an EventId and indexes
    later); here a file is visible to every read and query as soon as the
    call returns.
    """

    def __init__(self, dataset_exists=None, clock=None):
        self._dataset_exists = dataset_exists or (lambda project, dataset: True)
        self._clock = clock or time.time
        self._files = {}          # (project, dataset, URI) -> record
        self._events = 0
        # The server answers requests on several threads; one action at a time.
        self._lock = threading.RLock()

    # -- plumbing -----------------------------------------------------------

    def handle(self, action, params):
        """The response body of `action` (without RequestId), or FileMetaError."""
        method = getattr(self, "_" + action, None) if action in ACTIONS else None
        if method is None:
            raise FileMetaError("InvalidAction.NotFound", f"The file metadata store has no action {action!r}.", 404)
        if not isinstance(params, dict):
            raise FileMetaError("InvalidParameter", "The parameters must be an object.")
        # dataset_exists is the server's and may take the server's own lock: it
        # is called without ours held, so the two locks are never taken in
        # opposite orders.
        project, dataset = self._dataset(params)
        with self._lock:
            return method(project, dataset, params)

    def reset(self):
        """Forget every file (the control API's reset)."""
        with self._lock:
            self._files.clear()
            self._events = 0

    def _dataset(self, params):
        project = _required_string(params, "ProjectName")
        dataset = _required_string(params, "DatasetName")
        if not self._dataset_exists(project, dataset):
            raise _not_found(f"dataset {dataset} of project {project}")
        return project, dataset

    def _records(self, project, dataset):
        return [r for (p, d, _), r in self._files.items() if p == project and d == dataset]

    def _event_id(self, project, dataset):
        self._events += 1
        digest = _digest("event", project, dataset, str(self._events))
        return f"{self._events:03X}-{digest[:27]}"

    def _index(self, project, dataset, given, now):
        key = (project, dataset, given["URI"])
        self._files[key] = make_file(project, dataset, given, now, self._files.get(key))

    # -- write --------------------------------------------------------------

    def _IndexFileMeta(self, project, dataset, params):
        file = params.get("File")
        if file is None:
            raise _missing("File")
        file = _check_input_file(file, "File")
        self._index(project, dataset, file, rfc3339nano(self._clock()))
        return {"EventId": self._event_id(project, dataset)}

    def _BatchIndexFileMeta(self, project, dataset, params):
        files = params.get("Files")
        if files is None or files == {}:
            raise _missing("Files")
        if not isinstance(files, list) or not files or len(files) > MAX_BATCH:
            raise _invalid("Files", f"an array of 1 to {MAX_BATCH} files is expected")
        files = [_check_input_file(file, f"Files.{i + 1}") for i, file in enumerate(files)]
        now = rfc3339nano(self._clock())
        for file in files:      # all checked first: a bad file indexes none of them
            self._index(project, dataset, file, now)
        return {"EventId": self._event_id(project, dataset)}

    def _UpdateFileMeta(self, project, dataset, params):
        file = params.get("File")
        if file is None:
            raise _missing("File")
        file = _check_input_file(file, "File")
        record = self._files.get((project, dataset, file["URI"]))
        if record is None:
            raise _not_found(f"file {file['URI']} in dataset {dataset}")
        for name in UPDATABLE_FIELDS:
            if name in file:
                record[name] = copy.deepcopy(file[name])
        record["UpdateTime"] = rfc3339nano(self._clock())
        return {}

    def _DeleteFileMeta(self, project, dataset, params):
        uri = _check_uri("URI", _required_string(params, "URI"))
        # The service answers success whether or not the file was indexed.
        self._files.pop((project, dataset, uri), None)
        return {}

    # -- read ---------------------------------------------------------------

    def _GetFileMeta(self, project, dataset, params):
        uri = _check_uri("URI", _required_string(params, "URI"))
        fields = _with_fields(params)
        record = self._files.get((project, dataset, uri))
        if record is None:
            raise _not_found(f"file {uri} in dataset {dataset}")
        return {"Files": [_project_fields(record, fields)]}

    def _BatchGetFileMeta(self, project, dataset, params):
        uris = params.get("URIs")
        if uris is None or uris == {}:
            raise _missing("URIs")
        if not isinstance(uris, list) or not uris or len(uris) > MAX_BATCH:
            raise _invalid("URIs", f"an array of 1 to {MAX_BATCH} URIs is expected")
        for uri in uris:
            _check_uri("URIs", uri)
        fields = _with_fields(params)
        # Files not indexed are left out; the others come in the order asked.
        found = [self._files.get((project, dataset, uri)) for uri in uris]
        return {"Files": [_project_fields(r, fields) for r in found if r is not None]}

    def _SimpleQuery(self, project, dataset, params):
        predicate = compile_query(params.get("Query"))
        aggregations = params.get("Aggregations")
        if aggregations in ([], {}):
            aggregations = None
        if aggregations is not None:
            _check_aggregations(aggregations)
        limit = _max_results(params, MAX_GROUPS if aggregations else MAX_FILES_PAGE)
        without_total = _boolean(params, "WithoutTotalHits")
        fields = _with_fields(params)
        spec = SortSpec(params)
        matching = [r for r in self._records(project, dataset) if predicate(r)]
        result = {}
        if aggregations:
            # With Aggregations the service answers statistics only, not files.
            result["Files"] = []
            result["Aggregations"] = [aggregate(matching, a["Field"], a["Operation"], limit)
                                      for a in aggregations]
        else:
            files, token = page(matching, spec, params.get("NextToken") or None, limit)
            result["Files"] = [_project_fields(r, fields) for r in files]
            if token:
                result["NextToken"] = token
        if not without_total:
            result["TotalHits"] = len(matching)
        return result

    def _FuzzyQuery(self, project, dataset, params):
        text = _required_string(params, "Query")
        limit = _max_results(params, MAX_FUZZY_PAGE)
        fields = _with_fields(params)
        spec = SortSpec(params)
        matching = [r for r in self._records(project, dataset) if fuzzy_match(r, text)]
        files, token = page(matching, spec, params.get("NextToken") or None, limit)
        result = {"Files": [_project_fields(r, fields) for r in files], "TotalHits": len(matching)}
        if token:
            result["NextToken"] = token
        return result
