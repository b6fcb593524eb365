#!/bin/sh
# Proves the rockspecs install with LuaRocks alone for Lua 5.4 and 5.1, that
# `require "imm"` then works from a clean shell that knows only `luarocks
# path`, that `imm-server` starts the local IMM server from the tree, and
# that the build leaves nothing in the module path of the checkout (no
# ./imm/core.so that a `lua` started there would load instead).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
server=
trap 'if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; fi; rm -rf "$work"' EXIT
# a copy of what a release tarball holds, so the check sees what LuaRocks writes
mkdir -p "$work/src/tools"
cp -r "$top/imm-scm-1.rockspec" "$top/rockspecs" "$top/Makefile" "$top/lua" "$top/src" "$top/include" \
  "$top/bin" "$top/server" "$top/api" "$work/src/"
cp "$top/tools/sample_bindings.json" "$top/tools/embed_lua.py" "$top/tools/install-lua.sh" "$work/src/tools/"
version=$(sed -n 's/^local VERSION = "\(.*\)"$/\1/p' "$top/lua/imm/client.lua")
for v in 5.4 5.1; do
  # the release rockspec for 5.4, the checkout's for 5.1: both are exercised
  spec=imm-scm-1.rockspec
  [ "$v" = 5.4 ] && spec=rockspecs/imm-$version-1.rockspec
  echo "imm: luarocks make $spec for Lua $v"
  tree="$work/tree-$v"
  (cd "$work/src" && luarocks --lua-version="$v" make --tree="$tree" --deps-mode=none \
      "$spec" >"$work/luarocks-$v.log" 2>&1) || { cat "$work/luarocks-$v.log"; exit 1; }
  stray=$(cd "$work/src" && find . -path ./build -prune -o \( -name '*.so' -o -name '*.o' -o -name '*.a' \) -print)
  if [ -n "$stray" ] || [ -e "$work/src/imm" ]; then
    echo "imm: rockspec-check FAILED: the build left products outside build/: $stray" >&2
    exit 1
  fi
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
  # the installed command starts the installed server (not the checkout's)
  "$tree/bin/imm-server" --port 0 --port-file "$work/port-$v" --quiet >"$work/server-$v.log" 2>&1 &
  server=$!
  i=0
  while [ ! -s "$work/port-$v" ]; do
    i=$((i + 1))
    [ $i -le 100 ] && kill -0 "$server" 2>/dev/null || { cat "$work/server-$v.log"; echo "imm: imm-server did not start" >&2; exit 1; }
    sleep 0.1
  done
  tr "\\0" "\\n" <"/proc/$server/cmdline" | grep -q "^$tree/bin/../share/lua/$v/imm/server/imm_server$" ||
    { echo "imm: imm-server did not run the installed imm_server package" >&2; exit 1; }
  curl -sf "http://127.0.0.1:$(cat "$work/port-$v")/_imm/health" | grep -q '"ok"' ||
    { echo "imm: the installed imm-server does not answer" >&2; exit 1; }
  kill "$server"; wait "$server" 2>/dev/null || true; server=
  echo "imm: imm-server from the Lua $v tree answers"
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
"$dest/usr/bin/imm-server" --help 2>&1 | grep -q "^usage: imm_server" ||
  { echo "imm: imm-server under DESTDIR does not find its server" >&2; exit 1; }
head -1 "$dest/usr/bin/imm" | grep -qx '#!/usr/bin/env lua5.4' ||
  { echo "imm: bin/imm installed without the runtime in its first line" >&2; exit 1; }
echo "imm: imm and imm-server installed under DESTDIR"

# no install at all: eval "$(make env)" in a clean shell, from another directory
for l in lua5.4 luajit; do
  (cd "$work" && env -i PATH="$PATH" HOME="$work" sh -c "
    set -e
    eval \"\$(make -s -C '$top' env LUA=$l 2>/dev/null)\"
    $l -e 'local imm = require \"imm\"; assert(require(\"imm.core\")._VERSION == imm._VERSION)'
    imm --version | grep -q '^imm $version '
    imm-server --help | grep -q '^usage: imm_server'
  ") || { echo "imm: eval \"\$(make env LUA=$l)\" does not give a working imm" >&2; exit 1; }
  echo "imm: eval \"\$(make env LUA=$l)\": the module, imm and imm-server from the checkout"
done
