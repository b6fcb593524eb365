--- imm: a client for Alibaba Cloud Intelligent Media Management (IMM,
-- API 2020-09-30) with a C core (OpenSSL signing, libcurl HTTP).
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

local pairs, getenv = pairs, os.getenv
local Client = require "imm.client"
local errors = require "imm.errors"
local async = require "imm.async"
local failed = require("imm.pager").failed  -- the iterator a pager returns for bad input

local _M = {
  _VERSION = Client._VERSION,
  errors = errors,
  credentials = require "imm.credentials",
  async = async,
}

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
-- @tparam table opts see the README ("Client options")
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

--- @return res, or nil, err
---@param params imm.ListBindingsParams
---@return imm.ListBindingsResponse|nil res
---@return imm.Error|nil err
function _M.list_bindings(params)
  local c, err = default()
  if not c then return nil, err end
  return c:list_bindings(params)
end

--- @return res, or nil, err
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

--- @return res, or nil, err (see `imm.client:create_binding`)
---@param params imm.BindingParams
---@return imm.CreateBindingResponse|nil res
---@return imm.Error|nil err
function _M.create_binding(params)
  local c, err = default()
  if not c then return nil, err end
  return c:create_binding(params)
end

--- @return the response (`res.Binding`), or nil, err
---@param params imm.BindingParams
---@return imm.GetBindingResponse|nil res
---@return imm.Error|nil err
function _M.get_binding(params)
  local c, err = default()
  if not c then return nil, err end
  return c:get_binding(params)
end

--- @return res, or nil, err
---@param params imm.StopBindingParams
---@return { RequestId: string }|nil res
---@return imm.Error|nil err
function _M.stop_binding(params)
  local c, err = default()
  if not c then return nil, err end
  return c:stop_binding(params)
end

--- @return res, or nil, err
---@param params imm.BindingParams
---@return { RequestId: string }|nil res
---@return imm.Error|nil err
function _M.resume_binding(params)
  local c, err = default()
  if not c then return nil, err end
  return c:resume_binding(params)
end

--- @return res, or nil, err
---@param params imm.BindingParams
---@return { RequestId: string }|nil res
---@return imm.Error|nil err
function _M.delete_binding(params)
  local c, err = default()
  if not c then return nil, err end
  return c:delete_binding(params)
end

--- @return the binding, or nil, err (see `imm.client:wait_binding`)
---@param params imm.BindingParams
---@param opts { state: string|nil, timeout: number|nil, interval: number|nil }|nil
---@return imm.Binding|nil binding
---@return imm.Error|nil err
function _M.wait_binding(params, opts)
  local c, err = default()
  if not c then return nil, err end
  return c:wait_binding(params, opts)
end

--- @return res, or nil, err
---@param params imm.ListProjectsParams|nil
---@return table|nil res
---@return imm.Error|nil err
function _M.list_projects(params)
  local c, err = default()
  if not c then return nil, err end
  return c:list_projects(params)
end

--- @return res, or nil, err
---@param params imm.ListDatasetsParams
---@return table|nil res
---@return imm.Error|nil err
function _M.list_datasets(params)
  local c, err = default()
  if not c then return nil, err end
  return c:list_datasets(params)
end

--- @return table, or nil, err
function _M.all_bindings(params, opts)
  local c, err = default()
  if not c then return nil, err end
  return c:all_bindings(params, opts)
end

--- @return iterator over bindings
---@param params imm.ListBindingsParams
---@param opts imm.PagerOptions|nil
---@return fun(): (imm.Binding|false|nil), imm.Error|nil
function _M.bindings(params, opts)
  local c, err = default()
  if not c then return failed(err) end
  return c:bindings(params, opts)
end

--- @return iterator over pages
function _M.pages(action, params, opts)
  local c, err = default()
  if not c then return failed(err) end
  return c:pages(action, params, opts)
end

--- @return iterator over projects
---@param params imm.ListProjectsParams|nil
---@param opts imm.PagerOptions|nil
---@return fun(): (imm.Project|false|nil), imm.Error|nil
function _M.projects(params, opts)
  local c, err = default()
  if not c then return failed(err) end
  return c:projects(params, opts)
end

--- @return iterator over datasets
---@param params imm.ListDatasetsParams
---@param opts imm.PagerOptions|nil
---@return fun(): (imm.Dataset|false|nil), imm.Error|nil
function _M.datasets(params, opts)
  local c, err = default()
  if not c then return failed(err) end
  return c:datasets(params, opts)
end

-- Every other action of the schema (imm.actions) as a function of the
-- module on the default client: imm.detect_image_labels{ ... }.
for method in pairs(require("imm.actions")._actions) do
  if _M[method] == nil then
    _M[method] = function(params, opts)
      local c, err = default()
      if not c then return nil, err end
      return c[method](c, params, opts)
    end
  end
end

return _M
