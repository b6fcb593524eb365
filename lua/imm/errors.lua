--- Error values returned by every imm function that can fail at run time.
--
-- Every failure is `nil, err`, where `err` is a table with `code`,
-- `message`, `status`, `request_id`, `host_id`, `recommend` and
-- `retryable`, and a `__tostring` that renders it on one line.
-- Secrets never reach an error: messages are built from codes, parameter
-- names and what the service said, never from credentials.
-- @module imm.errors

local setmetatable, tostring, type, tonumber = setmetatable, tostring, type, tonumber
local format, find = string.format, string.find

local _M = {}

---@class imm.Error
---@field code string the service's code, or one of imm's (InvalidParameter, Timeout, ...)
---@field message string
---@field status integer|nil the HTTP status, when there was a reply
---@field request_id string|nil
---@field host_id string|nil
---@field recommend string|nil
---@field retryable boolean
---@field attempts integer|nil how many attempts were made (`tostring` says so when more than one)
---@field hint string|nil what to do about it, when imm can tell (also at the end of `message`)
---@field next_token string|nil from the pagers: where to resume
---@field pending { dataset: string, next_token: string|nil }[]|nil parallel listings: every dataset not finished
---@field dataset string|nil parallel listings: the dataset whose listing failed
---@field action string|nil parallel listings: "ListDatasets" when the listing of the datasets failed
---@field providers { name: string, code: string, message: string }[]|nil NoCredentials: what each provider said
---@field file string|nil InvalidConfiguration: the credentials or token file at fault
---@field line integer|nil InvalidConfiguration: the line of `file` at fault, when known
---@field resume string|nil from a parallel listing: the whole listing's state, for opts.resume
---@field phase string|nil UnsupportedPhase: the nginx phase
---@field sent boolean|nil transport failures: false when no byte of the request left
---@field binding imm.Binding|nil wait_binding: the binding as last seen
---@field state string|nil BindingFailed, BindingDeleted, TaskFailed, WaitTimeout: the state or Status last seen
---@field task table|nil wait_task: GetTask's last response
---@field task_code string|nil TaskFailed: the task's own Code
---@field task_message string|nil TaskFailed: the task's own Message
---@field response table|nil client:wait: the last response (WaitTimeout, WaitFailed, a poll's error)
---@field created table|nil the `wait` call option: the Create*Task response, when the wait failed

local Error = {}
Error.__index = Error

--- One line: code, status, message and request id.
-- @usage print(tostring(err))  -- imm: Throttling.User (HTTP 429): Request was denied... [RequestId 4B1F...]
function Error.__tostring(e)
  local s = "imm: " .. tostring(e.code)
  if e.status then s = s .. " (HTTP " .. tostring(e.status) .. ")" end
  s = s .. ": " .. tostring(e.message)
  if e.request_id then s = s .. " [RequestId " .. tostring(e.request_id) .. "]" end
  -- after retries, say so: "after 4 attempts" (unless the message does already)
  local n = e.attempts
  if type(n) == "number" and n > 1 then
    local tail = format("after %d attempts", n)
    if not find(tostring(e.message), tail, 1, true) then s = s .. " (" .. tail .. ")" end
  end
  return s
end

_M.Error = Error

--- Codes of our own (the service's codes pass through unchanged).
_M.codes = {
  InvalidParameter = "InvalidParameter",   -- a wrong type, a value out of range, an unknown name
  MissingParameter = "MissingParameter",   -- a required parameter is absent or empty
  ConnectionFailed = "ConnectionFailed",   -- DNS, connect, reset, closed mid-reply; a transport's own error
  Timeout = "Timeout",                     -- connect_timeout, timeout or the call's deadline elapsed
  TLSError = "TLSError",                   -- handshake or certificate verification
  -- the proxy refused the credentials in the proxy URL (407, SOCKS5); nothing was sent
  ProxyAuthenticationRequired = "ProxyAuthenticationRequired",
  InvalidResponse = "InvalidResponse",     -- not what the service promises (bad JSON, HTML, a looping
                                           -- NextToken, a list element that is not an object, a line too long)
  Throttling = "Throttling",               -- HTTP 429 without an IMM error body (a proxy's page, nothing)
  InvalidState = "InvalidState",           -- the client (or handle) is closed; join from inside a task
  SigningFailed = "SigningFailed",         -- the C core could not sign (OpenSSL failed)
  OutOfMemory = "OutOfMemory",             -- an allocation in the C core failed
  HTTPError = "HTTPError",                 -- libcurl could not set up a handle or transfer
  NoCredentials = "NoCredentials",         -- no provider yielded credentials
  UnsupportedPhase = "UnsupportedPhase",   -- inside nginx, in a phase without cosockets
  StubMismatch = "StubMismatch",           -- imm.stub: a request found no queued reply (tests only)
  InvalidNotification = "InvalidNotification", -- imm.notification.parse: not an IMM task notification
  -- a broken credentials file (err.file, err.line), or a blocking client called inside an async task
  InvalidConfiguration = "InvalidConfiguration",
  Cancelled = "Cancelled",                 -- the async task was cancelled (task:cancel())
  TaskError = "TaskError",                 -- an async task raised an error or yielded across imm
  WaitTimeout = "WaitTimeout",             -- a wait ran out of time (err.binding, err.task or err.response)
  BindingFailed = "BindingFailed",         -- wait_binding: the binding went Failed (err.binding)
  BindingDeleted = "BindingDeleted",       -- wait_binding: the binding went Deleted (err.binding)
  TaskFailed = "TaskFailed",               -- wait_task: the task Failed (err.task_code, err.task_message, err.task)
  WaitFailed = "WaitFailed",               -- client:wait: the fail option matched (err.response)
}

-- Transport failures that are safe to repeat for a read-only call.
local retryable_codes = {
  ConnectionFailed = true, Timeout = true,
  ServiceUnavailable = true, InternalError = true,
  -- a request sent again with the nonce it had (a retry below imm): every
  -- attempt is signed afresh, so a read goes again with a new nonce
  SignatureNonceUsed = true,
}

--- Is a failure with this code and HTTP status worth another attempt?
-- Connection failures, timeouts, 5xx, `Throttling*`, `ServiceUnavailable`,
-- `InternalError` and `SignatureNonceUsed`; never other 4xx validation or authentication errors.
function _M.is_retryable(code, status)
  if retryable_codes[code] then return true end
  if type(code) == "string" and find(code, "^Throttling") then return true end
  if status and status >= 500 then return true end
  return false
end

--- Builds an error value.
-- @tparam string code
-- @tparam string message
-- @tparam[opt] table fields extra fields (`status`, `request_id`, ...)
-- @treturn table err
function _M.new(code, message, fields)
  local e = { code = code, message = message }
  if fields then
    for k, v in pairs(fields) do e[k] = v end
  end
  if e.retryable == nil then
    e.retryable = _M.is_retryable(code, e.status)
  end
  return setmetatable(e, Error)
end

--- Is `v` an imm error value?
function _M.is_error(v)
  return type(v) == "table" and getmetatable(v) == Error
end

--- Bad input found before sending: never retryable.
function _M.invalid(message, code)
  return _M.new(code or "InvalidParameter", message, { retryable = false })
end

--- The error for a non-2xx reply. `body` is what the decoder made of the
-- reply (a table when it was a JSON object, else nil).
function _M.from_service(status, headers, body, raw)
  local request_id = headers and headers["x-acs-request-id"]
  if type(body) == "table" and type(body.Code) == "string" then
    return _M.new(body.Code, tostring(body.Message or body.Code), {
      status = status,
      request_id = body.RequestId or request_id,
      host_id = body.HostId,
      recommend = body.Recommend,
    })
  end
  -- Not the service's error shape: a proxy page, an empty body, ...
  local ctype = headers and headers["content-type"] or "no content type"
  return _M.new("InvalidResponse",
    format("HTTP %d with a body that is not an IMM error (%s, %d bytes)",
      status, ctype, raw and #raw or 0),
    { status = status, request_id = request_id })
end

--- Retry-After hint, in seconds, from `x-acs-retry-after` (ms) or
-- `Retry-After` (seconds), or nil.
function _M.retry_after(headers)
  if not headers then return nil end
  local ms = tonumber(headers["x-acs-retry-after"])
  if ms and ms >= 0 then return ms / 1000 end
  local s = tonumber(headers["retry-after"])
  if s and s >= 0 then return s end
  return nil
end

return _M
