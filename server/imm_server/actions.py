"""Which module answers which action.  Every action of the description is
routed: to a family with state (projects.py, bindings.py, attachments.py,
tasks.py, triggers.py, batches.py, stories.py, figures.py, filemeta.py) or to
analysis.py, which answers with the documented shape.  Before any of them,
validation.py checks the request, and a canned reply queued through the
control API (control.py) takes the action's place."""

from . import analysis, attachments, batches, bindings, figures, filemeta, projects, stories, tasks, triggers
from .replies import ApiError

FILEMETA_ACTIONS = ("IndexFileMeta", "BatchIndexFileMeta", "UpdateFileMeta", "GetFileMeta", "BatchGetFileMeta",
                    "DeleteFileMeta", "SimpleQuery", "FuzzyQuery")
# two more of the family, made of the single-file ones
FILEMETA_BATCHES = ("BatchDeleteFileMeta", "BatchUpdateFileMeta")

STATEFUL = {}
for _family in (projects, bindings, attachments, triggers, batches, stories, figures):
    STATEFUL.update(_family.ACTIONS)


def _filemeta_store(st):
    with st.lock:
        if st.filemeta is None:
            st.filemeta = filemeta.FileMetaStore(
                dataset_exists=lambda p, d: (p, d) in st.datasets)
        return st.filemeta


def _filemeta(st, action, params):
    store = _filemeta_store(st)
    # one request at a time in the store, as every other family holds st.lock
    with st.lock:
        return _filemeta_locked(store, action, params)


def _filemeta_locked(store, action, params):
    try:
        if action == "BatchDeleteFileMeta":
            for uri in params.get("URIs") or []:
                store.handle("DeleteFileMeta", {**params, "URI": uri})
            return {}
        if action == "BatchUpdateFileMeta":
            files = []
            for f in params.get("Files") or []:
                try:
                    store.handle("UpdateFileMeta", {**params, "File": f})
                    files.append({"URI": f.get("URI", ""), "Code": "", "Message": ""})
                except filemeta.FileMetaError as err:
                    files.append({"URI": f.get("URI", ""), "Code": err.code, "Message": err.message})
            return {"Files": files}
        return store.handle(action, params)
    except filemeta.FileMetaError as err:
        raise ApiError(getattr(err, "status", 400), err.code, err.message)


def classify(desc, action):
    """"state" or "shape": how the server answers action (for the docs and the checks)."""
    if (action in STATEFUL or action in desc.task_types or action in FILEMETA_ACTIONS
            or action in FILEMETA_BATCHES or action in ("GetTask", "ListTasks") or action in tasks.RESULT_ACTIONS):
        return "state"
    return "shape"


def answer(server, action, params, raw_params):
    """The result (without RequestId) of a validated action."""
    st, board, desc = server.state, server.board, server.description
    if action in desc.task_types:
        return board.create(action, desc.task_types[action], params, raw_params)
    if action == "CreateStory":
        return stories.create_story(st, params, raw_params)
    if action in STATEFUL:
        return STATEFUL[action](st, params)
    if action == "GetTask":
        return board.get(params)
    if action == "ListTasks":
        return tasks.list_tasks(board, params)
    if action in tasks.RESULT_ACTIONS:
        return tasks.result_of(board, params, tasks.RESULT_ACTIONS[action])
    if action in FILEMETA_ACTIONS or action in FILEMETA_BATCHES:
        return _filemeta(st, action, params)
    return analysis.shaped(desc, action, params)
