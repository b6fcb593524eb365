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
cp -r "$top/imm-scm-1.rockspec" "$top/lua" "$top/src" "$top/bin" "$work/src/"
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

# make install, as a distribution would run it: PREFIX and DESTDIR
echo "imm: make install PREFIX=/usr DESTDIR=... for Lua 5.4"
dest="$work/destdir"
make -C "$top" --no-print-directory install LUA=lua5.4 PREFIX=/usr DESTDIR="$dest" >"$work/install.log" 2>&1 ||
  { cat "$work/install.log"; exit 1; }
(cd "$work" && env -i PATH="$PATH" \
  LUA_PATH="$dest/usr/share/lua/5.4/?.lua;/usr/share/lua/5.4/?.lua" \
  LUA_CPATH="$dest/usr/lib/lua/5.4/?.so;/usr/lib/x86_64-linux-gnu/lua/5.4/?.so" \
  lua5.4 -e 'local imm = require "imm"; assert(require("imm.core")._VERSION == imm._VERSION)
    assert(require("imm.transport.ngx")); print("imm: installed under DESTDIR: " .. imm._VERSION)')
