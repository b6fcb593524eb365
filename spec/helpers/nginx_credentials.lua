-- Test fixture: a real nginx with ngx_lua serving
-- spec/helpers/credentials_handler.lua at /credentials (see helpers.nginx).
local nginx = require "helpers.nginx"

local M = {}

--- Starts nginx; returns an object with url, get(path), error_log() and stop().
function M.start()
  return nginx.run {
    locations = [[location = /credentials { content_by_lua_block { require("helpers.credentials_handler").get() } }
      location = /call { content_by_lua_block { require("helpers.credentials_handler").call() } }
      location = /external { content_by_lua_block { require("helpers.credentials_handler").external() } }]],
  }
end

return M
