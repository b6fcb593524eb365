#!/bin/sh
# Installs one Lua module as precompiled bytecode when the runtime can load
# it, else as source: tools/install-lua.sh LUA REL DEST
#   LUA   the interpreter the module is for (LuaRocks passes its full path)
#   REL   the module's path under lua/ (imm/client.lua): the chunk's name,
#         so errors and tracebacks name the file as the source does
#   DEST  where it goes
# Bytecode skips compiling at require (half of `require "imm"`); it keeps
# the debug information, so error messages carry the same lines.
# IMM_BYTECODE: 1 compiles, 0 installs the source, auto (the default)
# compiles for Lua 5.2-5.4 only: Lua 5.1 and LuaJIT share one module
# directory (share/lua/5.1), and each refuses the other's bytecode, so there
# only IMM_BYTECODE=1 compiles (e.g. into OpenResty's lualib, LuaJIT's own).
# When no matching compiler is found or the runtime rejects what it wrote,
# the source is installed. The *_meta.lua files (annotations for editors and
# LDoc, never loaded) stay source.
set -eu
lua=$1 rel=$2 dest=$3
tmp="$dest.tmp.$$"
trap 'rm -f "$tmp"' EXIT
name=$(basename "$lua")
ok=
want=${IMM_BYTECODE:-auto}
if [ "$want" = auto ]; then
  case $name in luajit*|lua5.1|lua51) want=0 ;; *) want=1 ;; esac
fi
case $rel in *_meta.lua) want=0 ;; esac
if [ "$want" = 1 ]; then
  case $name in
    luajit*) (cd lua && "$lua" -bg "$rel" "$tmp") 2>/dev/null && ok=1 ;;
    lua*) luac=$(dirname "$lua")/$(echo "$name" | sed 's/^lua/luac/')
          [ -x "$luac" ] || luac=$(command -v "$(echo "$name" | sed 's/^lua/luac/')" || true)
          [ -n "$luac" ] && (cd lua && "$luac" -o "$tmp" "$rel") 2>/dev/null && ok=1 ;;
  esac
  # a luac of another minor version writes chunks this runtime refuses
  [ -n "$ok" ] && "$lua" -e "assert(loadfile('$tmp'))" 2>/dev/null || ok=
fi
if [ -n "$ok" ]; then
  install -m 644 "$tmp" "$dest"
else
  install -m 644 "lua/$rel" "$dest"
fi
