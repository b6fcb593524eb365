#!/bin/sh
# Runs a busted command, shows its output, and ends with one plain
# "LABEL: N passed, N failed" line (errors count as failures). The exit
# status is busted's own.
# Usage: sh tools/run-specs.sh LABEL COMMAND...
label=$1
shift
log=$(mktemp)
{ "$@" 2>&1; echo $? >"$log.rc"; } | tee "$log"
rc=$(cat "$log.rc")
counts=$(sed 's/\x1b\[[0-9;]*m//g' "$log" |
  sed -n 's/^\([0-9]*\) success\(es\)\{0,1\} \/ \([0-9]*\) failures* \/ \([0-9]*\) errors*.*/\1 \3 \4/p' | tail -n 1)
rm -f "$log" "$log.rc"
if [ -z "$counts" ]; then
  echo "$label: busted printed no summary (exit $rc)"
  [ "$rc" -ne 0 ] && exit "$rc"
  exit 1
fi
set -- $counts
echo "$label: $1 passed, $(($2 + $3)) failed"
exit "$rc"
