#!/usr/bin/env python3
"""The latency benchmark's project: 10,000 bindings in 20 datasets of 500.

    python3 bench/latency/data.py DIR [--page-size 100]

Writes the canned replies that nginx serves, deterministic byte for byte:

  DIR/datasets.json      ListDatasets: the 20 datasets, one page
  DIR/d-DSNN-PP.json     ListBindings with DatasetName=dsNN, page PP of that
                         dataset's chain (MaxResults bindings a page)
  DIR/p-PPP.json         ListBindings without DatasetName: the whole project,
                         ordered by dataset and URI, as the service pages it

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


def generate(outdir, size=100):
    """Writes the replies; returns (map entries [(key, uri)], expected URIs)."""
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
    for d, items in by_ds.items():
        entries += chain(outdir, f"d-{dataset_name(d)}-{size}", items, size, dataset_name(d), dataset_name(d))
    everything = [b for d in sorted(by_ds) for b in by_ds[d]]
    entries += chain(outdir, f"p-{size}", everything, size, "", "project")
    return entries, uris


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--page-size", type=int, default=100)
    a = ap.parse_args()
    e, u = generate(a.dir, a.page_size)
    print(f"{len(u)} bindings, {len(e)} ListBindings pages of {a.page_size} in {a.dir}")
