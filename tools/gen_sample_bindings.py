#!/usr/bin/env python3
"""Generate tools/sample_bindings.json, the default data set of the local IMM server (server/imm_server).

Deterministic (fixed seed), so regenerating gives the same file byte for byte.

    python3 tools/gen_sample_bindings.py [OUTPUT]

The data is shaped to exercise a client:
- immtest has 205 bindings, more than one MaxResults=200 page and three default pages;
- media-prod has 95; empty-project has none;
- a few URIs hold ' ', '+' or CJK characters, so a NextToken built from them tests
  the client's query encoding;
- one binding carries an unknown extra field (Notification) and one a JSON null
  (Reason), so clients are tested on both.
The bindings are written unsorted: the server must sort them itself.
"""

import json
import os
import random
import sys
from datetime import datetime, timedelta, timezone

SEED = 20240318
CST = timezone(timedelta(hours=8))    # the service reports times in UTC+8

PROJECTS = {
    "immtest": {
        "dataset001": ("oss://examplebucket01", 60),
        "dataset002": ("oss://examplebucket02", 45),
        "photos-2024": ("oss://imm-photos-2024", 50),
        "video-archive": ("oss://imm-video-archive", 35),
        "docs-ocr": ("oss://imm-docs", 15),
    },
    "media-prod": {
        "photos-2024": ("oss://media-prod-raw/2024/", 40),
        "video-archive": ("oss://media-prod-video", 30),
        "thumbnails": ("oss://media-prod-thumbs", 25),
    },
}

# (state, weight); Phase follows from the state below.
STATES = [("Ready", 55), ("Running", 15), ("Stopped", 10), ("Retrying", 7), ("Failed", 8), ("Deleted", 5)]
FAILURE_REASONS = [
    "The OSS bucket does not exist or the RAM role has no permission to access it.",
    "AccessDenied: The bucket you access does not belong to you.",
    "The number of files in the dataset exceeds the quota of the dataset.",
    "The specified OSS bucket is in a different region from the project.",
]
# Awkward path segments, so NextToken values need careful encoding.
ODD_SEGMENTS = ["with space", "a+b", "照片", "2024-03 报告", "100%"]

START = datetime(2023, 6, 1, tzinfo=CST)
SPAN_SECONDS = int((datetime(2024, 12, 31, tzinfo=CST) - START).total_seconds())


def rfc3339_nano(rng, moment):
    """RFC 3339 with nanoseconds, like the service: 2024-03-18T07:21:35.123456789+08:00"""
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{rng.randrange(10**9):09d}+08:00"


def uris(rng, root, count):
    """The root URI and count - 1 distinct folders under it.  Unique per dataset,
    because the page order (DatasetName, URI) must be strict for NextToken to work.
    A root ending in '/' is already a year folder, so children go straight under it."""
    result = {root}
    while len(result) < count:
        month = rng.randint(1, 12)
        parent = root if root.endswith("/") else f"{root}/{rng.choice([2023, 2024])}/"
        if rng.random() < 0.06:
            segment = rng.choice(ODD_SEGMENTS)
        else:
            segment = rng.choice(["raw", "upload", "camera", "scan", "export"]) + f"-{rng.randint(1, 999):03d}"
        result.add(f"{parent}{month:02d}/{segment}/")
    return sorted(result)


def binding(rng, project, dataset, uri):
    state = rng.choices([s for s, _ in STATES], weights=[w for _, w in STATES])[0]
    phase = "FullScanning" if state in ("Running", "Retrying") or rng.random() < 0.2 else "IncrementalScanning"
    created = START + timedelta(seconds=rng.randrange(SPAN_SECONDS))
    updated = created + timedelta(seconds=rng.randrange(60, 90 * 86400))
    return {
        "ProjectName": project,
        "DatasetName": dataset,
        "URI": uri,
        "State": state,
        "Phase": phase,
        "Reason": rng.choice(FAILURE_REASONS) if state == "Failed" else "",
        "CreateTime": rfc3339_nano(rng, created),
        "UpdateTime": rfc3339_nano(rng, updated),
    }


def generate():
    rng = random.Random(SEED)
    bindings = []
    for project, datasets in PROJECTS.items():
        for dataset, (root, count) in datasets.items():
            bindings += [binding(rng, project, dataset, uri) for uri in uris(rng, root, count)]
    rng.shuffle(bindings)
    # The two deliberately unusual bindings, placed at fixed, findable spots.
    bindings[0]["Notification"] = {"MNS": {"TopicName": "imm-binding-events", "Endpoint": "mns.cn-hangzhou.aliyuncs.com"}}
    bindings[1]["Reason"] = None
    return {"Projects": ["immtest", "media-prod", "empty-project"], "Bindings": bindings}


def main(argv):
    out = argv[1] if len(argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample_bindings.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump(generate(), f, ensure_ascii=False, indent=2)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
