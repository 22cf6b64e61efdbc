#!/usr/bin/env bash
# Runs one job of a plan: scripts/plan-line.sh PLAN_FILE INDEX runs line INDEX+1 (INDEX counts from 0, as
# Slurm's SLURM_ARRAY_TASK_ID and Kubernetes' JOB_COMPLETION_INDEX do) and exits with its status.
#
# A plan has one job per line, in either form:
#   - a complete shell command (run by bash in the current directory), or
#   - a JSON object as `edgeq compare --plan` prints it: {"command":[argv...],"cwd":DIR,...}; the argv is run
#     as it is (no shell) from cwd.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 PLAN_FILE INDEX" >&2; exit 2; }
plan=$1 index=$2
[ -r "$plan" ] || { echo "plan-line: cannot read the plan $plan" >&2; exit 2; }
[[ $index =~ ^[0-9]+$ ]] || { echo "plan-line: INDEX must be a number from 0, not '$index'" >&2; exit 2; }
n=$(grep -c '' "$plan" || true)
[ "$index" -lt "$n" ] || { echo "plan-line: $plan has $n lines, no line $((index + 1))" >&2; exit 2; }
line=$(sed -n "$((index + 1))p" "$plan")
[ -n "${line//[[:space:]]/}" ] || { echo "plan-line: line $((index + 1)) of $plan is empty" >&2; exit 2; }

echo "plan-line: $plan line $((index + 1)) on $(hostname): $line" >&2
if [[ $line == '{"'* ]]; then
  command -v jq >/dev/null || { echo "plan-line: a JSON plan line needs jq" >&2; exit 2; }
  cwd=$(jq -er '.cwd // "."' <<<"$line")
  argv=$(jq -er 'if (.command | type) == "array" and (.command | length) > 0 and all(.command[]; type == "string")
                 then .command | @sh else error("no command") end' <<<"$line") ||
    { echo "plan-line: line $((index + 1)) has no \"command\" array of strings" >&2; exit 2; }
  eval "set -- $argv"  # @sh quoted every argument
  cd "$cwd"
  exec "$@"
fi
exec bash -c "$line"
