"""Projects and datasets: Create/Get/Update/Delete/List of each, and ListRegions."""

from .replies import ApiError
from .state import name_page, parse_tags, required, rfc3339_nano

# Parameters a project or a dataset keeps as given (numbers as numbers)
PROJECT_FIELDS = ("Description", "ServiceRole", "TemplateId", "ProjectMaxDatasetCount", "DatasetMaxBindCount",
                  "DatasetMaxEntityCount", "DatasetMaxFileCount", "DatasetMaxRelationCount",
                  "DatasetMaxTotalFileSize")
DATASET_FIELDS = ("Description", "TemplateId", "DatasetMaxBindCount", "DatasetMaxEntityCount",
                  "DatasetMaxFileCount", "DatasetMaxRelationCount", "DatasetMaxTotalFileSize",
                  "WorkflowParameters")


def _number(value):
    """A scalar number parameter as the number it names (validation.py checked it)."""
    number = float(value)
    return int(number) if number.is_integer() else number


def _given(params, names):
    out = {}
    for name in names:
        if name in params and params[name] != "":
            value = params[name]
            out[name] = value if name in ("Description", "ServiceRole", "TemplateId", "WorkflowParameters") \
                else _number(value)
    return out


def create_project(st, params):
    name = required(params, "ProjectName")
    tags = parse_tags(params.get("Tag"))
    with st.lock:
        if name in st.projects:
            raise ApiError(409, "ResourceAlreadyExist", f"The project {name} already exists.")
        stamp = rfc3339_nano()
        st.projects[name] = {"ProjectName": name, "Description": params.get("Description", ""),
                               "CreateTime": stamp, "UpdateTime": stamp, "Tags": tags,
                               **_given(params, PROJECT_FIELDS)}
        return {"Project": _project_view(st, name)}


def _project_view(st, name):
    view = dict(st.projects[name])
    view["DatasetCount"] = sum(1 for (p, _) in st.datasets if p == name)
    return view


def list_projects(st, params):
    wanted = parse_tags(params.get("Tag"))
    with st.lock:
        views = [_project_view(st, n) for n in sorted(st.projects)]
        views = [v for v in views if all(t in v.get("Tags", []) for t in wanted)]
        page, token = name_page(views, "ProjectName", params)
    return {"Projects": page, **({"NextToken": token} if token else {})}


def create_dataset(st, params):
    project, name = required(params, "ProjectName"), required(params, "DatasetName")
    with st.lock:
        st._project(project)
        if (project, name) in st.datasets:
            raise ApiError(409, "ResourceAlreadyExist", f"The dataset {name} already exists.")
        stamp = rfc3339_nano()
        record = {"ProjectName": project, "DatasetName": name, "Description": params.get("Description", ""),
                  "CreateTime": stamp, "UpdateTime": stamp, **_given(params, DATASET_FIELDS)}
        st.datasets[(project, name)] = record
        return {"Dataset": dict(record)}


def list_datasets(st, params):
    project = required(params, "ProjectName")
    with st.lock:
        st._project(project)
        items = sorted((dict(d) for (p, _), d in st.datasets.items() if p == project),
                       key=lambda d: d["DatasetName"])
    page, token = name_page(items, "DatasetName", params)
    return {"Datasets": page, **({"NextToken": token} if token else {})}

# -- control --


def get_project(st, params):
    with st.lock:
        st._project(required(params, "ProjectName"))
        return {"Project": _project_view(st, params["ProjectName"])}


def update_project(st, params):
    name = required(params, "ProjectName")
    tags = parse_tags(params.get("Tag")) if params.get("Tag") else None
    with st.lock:
        record = st._project(name)
        record.update(_given(params, PROJECT_FIELDS), UpdateTime=rfc3339_nano())
        if tags is not None:
            record["Tags"] = tags
        return {"Project": _project_view(st, name)}


def delete_project(st, params):
    name = required(params, "ProjectName")
    with st.lock:
        st._project(name)
        if any(p == name for (p, _) in st.datasets):
            raise ApiError(409, "ResourceNotEmpty", f"The project {name} still has datasets; delete them first.")
        del st.projects[name]
        st.by_project.pop(name, None)
        return {}


def get_dataset(st, params):
    project, name = required(params, "ProjectName"), required(params, "DatasetName")
    with st.lock:
        return {"Dataset": dict(st._dataset(project, name))}


def update_dataset(st, params):
    project, name = required(params, "ProjectName"), required(params, "DatasetName")
    with st.lock:
        record = st._dataset(project, name)
        record.update(_given(params, DATASET_FIELDS), UpdateTime=rfc3339_nano())
        return {"Dataset": dict(record)}


def delete_dataset(st, params):
    project, name = required(params, "ProjectName"), required(params, "DatasetName")
    with st.lock:
        st._dataset(project, name)
        if any(b.get("DatasetName") == name for b in st.by_project.get(project, [])):
            raise ApiError(409, "ResourceNotEmpty", f"The dataset {name} still has bindings; delete them first.")
        del st.datasets[(project, name)]
        return {}


# The regions IMM runs in, as ListRegions names them (a fixed list: the local
# server is one region, but clients read the list's shape).
REGIONS = (("cn-hangzhou", "China (Hangzhou)"), ("cn-shanghai", "China (Shanghai)"),
           ("cn-beijing", "China (Beijing)"), ("cn-shenzhen", "China (Shenzhen)"),
           ("ap-southeast-1", "Singapore"))


def list_regions(_st, params):
    return {"Regions": [{"RegionId": rid, "LocalName": name} for rid, name in REGIONS]}


ACTIONS = {
    "CreateProject": create_project,
    "GetProject": get_project,
    "UpdateProject": update_project,
    "DeleteProject": delete_project,
    "ListProjects": list_projects,
    "CreateDataset": create_dataset,
    "GetDataset": get_dataset,
    "UpdateDataset": update_dataset,
    "DeleteDataset": delete_dataset,
    "ListDatasets": list_datasets,
    "ListRegions": list_regions,
}
