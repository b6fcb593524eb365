#!/bin/sh
# make host-check: the example C host (examples/host), which embeds Lua 5.4
# and libimm.a, against the local IMM server:
#   1. `host list`: one state prints the project's bindings;
#   2. `host threads 4`: four threads, each with its own lua_State and
#      client, list at the same time and must all count what the server holds;
#   3. the same, host and libimm.a built with -fsanitize=thread: any report
#      fails the check (halt_on_error, exit code 66);
#   4. the same under valgrind memcheck: any error or definite/indirect leak
#      fails it (exit code 42);
#   5. the host built with LuaJIT (the 5.1 API, no luaL_requiref): list,
#      threads and frame. (LuaJIT's own allocator and JIT confuse TSan and
#      valgrind without a build of LuaJIT made for them: not run there.)
# The host runs from an empty directory with LUA_PATH and LUA_CPATH pointing
# nowhere, so every imm module must come from libimm.a and nothing else may
# be needed on disk (no cjson.so).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
project=immtest
threads=4
# what the server will hold, counted independently of imm
expected=$(python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
print(sum(1 for b in d["Bindings"] if b["ProjectName"] == sys.argv[2]))' tools/sample_bindings.json $project)

echo "imm: building the example host (examples/host): Lua 5.4, with ThreadSanitizer, LuaJIT"
make --no-print-directory -C examples/host >/dev/null
make --no-print-directory -C examples/host SAN=thread >/dev/null
make --no-print-directory -C examples/host LUA=luajit >/dev/null

run=$(mktemp -d)
trap 'rm -rf "$run"' EXIT
export HOST="$top/build/host/host" HOST_TSAN="$top/build/host-thread/host" HOST_JIT="$top/build/host-luajit/host" \
  PROJECT=$project THREADS=$threads EXPECTED=$expected RUN="$run" \
  LUA_PATH="/nonexistent/?.lua" LUA_PATH_5_4="/nonexistent/?.lua" \
  LUA_CPATH="/nonexistent/?.so" LUA_CPATH_5_4="/nonexistent/?.so" \
  no_proxy=127.0.0.1,localhost NO_PROXY=127.0.0.1,localhost \
  ALIBABA_CLOUD_ECS_METADATA_DISABLED=true

# shellcheck disable=SC2016
sh tools/with-server.sh sh -c '
  set -u
  cd "$RUN"
  fail() { echo "imm: host-check FAILED: $*" >&2; exit 1; }

  "$HOST" list "$PROJECT" "$EXPECTED" >list.out 2>&1 || { cat list.out; fail "host list"; }
  tail -1 list.out
  grep -qx "$EXPECTED bindings in project $PROJECT" list.out || fail "host list printed the wrong count"

  "$HOST" threads "$THREADS" "$PROJECT" "$EXPECTED" >threads.out 2>&1 || { cat threads.out; fail "host threads"; }
  cat threads.out
  grep -q "^concurrent: yes" threads.out || fail "the $THREADS listings did not run at the same time"

  "$HOST" frame 10 "$PROJECT" "$EXPECTED" >frame.out 2>&1 || { cat frame.out; fail "host frame"; }
  cat frame.out
  # ten listings of 11 pages each: a loop that waited for replies in
  # poll(0) would run about one frame per reply
  frames=$(sed -n "s/^\([0-9]*\) frames.*/\1/p" frame.out)
  [ "${frames:-0}" -gt 500 ] || fail "the frame loop turned only ${frames:-0} times"

  echo "imm: host threads $THREADS under ThreadSanitizer"
  TSAN_OPTIONS="halt_on_error=1 exitcode=66" \
    "$HOST_TSAN" threads "$THREADS" "$PROJECT" "$EXPECTED" >tsan.out 2>&1
  rc=$?
  [ $rc -eq 0 ] || { cat tsan.out; fail "under TSan (exit $rc; 66 is a TSan report)"; }
  grep -q "ThreadSanitizer" tsan.out && { cat tsan.out; fail "TSan printed a report"; }
  head -1 tsan.out

  echo "imm: host threads $THREADS under valgrind"
  valgrind -q --error-exitcode=42 --leak-check=full --errors-for-leak-kinds=definite,indirect \
    --show-leak-kinds=definite,indirect "$HOST" threads "$THREADS" "$PROJECT" "$EXPECTED" >vg.out 2>&1
  rc=$?
  [ $rc -eq 0 ] || { cat vg.out; fail "under valgrind (exit $rc; 42 is a memcheck error or leak)"; }
  head -1 vg.out

  echo "imm: the host built with LuaJIT"
  "$HOST_JIT" list "$PROJECT" "$EXPECTED" >jit-list.out 2>&1 || { cat jit-list.out; fail "LuaJIT host list"; }
  tail -1 jit-list.out
  "$HOST_JIT" threads "$THREADS" "$PROJECT" "$EXPECTED" >jit-threads.out 2>&1 ||
    { cat jit-threads.out; fail "LuaJIT host threads"; }
  cat jit-threads.out
  grep -q "^concurrent: yes" jit-threads.out || fail "the $THREADS LuaJIT listings did not run at the same time"
  "$HOST_JIT" frame 10 "$PROJECT" "$EXPECTED" >jit-frame.out 2>&1 || { cat jit-frame.out; fail "LuaJIT host frame"; }
  cat jit-frame.out
  frames=$(sed -n "s/^\([0-9]*\) frames.*/\1/p" jit-frame.out)
  [ "${frames:-0}" -gt 500 ] || fail "the LuaJIT frame loop turned only ${frames:-0} times"
'
echo "imm: host-check passed"
