#!/bin/bash
# Runs named commands side by side, at most JOBS at a time, each into its own
# log (LOGDIR/NAME.log), so their output never interleaves. Prints one line
# per command as it ends (status, seconds, the log's last line: the specs'
# "LABEL: N passed, N failed"), then the whole log of each that failed.
# Exit status 1 if any failed.
# Usage: bash tools/parallel.sh LOGDIR JOBS NAME COMMAND [NAME COMMAND ...]

logdir=$1 jobs=$2
shift 2
mkdir -p "$logdir"
declare -A start name_of
failed=()
report() {  # $1: pid, $2: its status
  local n=${name_of[$1]} log="$logdir/${name_of[$1]}.log" t=$(( $(date +%s) - ${start[$1]} ))
  local last
  last=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -v '^\s*$' | tail -n 1)
  if [ "$2" -eq 0 ]; then
    printf 'imm: %-20s ok      %4ss  %s\n' "$n" "$t" "$last"
  else
    printf 'imm: %-20s FAILED  %4ss  %s (%s)\n' "$n" "$t" "$last" "$log"
    failed+=("$n")
  fi
}
reap() {  # waits for any one job to end
  local pid st
  wait -n -p pid; st=$?
  report "$pid" "$st"
  unset "start[$pid]"
}
while [ $# -ge 2 ]; do
  while [ "${#start[@]}" -ge "$jobs" ]; do reap; done
  bash -c "$2" >"$logdir/$1.log" 2>&1 </dev/null &
  start[$!]=$(date +%s)
  name_of[$!]=$1
  echo "imm: started $1 (log: $logdir/$1.log)"
  shift 2
done
while [ "${#start[@]}" -gt 0 ]; do reap; done
for n in "${failed[@]}"; do
  echo "==================== $n ($logdir/$n.log) ===================="
  cat "$logdir/$n.log"
done
[ "${#failed[@]}" -eq 0 ]
