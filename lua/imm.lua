--- imm: a client for Alibaba Cloud Intelligent Media Management (IMM,
-- API 2020-09-30) with a C core (OpenSSL signing, libcurl HTTP).
--
-- Every client method has a module-level twin on a default client built
-- from the environment, every generated action included
-- (`imm.detect_image_labels{ ... }`, see `imm.actions`).
--
-- @module imm
-- @usage
-- local imm = require "imm"
-- local client = assert(imm.new{ region = "cn-hangzhou",
--   access_key_id = os.getenv("ALIBABA_CLOUD_ACCESS_KEY_ID"),
--   access_key_secret = os.getenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET") })
-- for b, err in client:bindings{ ProjectName = "immtest" } do
--   if not b then error(tostring(err)) end
--   print(b.DatasetName, b.URI, b.State)
-- end

local pairs, getenv, type, rawset, setmetatable, require = pairs, os.getenv, type, rawset, setmetatable, require
local sub = string.sub
local Client = require "imm.client"
local errors = require "imm.errors"
local async = require("imm.lazy")("imm.async")  -- loaded by the first task
local pager = require("imm.lazy")("imm.pager")  -- loaded by the first listing
-- the iterator a pager returns for bad input
local function failed(err)
  return pager.failed(err)
end

local _M = {
  _VERSION = Client._VERSION,
  errors = errors,
}
-- imm.credentials and imm.async, the modules themselves, are loaded on first
-- read of the field (the metatable at the end)

--- Starts `fn(...)` as a task for non-blocking calls outside nginx: an
-- `async = true` client used inside it yields instead of blocking, and
-- `imm.poll` drives it. See `imm.async`.
-- @tparam function fn
-- @return the task (`task:done()`, `task:result()`, `task:cancel()`, `task:join()`)
-- @usage local task = imm.spawn(function() return client:all_bindings{ ProjectName = "p" } end)
---@param fn function
---@return imm.Task
function _M.spawn(fn, ...)
  return async.spawn(fn, ...)
end

--- Drives every task: transfers move, tasks whose replies arrived resume.
-- Never blocks longer than `timeout_ms` (default 0: not at all).
-- @tparam[opt=0] number timeout_ms
-- @return the number of tasks still running
-- @usage while imm.poll(0) > 0 do draw_frame() end
---@param timeout_ms number|nil
---@return integer running
function _M.poll(timeout_ms)
  return async.poll(timeout_ms)
end

--- The sockets and the timeout the tasks wait on, for a host's own event
-- loop: wait for one of them, then call `imm.poll(0)`.
-- @return `{ {fd=, read=, write=}, ... }`, timeout in ms (-1: none)
---@return { fd: integer, read: boolean, write: boolean }[] sockets
---@return integer timeout_ms
function _M.fds()
  return async.fds()
end

--- Creates a client.
-- @tparam table opts the client options (docs/api.md, `imm.ClientOptions`)
-- @usage local client = assert(imm.new{ region = "cn-hangzhou" })
-- @return client, or nil, err
---@param opts imm.ClientOptions
---@return imm.Client|nil client
---@return imm.Error|nil err
function _M.new(opts)
  return Client.new(opts)
end

-- The default client, built from the environment on first use.
local default_opts, default_client

local function env_options()
  local o = {}
  local ep = getenv("IMM_ENDPOINT")
  if ep and ep ~= "" then
    o.endpoint = ep
    -- an explicit http:// endpoint is the opt-in to plain http
  end
  local region = getenv("ALIBABA_CLOUD_REGION_ID")
  if region and region ~= "" then o.region = region end
  return o
end

local function default()
  if default_client then return default_client end
  local c, err = Client.new(default_opts or env_options())
  if not c then return nil, err end
  default_client = c
  return c
end

--- Replaces the default client's options (the module-level functions use
-- it). Credentials still come from the default chain unless given.
-- @tparam table opts as for `imm.new`
-- @return true, or nil, err (the previous configuration stays in force)
function _M.configure(opts)
  local c, err = Client.new(opts)
  if not c then return nil, err end
  if default_client then default_client:close() end
  local copy = {}
  for k, v in pairs(opts) do copy[k] = v end
  default_opts, default_client = copy, c
  return true
end

--- Module-level calls on the default client (region and endpoint from
-- `ALIBABA_CLOUD_REGION_ID` / `IMM_ENDPOINT`, keys from the environment).
-- @section module

--- Lists one page of bindings on the default client (`client:list_bindings`).
-- @tparam table params `ProjectName` (required), `DatasetName`, `MaxResults`, `NextToken`, `Name`
-- @tparam[opt] table opts call options (docs/api.md, "Call options"; as for `client:call`)
-- @return the response (`res.Bindings`, `res.NextToken`), or nil, err
-- @usage local res, err = imm.list_bindings{ ProjectName = "immtest" }
---@param params imm.ListBindingsParams
---@param opts imm.CallOptions|nil
---@return imm.ListBindingsResponse|nil res
---@return imm.Error|nil err
function _M.list_bindings(params, opts)
  local c, err = default()
  if not c then return nil, err end
  return c:list_bindings(params, opts)
end

--- Calls any IMM action on the default client (`client:call`).
-- @tparam string action e.g. "ListBindings"
-- @tparam[opt] table params
-- @tparam[opt] table opts call options (docs/api.md, "Call options")
-- @return the decoded response table, or nil, err
-- @usage local res, err = imm.call("ListProjects", { MaxResults = 10 })
---@param action string
---@param params table|nil
---@param opts imm.CallOptions|nil
---@return table|nil res
---@return imm.Error|nil err
function _M.call(action, params, opts)
  local c, err = default()
  if not c then return nil, err end
  return c:call(action, params, opts)
end

--- Creates a binding on the default client (`client:create_binding`).
-- @tparam table params `ProjectName`, `DatasetName`, `URI`
-- @tparam[opt] table opts call options (docs/api.md, "Call options"; as for `client:call`)
-- @return the response (`res.Binding`), or nil, err
-- @usage local res, err = imm.create_binding{ ProjectName = "p", DatasetName = "d", URI = "oss://b/photos/" }
---@param params imm.BindingParams
---@param opts imm.CallOptions|nil
---@return imm.CreateBindingResponse|nil res
---@return imm.Error|nil err
function _M.create_binding(params, opts)
  local c, err = default()
  if not c then return nil, err end
  return c:create_binding(params, opts)
end

--- Reads one binding on the default client (`client:get_binding`).
-- @tparam table params `ProjectName`, `DatasetName`, `URI`
-- @tparam[opt] table opts call options (docs/api.md, "Call options"; as for `client:call`)
-- @return the response (`res.Binding`), or nil, err
-- @usage local res, err = imm.get_binding{ ProjectName = "p", DatasetName = "d", URI = "oss://b/" }
---@param params imm.BindingParams
---@param opts imm.CallOptions|nil
---@return imm.GetBindingResponse|nil res
---@return imm.Error|nil err
function _M.get_binding(params, opts)
  local c, err = default()
  if not c then return nil, err end
  return c:get_binding(params, opts)
end

--- Stops a binding on the default client (`client:stop_binding`).
-- @tparam table params `ProjectName`, `DatasetName`, `URI`, `Reason`
-- @tparam[opt] table opts call options (docs/api.md, "Call options"; as for `client:call`)
-- @return the response, or nil, err
-- @usage local res, err = imm.stop_binding{ ProjectName = "p", DatasetName = "d", URI = "oss://b/" }
---@param params imm.StopBindingParams
---@param opts imm.CallOptions|nil
---@return { RequestId: string }|nil res
---@return imm.Error|nil err
function _M.stop_binding(params, opts)
  local c, err = default()
  if not c then return nil, err end
  return c:stop_binding(params, opts)
end

--- Resumes a stopped binding on the default client (`client:resume_binding`).
-- @tparam table params `ProjectName`, `DatasetName`, `URI`
-- @tparam[opt] table opts call options (docs/api.md, "Call options"; as for `client:call`)
-- @return the response, or nil, err
-- @usage local res, err = imm.resume_binding{ ProjectName = "p", DatasetName = "d", URI = "oss://b/" }
---@param params imm.BindingParams
---@param opts imm.CallOptions|nil
---@return { RequestId: string }|nil res
---@return imm.Error|nil err
function _M.resume_binding(params, opts)
  local c, err = default()
  if not c then return nil, err end
  return c:resume_binding(params, opts)
end

--- Deletes a binding on the default client (`client:delete_binding`).
-- @tparam table params `ProjectName`, `DatasetName`, `URI`
-- @tparam[opt] table opts call options (docs/api.md, "Call options"; as for `client:call`)
-- @return the response, or nil, err
-- @usage local res, err = imm.delete_binding{ ProjectName = "p", DatasetName = "d", URI = "oss://b/" }
---@param params imm.BindingParams
---@param opts imm.CallOptions|nil
---@return { RequestId: string }|nil res
---@return imm.Error|nil err
function _M.delete_binding(params, opts)
  local c, err = default()
  if not c then return nil, err end
  return c:delete_binding(params, opts)
end

--- Waits until a binding reaches a state, on the default client (`client:wait_binding`).
-- @tparam table params `ProjectName`, `DatasetName`, `URI`
-- @tparam[opt] table opts `state` (default "Running"), `timeout` (300), `interval` (5)
-- @return the binding, or nil, err (`WaitTimeout`, `BindingFailed`, `BindingDeleted`, ...)
-- @usage local b, err = imm.wait_binding(key, { state = "Running", timeout = 60 })
---@param params imm.BindingParams
---@param opts { state: string|nil, timeout: number|nil, interval: number|nil }|nil
---@return imm.Binding|nil binding
---@return imm.Error|nil err
function _M.wait_binding(params, opts)
  local c, err = default()
  if not c then return nil, err end
  return c:wait_binding(params, opts)
end

--- Polls GetTask until the task ends, on the default client (`client:wait_task`, docs/tasks.md).
-- @tparam table params `ProjectName`, `TaskType`, `TaskId`
-- @tparam[opt] table opts `interval`, `backoff`, `max_interval`, `timeout`, `call`, `notifications`
-- @return GetTask's response once Succeeded, or nil, err (`TaskFailed`, `WaitTimeout`, ...)
-- @usage local task, err = imm.wait_task{ ProjectName = "p", TaskType = "MediaConvert", TaskId = id }
---@param params { ProjectName: string, TaskType: string, TaskId: string }
---@param opts table|nil
---@return imm.GetTaskResponse|nil res
---@return imm.Error|nil err
function _M.wait_task(params, opts)
  local c, err = default()
  if not c then return nil, err end
  return c:wait_task(params, opts)
end

--- Polls any action until its response is done, on the default client (`client:wait`).
-- @tparam string action e.g. "GetTask"
-- @tparam table params
-- @tparam table opts `done` or `match`, `fail`, `interval`, `backoff`, `max_interval`, `timeout`, `call`
-- @return the response that was done, or nil, err (`WaitTimeout`, `WaitFailed`, ...)
-- @usage local res, err = imm.wait("GetTask", params, { match = { Status = "Succeeded" } })
---@param action string
---@param params table|nil
---@param opts table
---@return table|nil res
---@return imm.Error|nil err
function _M.wait(action, params, opts)
  local c, err = default()
  if not c then return nil, err end
  return c:wait(action, params, opts)
end

--- Lists one page of projects on the default client (`client:list_projects`).
-- @tparam[opt] table params `MaxResults`, `NextToken`, `Prefix`, `Tag`
-- @tparam[opt] table opts call options (docs/api.md, "Call options"; as for `client:call`)
-- @return the response (`res.Projects`, `res.NextToken`), or nil, err
-- @usage local res, err = imm.list_projects{ Prefix = "media-" }
---@param params imm.ListProjectsParams|nil
---@param opts imm.CallOptions|nil
---@return imm.ListProjectsResponse|nil res
---@return imm.Error|nil err
function _M.list_projects(params, opts)
  local c, err = default()
  if not c then return nil, err end
  return c:list_projects(params, opts)
end

--- Lists one page of a project's datasets on the default client (`client:list_datasets`).
-- @tparam table params `ProjectName` (required), `MaxResults`, `NextToken`, `Prefix`
-- @tparam[opt] table opts call options (docs/api.md, "Call options"; as for `client:call`)
-- @return the response (`res.Datasets`, `res.NextToken`), or nil, err
-- @usage local res, err = imm.list_datasets{ ProjectName = "immtest" }
---@param params imm.ListDatasetsParams
---@param opts imm.CallOptions|nil
---@return imm.ListDatasetsResponse|nil res
---@return imm.Error|nil err
function _M.list_datasets(params, opts)
  local c, err = default()
  if not c then return nil, err end
  return c:list_datasets(params, opts)
end

--- Every binding of every page, merged, on the default client (`client:all_bindings`).
-- @tparam table params as for `list_bindings`
-- @tparam[opt] table opts pager options (`concurrency`, `max_items`, `page_size`, ...)
-- @return `{ Bindings = { ... } }`, or nil, err
-- @usage local all, err = imm.all_bindings({ ProjectName = "immtest" }, { concurrency = 20 })
---@param params imm.ListBindingsParams
---@param opts imm.PagerOptions|nil
---@return { Bindings: imm.Binding[] }|nil all
---@return imm.Error|nil err
function _M.all_bindings(params, opts)
  local c, err = default()
  if not c then return nil, err end
  return c:all_bindings(params, opts)
end

--- Iterates over bindings on the default client (`client:bindings`).
-- @tparam table params as for `list_bindings`
-- @tparam[opt] table opts pager options (`concurrency`, `prefetch`, `max_items`, ...)
-- @return iterator yielding bindings; on failure it yields `false, err` once
-- @usage for b, err in imm.bindings{ ProjectName = "immtest" } do ... end
---@param params imm.ListBindingsParams
---@param opts imm.PagerOptions|nil
---@return fun(): (imm.Binding|false|nil), imm.Error|nil
function _M.bindings(params, opts)
  local c, err = default()
  if not c then return failed(err) end
  return c:bindings(params, opts)
end

--- Iterates over the pages of any NextToken action on the default client (`client:pages`).
-- @tparam string action e.g. "QueryFigureClusters"
-- @tparam table params
-- @tparam[opt] table opts pager options (`items` for actions outside the API description)
-- @return iterator yielding response pages; on failure it yields `false, err` once
-- @usage for page, err in imm.pages("ListProjects", {}) do ... end
---@param action string
---@param params table|nil
---@param opts imm.PagerOptions|nil
---@return fun(): (table|false|nil), imm.Error|nil
function _M.pages(action, params, opts)
  local c, err = default()
  if not c then return failed(err) end
  return c:pages(action, params, opts)
end

--- Iterates over the items of any NextToken action on the default client (`client:items`).
-- @tparam string action e.g. "ListTasks"
-- @tparam table params
-- @tparam[opt] table opts pager options (`max_items`, `page_size`, `start_token`, `prefetch`)
-- @return iterator yielding items; on failure it yields `false, err` once
-- @usage for task, err in imm.items("ListTasks", { ProjectName = "p" }) do ... end
---@param action string
---@param params table|nil
---@param opts imm.PagerOptions|nil
---@return fun(): (table|false|nil), imm.Error|nil
function _M.items(action, params, opts)
  local c, err = default()
  if not c then return failed(err) end
  return c:items(action, params, opts)
end

--- Every item of every page of any NextToken action, merged, on the default client (`client:all`).
-- @tparam string action e.g. "ListTasks"
-- @tparam table params
-- @tparam[opt] table opts pager options
-- @return `{ [list field] = { ... } }`, or nil, err
-- @usage local all, err = imm.all("ListTasks", { ProjectName = "p" })
---@param action string
---@param params table|nil
---@param opts imm.PagerOptions|nil
---@return table|nil all
---@return imm.Error|nil err
function _M.all(action, params, opts)
  local c, err = default()
  if not c then return nil, err end
  return c:all(action, params, opts)
end

--- Iterates over projects on the default client (`client:projects`).
-- @tparam[opt] table params as for `list_projects`
-- @tparam[opt] table opts pager options
-- @return iterator yielding projects; on failure it yields `false, err` once
-- @usage for p, err in imm.projects() do ... end
---@param params imm.ListProjectsParams|nil
---@param opts imm.PagerOptions|nil
---@return fun(): (imm.Project|false|nil), imm.Error|nil
function _M.projects(params, opts)
  local c, err = default()
  if not c then return failed(err) end
  return c:projects(params, opts)
end

--- Iterates over a project's datasets on the default client (`client:datasets`).
-- @tparam table params as for `list_datasets`
-- @tparam[opt] table opts pager options
-- @return iterator yielding datasets; on failure it yields `false, err` once
-- @usage for d, err in imm.datasets{ ProjectName = "immtest" } do ... end
---@param params imm.ListDatasetsParams
---@param opts imm.PagerOptions|nil
---@return fun(): (imm.Dataset|false|nil), imm.Error|nil
function _M.datasets(params, opts)
  local c, err = default()
  if not c then return failed(err) end
  return c:datasets(params, opts)
end

-- Every other action of the schema (imm.actions) as a function of the
-- module on the default client, made on its first read:
-- imm.detect_image_labels{ ... }, and the named item pagers with their all_
-- twins: imm.tasks{ ... }, imm.all_tasks{ ... }.
local actions = require "imm.actions"
setmetatable(_M, { __index = function(t, k)
  if k == "async" then
    local m = require "imm.async"
    rawset(t, k, m)
    return m
  end
  if k == "credentials" then
    local m = require "imm.credentials"
    rawset(t, k, m)
    return m
  end
  if type(k) ~= "string" then return nil end
  local all = sub(k, 1, 4) == "all_"
  if not (actions._actions[k] or actions._pagers[k] or (all and actions._pagers[sub(k, 5)])) then return nil end
  local f
  if actions._pagers[k] then
    f = function(params, opts)
      local c, err = default()
      if not c then return failed(err) end
      return c[k](c, params, opts)
    end
  else
    f = function(params, opts)
      local c, err = default()
      if not c then return nil, err end
      return c[k](c, params, opts)
    end
  end
  rawset(t, k, f)
  return f
end })

return _M
