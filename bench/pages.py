#!/usr/bin/env python3
"""Canned ListBindings pages for the benchmark: deterministic, byte for byte.

    python3 bench/pages.py DIR

Writes DIR/p100-01.json .. p100-10.json (100 bindings each, about 26 KB) and
DIR/p200-01.json .. p200-10.json (200 bindings each), both chained by
NextToken (the last page has NextToken ""), plus DIR/tokens.json:
{"100": [token of page 1 (""), token of page 2, ...], "200": [...]}.

The bindings have the fields of tools/sample_bindings.json (ProjectName,
DatasetName, URI, State, Phase, Reason, CreateTime, UpdateTime), compact
JSON as the service sends it. Tokens are [A-Za-z0-9] only, so every client
sends them byte for byte as they are, whatever its query encoding.
"""

import hashlib
import json
import os
import random
import sys
from datetime import datetime, timedelta, timezone

SEED = 20240607
PROJECT = "immtest"
PAGES = 10
CST = timezone(timedelta(hours=8))
START = datetime(2023, 6, 1, tzinfo=CST)
SPAN = 570 * 86400

DATASETS = [
    ("dataset001", "oss://examplebucket01"),
    ("dataset002", "oss://examplebucket02"),
    ("photos-2024", "oss://imm-photos-2024"),
    ("video-archive", "oss://imm-video-archive"),
    ("docs-ocr", "oss://imm-docs"),
]
STATES = [("Ready", 55), ("Running", 15), ("Stopped", 10), ("Retrying", 7), ("Failed", 8), ("Deleted", 5)]
REASONS = [
    "The OSS bucket does not exist or the RAM role has no permission to access it.",
    "AccessDenied: The bucket you access does not belong to you.",
    "The number of files in the dataset exceeds the quota of the dataset.",
    "The specified OSS bucket is in a different region from the project.",
]
SEGMENTS = ["raw", "upload", "camera", "scan", "export", "archive", "thumbnails"]


def stamp(rng, moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{rng.randrange(10**9):09d}+08:00"


def binding(rng, index):
    dataset, root = DATASETS[index % len(DATASETS)]
    state = rng.choices([s for s, _ in STATES], weights=[w for _, w in STATES])[0]
    phase = "FullScanning" if state in ("Running", "Retrying") or rng.random() < 0.2 else "IncrementalScanning"
    created = START + timedelta(seconds=rng.randrange(SPAN))
    updated = created + timedelta(seconds=rng.randrange(60, 90 * 86400))
    uri = f"{root}/{rng.choice([2023, 2024])}{rng.randint(1, 12):02d}/{rng.choice(SEGMENTS)}-{index:04d}/"
    return {
        "ProjectName": PROJECT,
        "DatasetName": dataset,
        "URI": uri,
        "State": state,
        "Phase": phase,
        "Reason": rng.choice(REASONS) if state == "Failed" else "",
        "CreateTime": stamp(rng, created),
        "UpdateTime": stamp(rng, updated),
    }


def token(size, page):
    if page == 1:
        return ""
    return "NXT" + hashlib.sha256(f"imm-bench:{size}:{page}".encode()).hexdigest()[:48]


def request_id(size, page):
    h = hashlib.sha256(f"imm-bench-request:{size}:{page}".encode()).hexdigest().upper()
    return f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def generate(outdir):
    os.makedirs(outdir, exist_ok=True)
    tokens, sizes = {}, {}
    for size in (100, 200):
        rng = random.Random(SEED + size)
        tokens[str(size)] = [token(size, p) for p in range(1, PAGES + 1)]
        sizes[str(size)] = []
        for p in range(1, PAGES + 1):
            page = {
                "RequestId": request_id(size, p),
                "NextToken": token(size, p + 1) if p < PAGES else "",
                "Bindings": [binding(rng, (p - 1) * size + i) for i in range(size)],
            }
            data = json.dumps(page, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            with open(os.path.join(outdir, f"p{size}-{p:02d}.json"), "wb") as f:
                f.write(data)
            sizes[str(size)].append(len(data))
    with open(os.path.join(outdir, "tokens.json"), "w", encoding="utf-8") as f:
        json.dump({"tokens": tokens, "bytes": sizes}, f, indent=1)
    return tokens, sizes


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: pages.py DIR")
    _, s = generate(sys.argv[1])
    for k, v in s.items():
        print(f"{k}-binding pages: {len(v)} pages, {min(v)}..{max(v)} bytes")
