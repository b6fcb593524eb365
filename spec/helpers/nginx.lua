-- Test fixture: a real nginx with ngx_lua (Debian's nginx +
-- libnginx-mod-http-lua + lua-resty-core) on loopback, loading imm from the
-- working tree (the LuaJIT build) and the handlers in spec/openresty/.
local core = require "imm.core"
local fixture = require "helpers.fixture"

local M = {}

local MODULES = "/usr/lib/nginx/modules"

local sh = fixture.sh

local function free_port()
  -- ask the kernel for a free port through a throwaway python socket
  local p = io.popen("env -u LD_PRELOAD python3 -c 'import socket; s=socket.socket(); "
    .. "s.bind((\"127.0.0.1\", 0)); print(s.getsockname()[1])'")
  local port = tonumber(p:read("*l"))
  p:close()
  return port
end

--- Starts an nginx with ngx_lua that loads imm from the working tree.
-- opts.http: extra lines for the http block; opts.locations: the server
-- block's body; opts.env: main-level `env` lines; opts.trusted: a CA file for
-- lua_ssl_trusted_certificate; opts.workers: worker processes (1; more listen
-- with reuseport, so the kernel spreads connections over them). Returns an
-- object with url, get(path), raw(path), error_log() and stop().
function M.run(opts)
  local repo = fixture.cwd()
  local so = repo .. "/build/luajit/imm/core.so"
  assert(io.open(so), "the LuaJIT build of imm.core is missing: run `make build LUA=luajit`")
  local dir = fixture.tmpdir()
  local port = free_port()
  local lua_path = table.concat({ "lua/?.lua", "lua/?/init.lua", "spec/?.lua", "spec/openresty/?.lua",
    "examples/openresty/?.lua" }, ";" .. repo .. "/")
  -- One pass over the template: the values put in (paths from mktemp, the
  -- caller's http and locations text) are never scanned for placeholders
  -- again, so a temporary directory named /tmp/tmp.xyzDIRabc stays as it is.
  local values = {
    MODULES = MODULES,
    ENV = opts.env or "",
    TRUST = opts.trusted and ("lua_ssl_trusted_certificate " .. opts.trusted .. "; lua_ssl_verify_depth 3;") or "",
    HTTP = opts.http or "",
    LOCATIONS = opts.locations or "",
    LUAPATH = repo .. "/" .. lua_path,
    WORKERS = tostring(opts.workers or 1),
    REUSEPORT = (opts.workers or 1) > 1 and "reuseport" or "",
    DIR = dir, REPO = repo, PORT = tostring(port),
  }
  local conf = ([[
load_module @MODULES@/ndk_http_module.so;
load_module @MODULES@/ngx_http_lua_module.so;
@ENV@
user root root;
daemon on;
master_process on;
worker_processes @WORKERS@;
# a graceful stop (SIGQUIT) waits for clients' idle keep-alive connections,
# such as a shared multi's: bounded, so stop() never outlasts its 5 s wait
worker_shutdown_timeout 1s;
pid @DIR@/nginx.pid;
error_log @DIR@/error.log info;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path @DIR@/tmp; proxy_temp_path @DIR@/tmp; fastcgi_temp_path @DIR@/tmp;
  uwsgi_temp_path @DIR@/tmp; scgi_temp_path @DIR@/tmp;
  lua_package_path "@LUAPATH@;;";
  lua_package_cpath "@REPO@/build/luajit/?.so;;";
  @TRUST@
  @HTTP@
  server {
    listen 127.0.0.1:@PORT@ @REUSEPORT@;
    @LOCATIONS@
  }
}
]]):gsub("@(%u+)@", function(name) return assert(values[name], name) end)
  sh("mkdir -p " .. dir .. "/tmp " .. dir .. "/logs")
  local f = assert(io.open(dir .. "/nginx.conf", "w"))
  f:write(conf)
  f:close()
  assert(sh("nginx -p " .. dir .. " -c " .. dir .. "/nginx.conf -e " .. dir .. "/error.log"),
    "nginx failed to start:\n" .. (fixture.read(dir .. "/error.log") or ""))
  local ngx_srv = { dir = dir, port = port, url = "http://127.0.0.1:" .. port,
    http = assert(core.http { timeout = 30 }) }
  for _ = 1, 100 do  -- any HTTP answer means nginx is up
    local status = ngx_srv.http:request("GET", ngx_srv.url .. "/", {}, "")
    if status then break end
    core.sleep(0.05)
  end
  --- GET a path on nginx; returns the decoded JSON body.
  function ngx_srv.get(path)
    local status, body = ngx_srv.http:request("GET", ngx_srv.url .. path, {}, "")
    assert(status == 200, "nginx " .. path .. " -> " .. tostring(status) .. " " .. tostring(body)
      .. "\n" .. (fixture.read(dir .. "/error.log") or ""):sub(-2000))
    return require("cjson").decode(body)
  end
  --- GET a path, with header lines if given; returns status and raw body.
  function ngx_srv.raw(path, headers)
    local status, body = ngx_srv.http:request("GET", ngx_srv.url .. path, headers or {}, "")
    return status, body
  end
  function ngx_srv.error_log() return fixture.read(dir .. "/error.log") or "" end
  function ngx_srv.stop()
    ngx_srv.http:close()
    local pid = fixture.read(dir .. "/nginx.pid")
    if pid then fixture.kill(pid:match("%d+"), "QUIT") end
    sh("rm -rf " .. dir)
  end
  return ngx_srv
end

--- The nginx of spec/06: the handlers in spec/openresty/ and the example.
-- opts.trusted and opts.env as for run.
function M.start(opts)
  opts = opts or {}
  return M.run {
    env = opts.env, trusted = opts.trusted,
    http = [[lua_shared_dict imm_test 1m;
  lua_shared_dict imm_metrics 1m;
  init_by_lua_block {
    require("handler").init()
    -- the example's gateway limits, short enough for a spec
    local o = require("imm_bindings").options
    o.timeout, o.deadline = 1, 2.5
  }]],
    locations = [[location = /call { content_by_lua_block { require("handler").call() } }
    location = /timer { content_by_lua_block { require("handler").timer() } }
    location = /init { content_by_lua_block { require("handler").init_result() } }
    location = /logphase {
      content_by_lua_block { ngx.say("ok") }
      log_by_lua_block { require("handler").log_phase() }
    }
    location = /headerphase {
      content_by_lua_block { ngx.say("ok") }
      header_filter_by_lua_block { require("handler").header_phase() }
    }
    location = /shared { content_by_lua_block { require("handler").shared() } }
    location = /bindings { content_by_lua_block { require("imm_bindings").list() } }
    location = /metrics { content_by_lua_block { require("imm_bindings").metrics() } }]],
  }
end

return M
