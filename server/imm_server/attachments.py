"""OSS bucket attachments: AttachOSSBucket, DetachOSSBucket, GetOSSBucketAttachment,
ListAttachedOSSBuckets.  A bucket is attached to at most one project."""

from .replies import ApiError
from .state import name_page, not_found, required, rfc3339_nano


def attach(st, params):
    project, bucket = required(params, "ProjectName"), required(params, "OSSBucket")
    with st.lock:
        st._project(project)
        if bucket in st.attachments:
            raise ApiError(409, "ResourceAlreadyExist", f"The bucket {bucket} is already attached to a project.")
        stamp = rfc3339_nano()
        st.attachments[bucket] = {"OSSBucket": bucket, "ProjectName": project,
                                  "Description": params.get("Description", ""), "CreateTime": stamp,
                                  "UpdateTime": stamp}
        return {}


def detach(st, params):
    bucket = required(params, "OSSBucket")
    with st.lock:
        if bucket not in st.attachments:
            raise not_found("bucket attachment", bucket)
        del st.attachments[bucket]
        return {}


def get(st, params):
    bucket = required(params, "OSSBucket")
    with st.lock:
        record = st.attachments.get(bucket)
        if record is None:
            raise not_found("bucket attachment", bucket)
        return {k: v for k, v in record.items() if k != "OSSBucket"}


def list_attached(st, params):
    project = required(params, "ProjectName")
    with st.lock:
        st._project(project)
        items = sorted((dict(r) for r in st.attachments.values() if r["ProjectName"] == project),
                       key=lambda r: r["OSSBucket"])
    page, token = name_page(items, "OSSBucket", params)
    return {"AttachedOSSBuckets": page, **({"NextToken": token} if token else {})}


ACTIONS = {
    "AttachOSSBucket": attach,
    "DetachOSSBucket": detach,
    "GetOSSBucketAttachment": get,
    "ListAttachedOSSBuckets": list_attached,
}
