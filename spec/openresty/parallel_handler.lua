-- Parallel listings inside nginx, for spec/17_parallel_spec.lua: a client on
-- cosockets lists a project with `concurrency` light threads and answers
-- with what it saw, as JSON.
local cjson = require "cjson"
local imm = require "imm"

local ngx = ngx
local _M = {}

function _M.run()
  local args = ngx.req.get_uri_args()
  local c = assert(imm.new {
    endpoint = "http://127.0.0.1:" .. args.port,
    access_key_id = "imm-local-id", access_key_secret = "imm-local-secret",
    max_retries = tonumber(args.max_retries), pool_size = tonumber(args.pool_size),
    -- buggy=1 plants a bug (a decoder that raises) inside the light threads
    decoder = args.buggy and function() error("planted bug", 0) end or nil,
  })
  local opts = { concurrency = tonumber(args.concurrency), page_size = tonumber(args.page_size),
    prefetch = args.prefetch == "1" or nil, resume = args.resume }
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
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode(out))
end

return _M
