#!/bin/sh
# make love-check: the LÖVE example (examples/love) in a real LÖVE 11, on a
# virtual X display (xvfb-run; mesa's software OpenGL), against the local IMM
# server with replies slowed to 0.2 s each. It must list every binding of
# the project, and its frames must keep coming while the listing runs:
# a blocking call in love.update would give about one frame per page.
# LÖVE runs LuaJIT, so the LuaJIT build of imm.core is the one loaded.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
project=immtest
for cmd in love xvfb-run; do
  command -v $cmd >/dev/null 2>&1 || { echo "imm: love-check needs $cmd (sh tools/install-deps.sh test)" >&2; exit 1; }
done
expected=$(python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
print(sum(1 for b in d["Bindings"] if b["ProjectName"] == sys.argv[2]))' tools/sample_bindings.json $project)
pages=$(( (expected + 49) / 50 ))

export LUA_PATH="$top/lua/?.lua;$top/lua/?/init.lua;;" LUA_CPATH="$top/build/luajit/?.so;;" \
  PROJECT=$project EXPECTED=$expected PAGES=$pages \
  no_proxy=127.0.0.1,localhost NO_PROXY=127.0.0.1,localhost ALIBABA_CLOUD_ECS_METADATA_DISABLED=true
# shellcheck disable=SC2016
sh tools/with-server.sh sh -c '
  set -u
  fail() { echo "imm: love-check FAILED: $*" >&2; exit 1; }
  curl -sf -X POST -d "{\"mode\": \"slow\", \"delay\": 0.2, \"count\": -1}" "$IMM_ENDPOINT/_imm/faults" >/dev/null ||
    fail "cannot slow the local server down"
  out=$(mktemp)
  timeout 120 xvfb-run -a love examples/love "$PROJECT" --quit >"$out" 2>&1
  rc=$?
  grep -v "^ALSA lib\|^AL lib" "$out" || true
  [ $rc -eq 0 ] || fail "love exited with status $rc"
  grep -qx "$EXPECTED bindings in project $PROJECT" "$out" || fail "the game did not list $EXPECTED bindings"
  frames=$(sed -n "s/^\([0-9]*\) frames in .*/\1/p" "$out")
  [ "${frames:-0}" -gt $((PAGES * 3)) ] ||
    fail "only ${frames:-0} frames while $PAGES slow pages arrived: love.update blocked"
  rm -f "$out"
'
echo "imm: love-check passed"
