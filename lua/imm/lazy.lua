-- A module loaded on first use: `local parallel = lazy "imm.parallel"` is a
-- stand-in whose first field read requires the module, then forwards every
-- read to it. It keeps `require "imm"` from compiling code that a program
-- may never run (parallel listings, async tasks, waiters).
local require, setmetatable = require, setmetatable

return function(name)
  return setmetatable({}, { __index = function(t, k)
    local m = require(name)
    setmetatable(t, { __index = m })
    return m[k]
  end })
end
