#!/bin/sh
# Runs a command against a freshly started local IMM server, then stops it.
# Usage: sh tools/with-server.sh CMD [ARGS...]
# The command sees IMM_ENDPOINT and the server's demo credentials in
# ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
python3 "$here/../server/imm_server" --port 0 --port-file "$tmp/port" --quiet >"$tmp/log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT INT TERM
i=0
while [ ! -s "$tmp/port" ]; do
  i=$((i + 1))
  if [ $i -gt 100 ] || ! kill -0 $pid 2>/dev/null; then
    echo "imm: the local IMM server did not start:" >&2
    cat "$tmp/log" >&2
    exit 1
  fi
  sleep 0.1
done
port=$(cat "$tmp/port")
echo "imm: local IMM server on http://127.0.0.1:$port"
IMM_ENDPOINT="http://127.0.0.1:$port" \
ALIBABA_CLOUD_ACCESS_KEY_ID=imm-local-id \
ALIBABA_CLOUD_ACCESS_KEY_SECRET=imm-local-secret \
  "$@"
