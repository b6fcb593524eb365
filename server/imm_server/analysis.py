"""The actions without state (Detect*, Compare*, Extract*, Generate*Token, ...):
a response of the documented shape, the description's response fields, with
values derived from a hash of the request, so the same request always gets the
same reply.  The description lists response field names but not their types;
KINDS below gives the JSON kind of the fields whose name does not tell it."""

import hashlib
import json

# field -> "string" | "number" | "array" | "object" | "boolean" (IMM's reference
# pages); any other field: array when its name is a plural, else string
KINDS = {
    "Similarity": "number", "Bitrate": "number", "Duration": "number", "ProgramCount": "number",
    "Size": "number", "StartTime": "number", "StreamCount": "number", "VideoHeight": "number",
    "VideoWidth": "number", "States": "number", "TotalHits": "number", "TotalCount": "number",
    "ImageScore": "object", "Answer": "object", "DeviceInfo": "object",
    "OCRTexts": "string", "Suggestion": "string", "DocumentText": "string", "Code": "string",
    "Message": "string", "AccessTokenExpiredTime": "string", "RefreshTokenExpiredTime": "string",
    "Addresses": "array", "MatchedInclusionHints": "array", "AudioPlaylist": "array",
    "VideoPlaylist": "array", "SubtitlePlaylist": "array",
}
NOT_PLURAL = ("Address", "Status", "Progress", "Ids")


def kind_of(field):
    if field in KINDS:
        return KINDS[field]
    if field.endswith("s") and not field.endswith(NOT_PLURAL):
        return "array"
    return "string"


def seed_of(action, params):
    text = json.dumps({"Action": action, "Params": params}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def value_for(field, kind, seed):
    digest = hashlib.sha256(f"{seed}/{field}".encode("utf-8")).hexdigest()
    if kind == "number":
        return round(int(digest[:8], 16) % 10000 / 100.0, 2) if field == "Similarity" else int(digest[:6], 16) % 100000
    if kind == "array":
        return []
    if kind == "object":
        return {}
    if kind == "boolean":
        return int(digest[0], 16) % 2 == 0
    if field.endswith("URI"):
        return f"oss://imm-local/{digest[:16]}"
    if field.endswith("Time"):
        return "2024-01-02T03:04:05.000000000+08:00"
    return f"{field}-{digest[:16]}"


def shaped(desc, action, params):
    """Every response field but RequestId, of its kind, from the request."""
    seed = seed_of(action, params)
    return {f: value_for(f, kind_of(f), seed) for f in desc.response_fields(action) if f != "RequestId"}
