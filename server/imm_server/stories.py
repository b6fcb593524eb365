"""Stories: CreateStory (a task in IMM: the story exists at once here, and a
task of type CreateStory is started), CreateCustomizedStory, GetStory,
QueryStories, UpdateStory, DeleteStory, AddStoryFiles, RemoveStoryFiles."""

import hashlib

from .replies import ApiError
from .state import required, rfc3339_nano


def _object_id(project, dataset, seed):
    return "Story-" + hashlib.sha256(f"{project}/{dataset}/{seed}".encode("utf-8")).hexdigest()[:24]


def _scope(st, params):
    project, dataset = required(params, "ProjectName"), required(params, "DatasetName")
    st._dataset(project, dataset)
    return (project, dataset)


def _new(st, params, files, task=None):
    with st.lock:
        scope = _scope(st, params)
        stamp = rfc3339_nano()
        oid = params.get("ObjectId") or _object_id(*scope, f"{len(st.stories.items)}/{stamp}")
        if st.stories.find(scope, oid) is not None:
            raise ApiError(409, "ResourceAlreadyExist", f"The story {oid} already exists.")
        record = {"ProjectName": scope[0], "DatasetName": scope[1], "ObjectId": oid, "ObjectType": "story",
                  "StoryName": params.get("StoryName", ""), "StoryType": params.get("StoryType", ""),
                  "StorySubType": params.get("StorySubType", ""), "CustomId": params.get("CustomId", ""),
                  "CustomLabels": params.get("CustomLabels") or {}, "Cover": params.get("Cover") or {},
                  "Files": [{"URI": f.get("URI", "")} for f in files if isinstance(f, dict)],
                  "StoryStartTime": params.get("StoryStartTime", ""), "StoryEndTime": params.get("StoryEndTime", ""),
                  "CreateTime": stamp, "UpdateTime": stamp}
        st.stories.put(scope, oid, record)
        return oid


def create_story(st, params, raw_params=None):
    _new(st, params, [])
    return st.board.create("CreateStory", "CreateStory", params, raw_params or {})


def create_customized_story(st, params):
    return {"ObjectId": _new(st, params, params.get("Files") or [])}


def get_story(st, params):
    with st.lock:
        scope = _scope(st, params)
        return {"Story": dict(st.stories.get(scope, required(params, "ObjectId")))}


def query_stories(st, params):
    wanted = {k: params.get(k) for k in ("ObjectId", "StoryName", "StoryType", "StorySubType") if params.get(k)}

    def keep(record):
        # stories without files are left out only when WithEmptyStories is false
        return all(record.get(k) == v for k, v in wanted.items()) and (
            params.get("WithEmptyStories") != "false" or bool(record["Files"]))

    with st.lock:
        scope = _scope(st, params)
        page, token = st.stories.page(scope, params, keep, largest=100)
    return {"Stories": page, **({"NextToken": token} if token else {})}


def update_story(st, params):
    with st.lock:
        scope = _scope(st, params)
        record = st.stories.get(scope, required(params, "ObjectId"))
        for name in ("StoryName", "CustomId", "CustomLabels", "Cover"):
            if params.get(name) not in (None, ""):
                record[name] = params[name]
        record["UpdateTime"] = rfc3339_nano()
        return {}


def delete_story(st, params):
    with st.lock:
        st.stories.delete(_scope(st, params), required(params, "ObjectId"))
        return {}


def add_story_files(st, params):
    with st.lock:
        record = st.stories.get(_scope(st, params), required(params, "ObjectId"))
        have = {f["URI"] for f in record["Files"]}
        out = []
        for f in params.get("Files") or []:
            uri = f.get("URI", "") if isinstance(f, dict) else ""
            if uri and uri not in have:
                record["Files"].append({"URI": uri})
                have.add(uri)
            out.append({"URI": uri, "Code": "", "Message": ""})
        record["UpdateTime"] = rfc3339_nano()
        return {"Files": out}


def remove_story_files(st, params):
    with st.lock:
        record = st.stories.get(_scope(st, params), required(params, "ObjectId"))
        gone = {f.get("URI") for f in params.get("Files") or [] if isinstance(f, dict)}
        record["Files"] = [f for f in record["Files"] if f["URI"] not in gone]
        record["UpdateTime"] = rfc3339_nano()
        return {}


ACTIONS = {
    "CreateStory": create_story,
    "CreateCustomizedStory": create_customized_story,
    "GetStory": get_story,
    "QueryStories": query_stories,
    "UpdateStory": update_story,
    "DeleteStory": delete_story,
    "AddStoryFiles": add_story_files,
    "RemoveStoryFiles": remove_story_files,
}
