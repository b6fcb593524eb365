"""Clusters: figure clusters (GetFigureCluster, BatchGetFigureCluster,
QueryFigureClusters, UpdateFigureCluster), location-date clusters
(QueryLocationDateClusters, UpdateLocationDateCluster, DeleteLocationDateCluster)
and similar-image clusters (QuerySimilarImageClusters).  IMM makes them by
clustering indexed files; here they come from the control API
(POST /_imm/records), and the actions read, page and change them."""

from .state import required, rfc3339_nano

KINDS = {"FigureClusters": "figure_clusters", "LocationDateClusters": "location_date_clusters",
         "SimilarImageClusters": "similar_image_clusters", "Stories": "stories"}


def _scope(st, params):
    project, dataset = required(params, "ProjectName"), required(params, "DatasetName")
    st._dataset(project, dataset)
    return (project, dataset)


def add_records(st, payload):
    """/_imm/records: {"FigureClusters": [{ProjectName, DatasetName, ObjectId, ...}], ...}."""
    if not isinstance(payload, dict) or set(payload) - set(KINDS):
        raise ValueError(f"records: an object with any of {', '.join(KINDS)}")
    added = 0
    with st.lock:
        for kind, records in payload.items():
            if not isinstance(records, list) or not all(
                    isinstance(r, dict) and all(isinstance(r.get(k), str) and r.get(k)
                                                for k in ("ProjectName", "DatasetName", "ObjectId"))
                    for r in records):
                raise ValueError(f"{kind} must be an array of objects with ProjectName, DatasetName and ObjectId")
            for r in records:
                stamp = rfc3339_nano()
                record = {"CreateTime": stamp, "UpdateTime": stamp, "CustomLabels": {}, **r}
                if kind == "Stories":
                    record.setdefault("Files", [])
                getattr(st, KINDS[kind]).put((r["ProjectName"], r["DatasetName"]), r["ObjectId"], record)
                added += 1
    return {"ok": True, "added": added}


def get_figure_cluster(st, params):
    with st.lock:
        return {"FigureCluster": dict(st.figure_clusters.get(_scope(st, params), required(params, "ObjectId")))}


def batch_get_figure_cluster(st, params):
    with st.lock:
        scope = _scope(st, params)
        found = [st.figure_clusters.find(scope, oid) for oid in params.get("ObjectIds") or []]
        return {"FigureClusters": [dict(r) for r in found if r is not None]}


def _labels_match(record, text):
    """CustomLabels: "key=value" (every pair given must match)."""
    labels = record.get("CustomLabels") or {}
    for part in (text or "").split(","):
        key, sep, value = part.partition("=")
        if sep and str(labels.get(key.strip())) != value.strip():
            return False
    return True


def query_figure_clusters(st, params):
    with st.lock:
        scope = _scope(st, params)
        rows = [r for _, r in st.figure_clusters.scoped(scope)
                if _labels_match(r, params.get("CustomLabels"))]
        page, token = st.figure_clusters.page(scope, params, lambda r: _labels_match(r, params.get("CustomLabels")),
                                              largest=100)
    # TotalCount always: the service documents it for WithTotalCount, and 0 would mislead
    return {"FigureClusters": page, "TotalCount": len(rows), **({"NextToken": token} if token else {})}


def update_figure_cluster(st, params):
    given = params.get("FigureCluster") or {}
    with st.lock:
        record = st.figure_clusters.get(_scope(st, params), given.get("ObjectId") or "")
        for key, value in given.items():
            if key != "ObjectId":
                record[key] = value
        record["UpdateTime"] = rfc3339_nano()
        return {}


def query_location_date_clusters(st, params):
    with st.lock:
        scope = _scope(st, params)
        page, token = st.location_date_clusters.page(
            scope, params, lambda r: (not params.get("ObjectId") or r["ObjectId"] == params["ObjectId"])
            and (not params.get("Title") or params["Title"] in r.get("Title", ""))
            and _labels_match(r, params.get("CustomLabels")), largest=100)
    return {"LocationDateClusters": page, **({"NextToken": token} if token else {})}


def update_location_date_cluster(st, params):
    with st.lock:
        record = st.location_date_clusters.get(_scope(st, params), required(params, "ObjectId"))
        for name in ("CustomId", "CustomLabels", "Title"):
            if params.get(name) not in (None, ""):
                record[name] = params[name]
        record["UpdateTime"] = rfc3339_nano()
        return {}


def delete_location_date_cluster(st, params):
    with st.lock:
        st.location_date_clusters.delete(_scope(st, params), required(params, "ObjectId"))
        return {}


def query_similar_image_clusters(st, params):
    with st.lock:
        scope = _scope(st, params)
        page, token = st.similar_image_clusters.page(
            scope, params, lambda r: _labels_match(r, params.get("CustomLabels")), largest=100)
    return {"SimilarImageClusters": page, **({"NextToken": token} if token else {})}


ACTIONS = {
    "GetFigureCluster": get_figure_cluster,
    "BatchGetFigureCluster": batch_get_figure_cluster,
    "QueryFigureClusters": query_figure_clusters,
    "UpdateFigureCluster": update_figure_cluster,
    "QueryLocationDateClusters": query_location_date_clusters,
    "UpdateLocationDateCluster": update_location_date_cluster,
    "DeleteLocationDateCluster": delete_location_date_cluster,
    "QuerySimilarImageClusters": query_similar_image_clusters,
}
