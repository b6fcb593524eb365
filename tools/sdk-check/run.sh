#!/bin/sh
# Checks the local IMM server (server/imm_server/) against the official Alibaba Cloud Node.js SDK core
# (@alicloud/openapi-client, version pinned in package.json / package-lock.json).
#
#   sh tools/sdk-check/run.sh          (from anywhere; needs python3, node >= 18, npm)
#
# Installs the pinned packages from package-lock.json (npm ci) if node_modules is
# missing or lacks one of them, starts the local server on a free loopback port with its default data
# and demo credentials, runs check.js against it, then runs
# sdkdiff.js (imm against the official SDK core, every action, through a
# recorder of its own; needs the module built: make build), and exits non-zero
# if either failed (the server is stopped on exit).  IMM_LUA (default lua5.4) and IMM_CPATH (default
# build/$IMM_LUA/?.so, from the repository root) say which imm to run;
# SDK_DIFF=0 skips sdkdiff.js.  Set NODE to use another node binary; IMM_ACCESS_KEY_ID /
# IMM_ACCESS_KEY_SECRET to use another key pair (given to both server and check).
# Nothing but 127.0.0.1 and the npm registry (for npm ci) is contacted.
# node_modules/ here must not be committed.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
node=${NODE:-node}
key_id=${IMM_ACCESS_KEY_ID:-imm-local-id}
key_secret=${IMM_ACCESS_KEY_SECRET:-imm-local-secret}
# imm for sdkdiff.js: the runtime and the built imm.core (the Makefile passes both;
# run from the repository root otherwise, after make build)
imm_lua=${IMM_LUA:-lua5.4}
imm_cpath=${IMM_CPATH:-build/$imm_lua/?.so}

if [ "${SDK_CHECK:-1}" = 0 ]; then
  echo "sdk-check: skipped (SDK_CHECK=0)"
  exit 0
fi

# Every package pinned in package.json, installed? (an older checkout's node_modules may lack some)
installed() {
  (cd "$here" && "$node" -e '
    const deps = Object.keys(require("./package.json").dependencies);
    for (const d of deps) require.resolve(d + "/package.json");' 2>/dev/null)
}

if [ ! -d "$here/node_modules" ] || ! installed; then
  echo "sdk-check: installing the pinned SDK packages (npm ci, from the npm registry)"
  if ! (cd "$here" && npm ci --no-audit --no-fund); then
    cat >&2 <<'MSG'
sdk-check: npm ci failed. This check needs HTTPS access to the npm registry once,
  to install the official SDK pinned in tools/sdk-check/package-lock.json.
  Behind a TLS-inspecting proxy, add the proxy's CA to the system store
  (update-ca-certificates) or point npm at it (npm config set cafile FILE).
  To run every other check without it: make test SDK_CHECK=0
MSG
    exit 1
  fi
fi

tmp=$(mktemp -d)
pid=
check_pid=
cleanup() {
  if [ -n "$check_pid" ]; then
    kill "$check_pid" 2>/dev/null || true
    wait "$check_pid" 2>/dev/null || true
  fi
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cd "$root"
python3 server/imm_server --host 127.0.0.1 --port 0 --port-file "$tmp/port" --quiet \
  --access-key-id "$key_id" --access-key-secret "$key_secret" >"$tmp/server.log" 2>&1 &
pid=$!
i=0
while [ ! -s "$tmp/port" ]; do
  i=$((i + 1))
  if [ $i -gt 100 ] || ! kill -0 "$pid" 2>/dev/null; then
    echo "sdk-check: the local IMM server did not start:" >&2
    cat "$tmp/server.log" >&2
    exit 1
  fi
  sleep 0.1
done
port=$(cat "$tmp/port")
echo "sdk-check: local IMM server on 127.0.0.1:$port"

# In the background and waited for, so a TERM/INT to this script is acted on at once.
"$node" "$here/check.js" "127.0.0.1:$port" "$key_id" "$key_secret" &
check_pid=$!
rc=0
wait "$check_pid" || rc=$?
check_pid=

# Every action, called by the SDK core against the server (actions.js).
echo "sdk-check: every action through the official SDK core against the local IMM server (actions.js)"
"$node" "$here/actions.js" "127.0.0.1:$port" "$key_id" "$key_secret" &
check_pid=$!
wait "$check_pid" || rc=$?
check_pid=

# The differential check: every action sent by the SDK core and by imm to a
# recorder of its own (sdkdiff.js starts it), compared request by request.
if [ "${SDK_DIFF:-1}" = 0 ]; then
  echo "sdk-check: sdkdiff skipped (SDK_DIFF=0)"
  exit $rc
fi
echo "sdk-check: imm against the official SDK core, every action (sdkdiff.js, $imm_lua, $imm_cpath)"
"$node" "$here/sdkdiff.js" --lua "$imm_lua" --cpath "$imm_cpath" &
check_pid=$!
diff_rc=0
wait "$check_pid" || diff_rc=$?
check_pid=
[ $rc -ne 0 ] && exit $rc
exit $diff_rc
