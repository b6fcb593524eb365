-- Parallel listings inside nginx, for spec/17_parallel_spec.lua: a client on
-- cosockets lists a project with `concurrency` light threads and answers
-- with what it saw, as JSON.
local cjson = require "cjson"
local imm = require "imm"

local ngx = ngx
local _M = {}

function _M.run()
  local args = ngx.req.get_uri_args()
  -- hooks=1: count what the hooks saw, for every attempt of every chain
  local seen = args.hooks == "1" and { requests = 0, responses = 0, retried = 0, traceparent = 0 } or nil
  local c = assert(imm.new {
    endpoint = "http://127.0.0.1:" .. args.port,
    access_key_id = "imm-local-id", access_key_secret = "imm-local-secret",
    max_retries = tonumber(args.max_retries), pool_size = tonumber(args.pool_size),
    -- buggy=1 plants a bug (a decoder that raises) inside the light threads
    decoder = args.buggy and function() error("planted bug", 0) end or nil,
    on_request = seen and function(info)
      seen.requests = seen.requests + 1
      if info.headers.traceparent == args.traceparent then seen.traceparent = seen.traceparent + 1 end
    end or nil,
    on_response = seen and function(info)
      seen.responses = seen.responses + 1
      if info.retry then seen.retried = seen.retried + 1 end
    end or nil,
  })
  local opts = { concurrency = tonumber(args.concurrency), page_size = tonumber(args.page_size),
    prefetch = args.prefetch == "1" or nil, resume = args.resume,
    headers = args.traceparent and { traceparent = args.traceparent } or nil }
  local out = { items = {} }
  local t0 = ngx.now()
  local it, _, _, listing = c:bindings({ ProjectName = "immtest" }, opts)
  local ok, raised = pcall(function()
  for b, err in it do
    if not b then
      out.err = { code = err.code, dataset = err.dataset, next_token = err.next_token,
        attempts = err.attempts, pending = err.pending, resume = err.resume, action = err.action }
      break
    end
    out.items[#out.items + 1] = { b.DatasetName, b.URI }
    if args.break_after and #out.items >= tonumber(args.break_after) then
      if args.close == "1" then listing:close() end
      break
    end
  end
  end)
  if not ok then out.raised = tostring(raised) end
  ngx.update_time()
  out.elapsed = ngx.now() - t0
  out.hooks = seen
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode(out))
end

return _M
