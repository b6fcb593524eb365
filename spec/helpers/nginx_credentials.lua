-- Test fixture: a real nginx with ngx_lua on loopback, one worker, serving
-- spec/helpers/credentials_handler.lua at /credentials. It loads imm from
-- the working tree (the LuaJIT build), like spec/helpers/nginx.lua.
local core = require "imm.core"
local fixture = require "helpers.fixture"

local M = {}

local function free_port()
  local p = io.popen("env -u LD_PRELOAD python3 -c 'import socket; s=socket.socket(); "
    .. "s.bind((\"127.0.0.1\", 0)); print(s.getsockname()[1])'")
  local port = tonumber(p:read("*l"))
  p:close()
  return port
end

--- Starts nginx; returns an object with url, get(path), error_log() and stop().
function M.start()
  local repo = fixture.cwd()
  assert(io.open(repo .. "/build/luajit/imm/core.so"),
    "the LuaJIT build of imm.core is missing: run `make build LUA=luajit`")
  local dir = fixture.tmpdir()
  local port = free_port()
  local conf = ([[
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
user root root;
daemon on;
master_process on;
worker_processes 1;
pid DIR/nginx.pid;
error_log DIR/error.log info;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path DIR/tmp; proxy_temp_path DIR/tmp; fastcgi_temp_path DIR/tmp;
  uwsgi_temp_path DIR/tmp; scgi_temp_path DIR/tmp;
  lua_package_path "REPO/lua/?.lua;REPO/lua/?/init.lua;REPO/spec/?.lua;;";
  lua_package_cpath "REPO/build/luajit/?.so;;";
  server {
    listen 127.0.0.1:PORT;
    location = /credentials { content_by_lua_block { require("helpers.credentials_handler").get() } }
  }
}
]]):gsub("DIR", dir):gsub("REPO", repo):gsub("PORT", tostring(port))
  fixture.sh("mkdir -p " .. dir .. "/tmp")
  local f = assert(io.open(dir .. "/nginx.conf", "w"))
  f:write(conf)
  f:close()
  assert(fixture.sh("nginx -p " .. dir .. " -c " .. dir .. "/nginx.conf -e " .. dir .. "/error.log"),
    "nginx failed to start:\n" .. (fixture.read(dir .. "/error.log") or ""))
  local srv = { dir = dir, port = port, url = "http://127.0.0.1:" .. port }
  for _ = 1, 100 do
    local h = core.http { timeout = 2 }
    local status = h:request("GET", srv.url .. "/nope", {}, "")
    h:close()
    if status then break end
    core.sleep(0.05)
  end
  function srv.error_log() return fixture.read(dir .. "/error.log") or "" end
  function srv.stop()
    local pid = fixture.read(dir .. "/nginx.pid")
    if pid then fixture.kill(pid:match("%d+"), "QUIT") end
    fixture.sh("rm -rf " .. dir)
  end
  return srv
end

return M
