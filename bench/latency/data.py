#!/usr/bin/env python3
"""The latency benchmark's project: 10,000 bindings in 20 datasets of 500.

    python3 bench/latency/data.py DIR

Writes the canned replies that nginx serves, deterministic byte for byte:

  DIR/datasets.json      ListDatasets: the 20 datasets, one page
  DIR/d-dsNN-S-PPP.json  ListBindings with DatasetName=dsNN, page PPP of that
                         dataset's chain of S bindings a page
  DIR/p-S-PPP.json       ListBindings without DatasetName: the whole project,
                         ordered by dataset and URI, as the service pages it

for page sizes S of 100 and 200; a request without MaxResults gets the
100-binding pages, as the service's default is 100.

Tokens are [A-Za-z0-9] only, so every client sends them unchanged, whatever
its query encoding. generate() also returns the nginx map entries that pick a
file from "$http_x_acs_action:$arg_DatasetName:$arg_MaxResults:$arg_NextToken".
"""

import hashlib
import json
import os
import random
import sys
from datetime import timedelta

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import pages  # noqa: E402  (bench/pages.py: the binding fields and their values)

SEED = 20261129
PROJECT = "immtest"
DATASETS = 20
PER_DATASET = 500
TOTAL = DATASETS * PER_DATASET


def dataset_name(i):
    return f"ds{i:02d}"


def token(*parts):
    return "NXT" + hashlib.sha256(("imm-latency:" + ":".join(map(str, parts))).encode()).hexdigest()[:40]


def request_id(*parts):
    h = hashlib.sha256(("imm-latency-request:" + ":".join(map(str, parts))).encode()).hexdigest().upper()
    return f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def binding(rng, ds, index):
    """A binding of dataset ds with the fields and values of bench/pages.py."""
    b = pages.binding(rng, index)
    b["DatasetName"] = dataset_name(ds)
    b["URI"] = f"oss://imm-bench-{ds:02d}/{b['URI'].split('/', 3)[3]}"
    return b


def dataset(rng, ds):
    created = pages.START + timedelta(seconds=rng.randrange(pages.SPAN))
    return {
        "ProjectName": PROJECT,
        "DatasetName": dataset_name(ds),
        "Description": f"latency benchmark dataset {ds}",
        "TemplateId": "Official:AllFunction",
        "DatasetMaxBindCount": 10,
        "DatasetMaxEntityCount": 10000000000,
        "DatasetMaxFileCount": 100000000,
        "DatasetMaxRelationCount": 100000000000,
        "DatasetMaxTotalFileSize": 90000000000000000,
        "BindCount": PER_DATASET,
        "FileCount": rng.randrange(10**6),
        "TotalFileSize": rng.randrange(10**12),
        "CreateTime": pages.stamp(rng, created),
        "UpdateTime": pages.stamp(rng, created + timedelta(days=3)),
    }


def write(path, obj):
    data = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    with open(path, "wb") as f:
        f.write(data)
    return len(data)


def chain(outdir, prefix, items, size, key, tag):
    """Pages of `size` items chained by NextToken; the map entries for them."""
    entries = []
    npages = (len(items) + size - 1) // size
    for p in range(npages):
        tok = token(tag, size, p) if p else ""
        nxt = token(tag, size, p + 1) if p + 1 < npages else ""
        name = f"{prefix}-{p + 1:03d}.json"
        write(os.path.join(outdir, name),
              {"RequestId": request_id(tag, size, p), "NextToken": nxt, "Bindings": items[p * size:(p + 1) * size]})
        entries.append((f"ListBindings:{key}:{size}:{tok}", "/" + name))
    return entries


def generate(outdir, sizes=(100, 200)):
    """Writes the replies, a chain for each page size, the first of them also
    for requests without MaxResults (the service's default is 100); returns
    (map entries [(key, uri)], expected URIs)."""
    os.makedirs(outdir, exist_ok=True)
    rng = random.Random(SEED)
    datasets = [dataset(rng, d) for d in range(1, DATASETS + 1)]
    by_ds = {}
    for d in range(1, DATASETS + 1):
        items = [binding(rng, d, i) for i in range(PER_DATASET)]
        items.sort(key=lambda b: b["URI"])
        by_ds[d] = items
    uris = [b["URI"] for d in sorted(by_ds) for b in by_ds[d]]
    if len(set(uris)) != TOTAL:
        raise RuntimeError("data.py: URIs are not unique")
    write(os.path.join(outdir, "datasets.json"), {"RequestId": request_id("datasets"), "NextToken": "",
                                                 "Datasets": datasets})
    entries = []
    everything = [b for d in sorted(by_ds) for b in by_ds[d]]
    for size in sizes:
        for d, items in by_ds.items():
            entries += chain(outdir, f"d-{dataset_name(d)}-{size}", items, size, dataset_name(d), dataset_name(d))
        entries += chain(outdir, f"p-{size}", everything, size, "", "project")
    # no MaxResults: the first size's pages
    for k, v in list(entries):
        action, ds, size, tok = k.split(":", 3)
        if size == str(sizes[0]):
            entries.append((f"{action}:{ds}::{tok}", v))
    return entries, uris


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    a = ap.parse_args()
    e, u = generate(a.dir)
    print(f"{len(u)} bindings, {len(e)} ListBindings replies in {a.dir}")
