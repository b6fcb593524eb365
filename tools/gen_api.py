#!/usr/bin/env python3
"""Generates imm's per-action schemas and typed methods from the API description.

Usage: python3 tools/gen_api.py [--api api/imm-2020-09-30.json] [--out lua/imm]

Reads the API description (api/README.md gives its format) and writes three Lua
modules into OUT, all committed and never edited by hand:
  schema.lua   the data: per action its parameters (wire name, place, encoding,
               type as a shape of core.json_encode, required), its paging list
               field and documented largest page (max_results), whether it is
               idempotent, and its response's top-level field names (response);
               the request models as shapes. Each table is kept as the source
               of a Lua expression and compiled on first use (imm.operations
               asks for one action at a time), so `require "imm"` compiles none
  api.lua      imm.api: every table of schema.lua, built at require
  actions.lua  one method per action, and a named item pager and its all_ twin
               per paging action (PAGER RULE below); imm.client mixes them into
               the client, imm into the module. The loaded actions.lua makes them
               from two name tables; actions_meta.lua, which LDoc and editors
               read, has each as a function with its LDoc comment and LuaLS
               annotations (parameters, and each response as imm.<Action>Response)
`make lint` runs this into a scratch directory and fails on any difference.

Idempotent: an action that cannot change stored state, so that it is retried
like a read. The rule (READ_VERBS below): the action name's first word is Get,
List, Query, Search, Detect, Compare, Extract or Contextual, or the name starts
with BatchGet or ends with Query. Everything else (Create, Update, Delete, Add,
Remove, Attach, Detach, Index, Batch*, Suspend, Resume, Generate, Refresh,
Encode) may change something and is retried only when the service cannot have
acted on it.

Pager names (pager_name below): the action's name in snake_case without its
leading "list_" or "query_" (ListBatches: `batches`, QueryFigureClusters:
`figure_clusters`), as `bindings`, `projects` and `datasets` always were; an
action that starts with neither (SimpleQuery, FuzzyQuery) gets its snake_case
name and its list field (`simple_query_files`). `all_` + that name merges every
page. A name that clashes with an action method stops the generator.

Response types: the description names each response's fields but not their
types, so a field is `any`, except the few whose type imm knows (FIELD_TYPES).

Standard library only.
"""
import argparse
import json
import os
import re
import sys

READ_VERBS = ("Get", "List", "Query", "Search", "Detect", "Compare", "Extract", "Contextual")
MAX_LINE = 116


def first_word(name):
    m = re.match(r"[A-Z][a-z0-9]*", name)
    return m.group(0) if m else name


def idempotent(name):
    return (first_word(name) in READ_VERBS or name.startswith("BatchGet")
            or (name.endswith("Query") and name != "Query"))


def snake(name):
    """CreateMediaConvertTask -> create_media_convert_task; acronyms stay whole:
    ListAttachedOSSBuckets -> list_attached_oss_buckets."""
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s)
    return s.lower()


def pager_name(name, paging):
    s = snake(name)
    for prefix in ("list_", "query_"):
        if s.startswith(prefix):
            return s[len(prefix):]
    return s + "_" + snake(paging["list"])


# Response fields whose type imm knows (imm.Binding & co. are declared in
# lua/imm/operations.lua); every other field is `any`.
FIELD_TYPES = {"RequestId": "string", "NextToken": "string", "TotalHits": "number", "TotalCount": "number",
               "Bindings": "imm.Binding[]", "Binding": "imm.Binding", "Projects": "imm.Project[]",
               "Project": "imm.Project", "Datasets": "imm.Dataset[]", "Dataset": "imm.Dataset"}


def lua_str(s):
    return json.dumps(s, ensure_ascii=False)


def lua_key(name):
    if re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name) and name not in LUA_KEYWORDS:
        return name
    return "[" + lua_str(name) + "]"


LUA_KEYWORDS = {"and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if",
                "in", "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while"}


def shape(t):
    """A TYPE of the description as a Lua expression of the shape grammar."""
    if isinstance(t, str):
        return lua_str(t)
    if "model" in t:
        return "M." + t["model"]
    if "array" in t:
        return "{ array = " + shape(t["array"]) + " }"
    if "map" in t:
        return "{ map = " + shape(t["map"]) + " }"
    raise SystemExit(f"gen_api: unknown type {t!r}")


def luals(t):
    """A TYPE as a LuaLS type."""
    if isinstance(t, str):
        return t
    if "model" in t:
        return "imm.api." + t["model"]
    if "array" in t:
        inner = luals(t["array"])
        return ("(" + inner + ")[]") if "|" in inner else inner + "[]"
    if "map" in t:
        return "table<string, " + luals(t["map"]) + ">"
    raise SystemExit(f"gen_api: unknown type {t!r}")


def describe(t):
    """A TYPE in words, for LDoc and `imm call ACTION --help`."""
    if isinstance(t, str):
        return t
    if "model" in t:
        return t["model"]
    if "array" in t:
        return "array of " + describe(t["array"])
    if "map" in t:
        return "map of " + describe(t["map"])
    raise SystemExit(f"gen_api: unknown type {t!r}")


def wrap(prefix, words, cont):
    """Lines of `words` joined by spaces, the first starting with prefix, the others with cont."""
    lines, cur = [], prefix
    for w in words:
        if len(cur) + 1 + len(w) > MAX_LINE and cur.strip() != cont.strip():
            lines.append(cur)
            cur = cont + w
        else:
            cur = cur + ("" if cur.endswith(" ") or cur == "" else " ") + w
    lines.append(cur)
    return lines


def response_lines(fields):
    """`response = { "A", "B" },`: the top-level response field names, wrapped when long."""
    names = [lua_str(f) for f in sorted(fields)]
    line = "  response = { " + ", ".join(names) + " },"
    if len(line) <= MAX_LINE:
        return [line]
    return ["  response = {"] + wrap("    ", [n + "," for n in names], "    ") + ["  },"]


def header(src, api):
    return f"-- Generated by tools/gen_api.py from {src} (IMM {api['version']}): do not edit."


def action_literal(name, a, tasks):
    """One action's table as a Lua expression (models as M"Name")."""
    o = ["{", "  params = {"]
    names = {p["name"] for p in a["params"]}
    if a["method"] != "POST" or a["path"] != "/" or a["style"] != "RPC":
        raise SystemExit(f"gen_api: {name} is not an RPC POST to /")
    for p in sorted(a["params"], key=lambda p: p["name"]):
        parts = [f"type = {shape(p['type'])}"]
        if p["encoding"] == "json":
            parts.append("json = true")
        elif p["encoding"] != "scalar":
            raise SystemExit(f"gen_api: {name}.{p['name']}: unknown encoding")
        if p["in"] == "body":
            parts.append("body = true")
        elif p["in"] != "query":
            raise SystemExit(f"gen_api: {name}.{p['name']}: unknown place")
        if p.get("required"):
            parts.append("required = true")
        o.append(f"    {lua_key(p['name'])} = {{ {', '.join(parts)} }},")
    o.append("  },")
    if a["body"] == "form":
        o.append("  form = true,")
    paging = a["response"].get("paging")
    if paging:
        o.append(f"  items = {lua_str(paging['list'])},")
        if "MaxResults" in names:
            o.append('  page_size = "MaxResults",')
        if paging.get("max_results"):
            o.append(f"  max_results = {int(paging['max_results'])},")
    o.append(f"  idempotent = {'true' if idempotent(name) else 'false'},")
    o.extend(response_lines(a["response"]["fields"]))
    if a.get("also_streams"):
        o.append(f"  also_streams = {lua_str(a['also_streams'])},")
    if name in tasks["task_types"]:
        o.append(f"  task_type = {lua_str(tasks['task_types'][name]['type'])},")
    o.append("}")
    return o


def long_string(name, lines):
    text = "\n".join(lines)
    if "]=]" in text:
        raise SystemExit(f"gen_api: {name}: its source holds ]=]")
    return "[=[" + text + "]=]"


def gen_schema(api, src, tasks):
    """imm.schema: every model's fields and every action's table as the source
    of a Lua expression, compiled one by one on first use: compiling all of
    them was most of `require "imm"`."""
    o = [header(src, api),
         "--- The tables of `imm.api`, each kept as the source of a Lua expression and compiled on",
         "-- first use: `action(name)` builds one action's table (nil for an action not in the",
         "-- description), `model(name)` one model's; `on_build(name, def)`, when set, sees each",
         "-- action's table once, as it is built (`imm.operations` adds its checks there).",
         "-- @module imm.schema",
         "",
         "local load, assert, rawset, setmetatable = loadstring or load, assert, rawset, setmetatable  -- 5.1's load",
         "local M, A = {}, {}",
         ""]
    models = api["models"]
    for name in sorted(models):
        fields = models[name]["fields"]
        lines = ["{"] + [f"  {lua_key(f['name'])} = {shape(f['type'])}," for f in
                         sorted(fields, key=lambda f: f["name"])] + ["}"]
        o.append(f"M.{name} = {long_string(name, lines)}")
    o.append("")
    for name in sorted(api["actions"]):
        o.append(f"A.{name} = {long_string(name, action_literal(name, api['actions'][name], tasks))}")
    o.append("")
    st = tasks["statuses"]
    o.append("local S = {")
    for kind in ("running", "succeeded", "failed"):
        for v in sorted(st[kind]):
            o.append(f"  {lua_key(v)} = {lua_str(kind)},")
    o.append("}")
    o.append("")
    o.append(f"local _M = {{ version = {lua_str(api['version'])}, task_statuses = S, models = {{}}, actions = {{}},")
    o.append("  model_names = M, action_names = A }")
    o.append("local models, actions = _M.models, _M.actions")
    o.append("")
    o.append("local function compile(what, name, src)")
    o.append('  return assert(load("local M = ... return " .. src, "=imm.schema." .. what .. "." .. name))')
    o.append("end")
    o.append("")
    o.append("-- A model is built on its first read (M.Name in a source); it is registered")
    o.append("-- before its fields are built, so that recursive models refer to themselves.")
    o.append("setmetatable(models, { __index = function(t, name)")
    o.append("  local src = M[name]")
    o.append("  if src == nil then return nil end")
    o.append("  local m = { fields = {} }")
    o.append("  rawset(t, name, m)")
    o.append('  m.fields = compile("models", name, src)(t)')
    o.append("  return m")
    o.append("end })")
    o.append("")
    o.append("--- The model `name`, built on first use, or nil.")
    o.append("function _M.model(name)")
    o.append("  return models[name]")
    o.append("end")
    o.append("")
    o.append("--- The table of the action `name`, built on first use, or nil.")
    o.append("function _M.action(name)")
    o.append("  local def = actions[name]")
    o.append("  if def or A[name] == nil then return def end")
    o.append('  def = compile("actions", name, A[name])(models)')
    o.append("  actions[name] = def")
    o.append("  if _M.on_build then _M.on_build(name, def) end")
    o.append("  return def")
    o.append("end")
    o.append("")
    o.append("return _M")
    return "\n".join(o) + "\n"


def gen_api(api, src, tasks):
    o = [header(src, api),
         "--- The IMM API " + api["version"] + " as the official SDK sends it: every action's parameters",
         "-- (wire name, place, encoding, type) and the request models, as data.",
         "--",
         "-- A parameter is `{ type = SHAPE, json = true|nil, body = true|nil, required = true|nil }`:",
         "-- `json`, it is sent as one JSON text; `body`, in the x-www-form-urlencoded body; SHAPE is",
         "-- \"string\", \"number\", \"boolean\", \"any\", `{ array = SHAPE }`, `{ map = SHAPE }` or a",
         "-- model `{ fields = { Name = SHAPE } }`, the shape `imm.core.json_encode` takes. An action",
         "-- also has `idempotent` (see tools/gen_api.py for the rule), `form` (some parameters go",
         "-- in a body), `items`/`page_size`/`max_results` (the documented largest page) when it",
         "-- pages with NextToken, `response`, the names of its response's top-level fields (what",
         "-- `imm.stub` checks a queued reply against), and `task_type` (the TaskType of the task it",
         "-- starts) when it creates a task; `task_statuses` says which GetTask statuses end a wait",
         "-- (api/task-types.json).",
         "--",
         "-- The tables are built from `imm.schema`, which keeps each one's source and compiles it on",
         "-- first use (imm itself validates through it, one action at a time); requiring this",
         "-- module builds them all, the same tables `imm.operations` uses.",
         "-- @module imm.api",
         "",
         "local schema = require \"imm.schema\"",
         "",
         "local A, M = {}, {}",
         "for name in pairs(schema.model_names) do M[name] = schema.model(name) end",
         "for name in pairs(schema.action_names) do A[name] = schema.action(name) end",
         "",
         "return { version = schema.version, actions = A, models = M, task_statuses = schema.task_statuses }"]
    return "\n".join(o) + "\n"


def sample(t, models, depth=0):
    """A short Lua literal for a usage line."""
    if t == "string":
        return '"..."'
    if t == "number":
        return "1"
    if t == "boolean":
        return "true"
    return "{ ... }"


def gen_actions(api, src, tasks):
    # the blank line keeps the header out of LDoc's module block: LDoc reads
    # a block that opens with "--" as a plain comment, and then took the
    # first function's doc for the module's
    o = [header(src, api),
         "",
         "--- Every IMM action as a method of the client (`client:detect_image_labels{ ... }`) and of",
         "-- the module (`imm.detect_image_labels{ ... }`, on the default client). Each validates its",
         "-- parameters against `imm.api` before sending and returns the decoded response table as is,",
         "-- or nil, err. The method name is the action's in snake_case, acronyms kept whole",
         "-- (ListAttachedOSSBuckets: `list_attached_oss_buckets`). `opts` are the call options of",
         "-- `client:call`.",
         "-- @classmod imm.actions",
         "",
         "---@class imm.Client",
         "local _M = {}",
         "",
         "-- _M._invoke(self, action, method, params, opts) is set by imm.client: it",
         "-- checks that the method was called with a colon, then validates, sends",
         "-- and retries (see Client:call). Not a tail call, so that an error it",
         "-- raises points at the caller on every runtime.",
         ""]
    models = api["models"]
    for name in sorted(models):
        o.append(f"---@class imm.api.{name}")
        for f in sorted(models[name]["fields"], key=lambda f: f["name"]):
            # required in the SDK's documentation, but not enforced: the SDK's own
            # SimpleQuery examples leave Field out of and/or/not nodes
            if f.get("required"):
                o.append(f"---@field {f['name']} {luals(f['type'])} required (documented; imm does not enforce it)")
            else:
                o.append(f"---@field {f['name']} {luals(f['type'])}|nil")
        o.append("")
    names, pagers = {}, {}
    for name in sorted(api["actions"]):
        a = api["actions"][name]
        method = snake(name)
        if method in names:
            raise SystemExit(f"gen_api: {name} and {names[method]} are both {method}")
        names[method] = name
        params = sorted(a["params"], key=lambda p: p["name"])
        paging = a["response"].get("paging")
        o.append(f"---@class imm.{name}Response")
        for f in sorted(a["response"]["fields"]):
            t = FIELD_TYPES.get(f, "any")
            if paging and f == paging["list"] and t == "any":
                t = "table[]"
            note = ""
            if f == "RequestId":
                pass
            elif paging and f == paging["list"]:
                note = " always a table ({} when the reply has none)"
            elif paging and f == paging["token"]:
                t, note = t + "|nil", " nil on the last page"
            else:
                t += "|nil"
            o.append(f"---@field {f} {t}{note}")
        o.append("---@field [string] any fields the service adds are kept")
        o.append("")
        o.append(f"---@class imm.{name}Params")
        for p in params:
            t = luals(p["type"])
            if p["encoding"] == "json":
                t += "|string"
            opt = "" if p.get("required") else "|nil"
            where = "body, " if p["in"] == "body" else ""
            note = ("JSON, " if p["encoding"] == "json" else "") + where + ("required" if p.get("required") else "")
            o.append(f"---@field {p['name']} {t}{opt}{(' ' + note.rstrip(', ')) if note else ''}")
        o.append("")
        doc = [f"--- {name} (IMM API {api['version']})."]
        extra = []
        if paging:
            extra.append(f"Pages with NextToken; the list is `{paging['list']}` (see `client:{pager_name(name, paging)}`).")
        extra.append("Retried like a read." if idempotent(name) else
                     "Changes state: retried only when the service cannot have acted on it.")
        if a["body"] == "form":
            extra.append("Some parameters travel in a form body.")
        if a.get("also_streams"):
            extra.append(f"The service can also answer with {a['also_streams']}; imm reads the JSON reply.")
        doc = wrap(doc[0], extra, "-- ")
        pdesc = []
        for p in params:
            bits = [describe(p["type"])]
            if p["encoding"] == "json":
                bits.append("JSON")
            if p["in"] == "body":
                bits.append("body")
            if p.get("required"):
                bits.append("required")
            pdesc.append(f"`{p['name']}` ({', '.join(bits)}),")
        if pdesc:
            pdesc[-1] = pdesc[-1].rstrip(",")
            doc += wrap("-- @tparam table params", pdesc, "--   ")
        else:
            doc.append("-- @tparam[opt] table params (none)")
        if name in tasks["task_types"]:
            doc.append("-- @tparam[opt] table opts call options (`idempotent`, `method`), and `wait` (true or")
            doc.append(f"--   the options of `wait_task`): wait for the {tasks['task_types'][name]['type']} task and return")
            doc.append("--   GetTask's final response (docs/tasks.md)")
        else:
            doc.append("-- @tparam[opt] table opts call options (`idempotent`, `method`)")
        doc.append("-- @return the decoded response table, or nil, err")
        req = [p for p in params if p.get("required")]
        usage = ", ".join(f"{p['name']} = {sample(p['type'], models)}" for p in req)
        doc.append(f"-- @usage local res, err = client:{method}{{ {usage} }}" if usage
                   else f"-- @usage local res, err = client:{method}()")
        o += doc
        o.append(f"---@param params imm.{name}Params{'' if req else '|nil'}")
        o.append("---@param opts imm.CallOptions|nil")
        o.append(f"---@return imm.{name}Response|nil res")
        o.append("---@return imm.Error|nil err")
        o.append("---@return imm.CallMeta|nil meta with opts.meta = true")
        o.append(f"function _M:{method}(params, opts)")
        line = f'  local res, err, meta = _M._invoke(self, "{name}", "{method}", params, opts)'
        if len(line) > MAX_LINE:
            line = f'  local res, err, meta = _M._invoke(self, "{name}",\n    "{method}", params, opts)'
        o.append(line)
        o.append("  return res, err, meta")
        o.append("end")
        o.append("")
        if paging:
            o += gen_pagers(name, method, a, paging, params, req, models, names, pagers)
    for pname in pagers:
        if pname in names or "all_" + pname in names:
            raise SystemExit(f"gen_api: the pager {pname} clashes with an action method")
    o.append("--- Pager name -> action name: the named item pagers above (each with its all_ twin).")
    o.append("_M._pagers = {")
    for pname in sorted(pagers):
        o.append(f'  {pname} = "{pagers[pname]}",')
    o.append("}")
    o.append("")
    o.append("--- Method name -> action name, for every method above.")
    o.append("_M._actions = {")
    for method in sorted(names):
        o.append(f'  {method} = "{names[method]}",')
    o.append("}")
    o.append("")
    o.append("return _M")
    return "\n".join(o) + "\n", names, pagers


def gen_loaded_actions(api, src, names, pagers):
    """The actions.lua that loads: the methods of actions_meta.lua, made by
    one of three closures from the name tables on the first read of a name
    the module lacks. The tables are text, read then: compiling them (and
    131 functions of the same form) was most of `require "imm"`."""
    for n in list(names) + list(names.values()) + list(pagers) + list(pagers.values()):
        if not re.match(r"^[A-Za-z0-9_]+$", n):
            raise SystemExit(f"gen_api: {n} cannot go in actions.lua's name lines")
    o = [header(src, api), "",
         "local rawget, setmetatable, gmatch = rawget, setmetatable, string.gmatch", "",
         f"local _M = {{ _api_version = {lua_str(api['version'])} }}", ""]
    o.append("local ACTIONS = [[")
    for method in sorted(names):
        o.append(f"{method} {names[method]}")
    o.append("]]")
    o.append("")
    o.append("local PAGERS = [[")
    for pname in sorted(pagers):
        o.append(f"{pname} {pagers[pname]}")
    o.append("]]")
    o.append("")
    o.append("local function method(action, name)")
    o.append("  return function(self, params, opts)")
    o.append("    local res, err, meta = _M._invoke(self, action, name, params, opts)")
    o.append("    return res, err, meta")
    o.append("  end")
    o.append("end")
    o.append("")
    o.append("local function items(action, name)")
    o.append("  return function(self, params, opts)")
    o.append("    local it, a, b, listing = _M._items(self, action, name, params, opts)")
    o.append("    return it, a, b, listing")
    o.append("  end")
    o.append("end")
    o.append("")
    o.append("local function all(action, name)")
    o.append("  return function(self, params, opts)")
    o.append("    local res, err = _M._all(self, action, name, params, opts)")
    o.append("    return res, err")
    o.append("  end")
    o.append("end")
    o.append("")
    # The first read of a name the table lacks makes every method and drops the
    # metatable: imm.client falls back to this table, so a later miss (a client
    # field left nil, several per call) costs one lookup, not a call.
    o.append("setmetatable(_M, { __index = function(t, name)")
    o.append("  setmetatable(t, nil)")
    o.append("  local actions, pagers = {}, {}")
    o.append('  for m, action in gmatch(ACTIONS, "(%S+) (%S+)") do')
    o.append("    actions[m] = action")
    o.append("    t[m] = method(action, m)")
    o.append("  end")
    o.append('  for pager, action in gmatch(PAGERS, "(%S+) (%S+)") do')
    o.append("    pagers[pager] = action")
    o.append("    t[pager] = items(action, pager)")
    o.append('    t["all_" .. pager] = all(action, "all_" .. pager)')
    o.append("  end")
    o.append("  t._actions, t._pagers = actions, pagers")
    o.append("  return rawget(t, name)")
    o.append("end })")
    o.append("")
    o.append("return _M")
    return "\n".join(o) + "\n"


def gen_pagers(name, method, a, paging, params, req, models, names, pagers):
    """The named item pager of a paging action and its all_ twin."""
    pname = pager_name(name, paging)
    if pname in pagers:
        raise SystemExit(f"gen_api: {name} and {pagers[pname]} are both the pager {pname}")
    pagers[pname] = name
    lst, size = paging["list"], paging.get("max_results")
    ptype = f"imm.{name}Params{'' if req else '|nil'}"
    item = FIELD_TYPES.get(lst, "table[]")[:-2]
    usage = ", ".join(f"{p['name']} = {sample(p['type'], models)}" for p in req)
    call = f"{{ {usage} }}" if usage else "()"
    size_words = f"default and at most {size}" if size else "the service's default"
    o = wrap(f"--- Every item of every {name} page, one by one", [f"(the elements of `{lst}`),",
                                                                    "following NextToken."], "-- ")
    o += wrap("-- @tparam table params", [f"as for `{method}`"], "--   ") if req else \
        [f"-- @tparam[opt] table params as for `{method}`"]
    o += wrap("-- @tparam[opt] table opts", ["pager", "options:", "`max_items`,", f"`page_size` ({size_words}),",
                                             "`start_token`,", "`prefetch`"], "--   ")
    o.append("-- @return iterator yielding items; on failure it yields `false, err` once (`err.next_token`")
    o.append("--   says where to resume). With `prefetch`, also a fourth value whose `close()` ends it.")
    o.append(f"-- @usage for item, err in client:{pname}{call} do ... end")
    o.append(f"---@param params {ptype}")
    o.append("---@param opts imm.PagerOptions|nil")
    o.append(f"---@return fun(): ({item}|false|nil), imm.Error|nil")
    o.append(f"function _M:{pname}(params, opts)")
    o.append(f'  local it, a, b, listing = _M._items(self, "{name}", "{pname}", params, opts)')
    o.append("  return it, a, b, listing")
    o.append("end")
    o.append("")
    o.append(f"--- Every item of every {name} page, merged: `{{ {lst} = {{ ... }} }}`.")
    o += wrap("-- @tparam table params", [f"as for `{method}`"], "--   ") if req else \
        [f"-- @tparam[opt] table params as for `{method}`"]
    o.append(f"-- @tparam[opt] table opts as for `{pname}`")
    o.append("-- @return table, or nil, err (`err.next_token` says where to resume)")
    o.append(f"-- @usage local all, err = client:all_{pname}{call}")
    o.append(f"---@param params {ptype}")
    o.append("---@param opts imm.PagerOptions|nil")
    o.append(f"---@return {{ {lst}: {item}[] }}|nil all")
    o.append("---@return imm.Error|nil err")
    o.append(f"function _M:all_{pname}(params, opts)")
    o.append(f'  local all, err = _M._all(self, "{name}", "all_{pname}", params, opts)')
    o.append("  return all, err")
    o.append("end")
    o.append("")
    return o


def check_task_types(api, tasks):
    """Every action that creates a task has a TaskType, and every entry names such an action."""
    creates = {n for n in api["actions"] if n.startswith("Create") and n.endswith("Task")}
    listed = set(tasks["task_types"])
    if creates - listed:
        raise SystemExit(f"gen_api: no TaskType in api/task-types.json for {sorted(creates - listed)}")
    if listed - creates:
        raise SystemExit(f"gen_api: api/task-types.json names unknown task actions {sorted(listed - creates)}")
    for name, t in tasks["task_types"].items():
        if not re.match(r"^[A-Za-z0-9]+$", t.get("type", "")):
            raise SystemExit(f"gen_api: {name}: TaskType must be letters and digits")


def meta_file(text):
    """What LDoc (config.ld) and editors read: the same code with every
    comment; imm never loads it (LuaLS's @meta names the module it describes)."""
    first, rest = text.split("\n", 1)
    return (first + "\n-- LDoc and LuaLS read this file; imm loads actions.lua, which makes the same methods.\n"
            + "---@meta imm.actions\n" + rest)


def main(argv):
    ap = argparse.ArgumentParser(description="Generates lua/imm/schema.lua, api.lua, actions.lua and actions_meta.lua.")
    ap.add_argument("--api", default="api/imm-2020-09-30.json")
    ap.add_argument("--task-types", default="api/task-types.json")
    ap.add_argument("--out", default="lua/imm")
    args = ap.parse_args(argv)
    with open(args.api, encoding="utf-8") as f:
        api = json.load(f)
    with open(args.task_types, encoding="utf-8") as f:
        tasks = json.load(f)
    check_task_types(api, tasks)
    src = args.api.replace(os.sep, "/")
    os.makedirs(args.out, exist_ok=True)
    actions, names, pagers = gen_actions(api, src, tasks)
    for fname, text in (("api.lua", gen_api(api, src, tasks)), ("schema.lua", gen_schema(api, src, tasks)),
                        ("actions.lua", gen_loaded_actions(api, src, names, pagers)),
                        ("actions_meta.lua", meta_file(actions))):
        path = os.path.join(args.out, fname)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)


if __name__ == "__main__":
    main(sys.argv[1:])
