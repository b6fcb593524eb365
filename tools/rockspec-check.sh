#!/bin/sh
# Proves the rockspec installs with LuaRocks alone (no Makefile) for Lua 5.4
# and 5.1, and that `require "imm"` then works from a clean shell that knows
# only `luarocks path`.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# LuaRocks' builtin backend writes objects beside the sources: build a copy
mkdir "$work/src"
cp -r "$top/imm-scm-1.rockspec" "$top/lua" "$top/src" "$work/src/"
for v in 5.4 5.1; do
  echo "imm: luarocks make for Lua $v"
  tree="$work/tree-$v"
  (cd "$work/src" && luarocks --lua-version="$v" make --tree="$tree" --deps-mode=none \
      imm-scm-1.rockspec >"$work/luarocks-$v.log" 2>&1) || { cat "$work/luarocks-$v.log"; exit 1; }
  (cd "$work" && env -i PATH="$PATH" HOME="$work" sh -c "
      eval \"\$(luarocks --lua-version=$v --tree='$tree' path)\"
      lua$v -e '
        local imm = require \"imm\"
        local core = require \"imm.core\"
        local found
        for t in package.path:gmatch(\"[^;]+\") do
          local f = io.open((t:gsub(\"?\", \"imm\")))
          if f then f:close(); found = t; break end
        end
        assert(found and found:find(\"$tree\", 1, true), \"imm not found in the tree\")
        assert(imm._VERSION == core._VERSION, \"version mismatch\")
        local c = assert(imm.new{ region = \"cn-hangzhou\", access_key_id = \"a\", access_key_secret = \"b\" })
        print(\"imm: installed \" .. imm._VERSION .. \" for \" .. _VERSION .. \": \" .. tostring(c))'")
done
